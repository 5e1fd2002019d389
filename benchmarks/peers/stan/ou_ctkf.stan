// OU process through the general continuous-discrete Kalman filter (1 latent).
functions {
#include ctkf_functions.stan
}
data {
  int<lower=1> T;
  vector[T] t;
  vector[T] y;
}
transformed data {
  matrix[T, 1] Y = to_matrix(y, T, 1);
  matrix[1, 1] H = rep_matrix(1, 1, 1);
  vector[1] d = rep_vector(0, 1);
}
parameters {
  real<lower=0> theta;
  real mu;
  real<lower=0> sigma;
  real<lower=0> noise;
}
model {
  matrix[1, 1] A = rep_matrix(-theta, 1, 1);
  matrix[1, 1] Q = rep_matrix(2 * theta * square(sigma), 1, 1);
  matrix[1, 1] R = rep_matrix(square(noise), 1, 1);
  matrix[T, 1] F = rep_matrix(theta * mu, T, 1);
  theta ~ lognormal(0, 1);
  mu ~ normal(0, 5);
  sigma ~ normal(0, 2);
  noise ~ normal(0, 1);
  target += ct_kalman_ll(A, stationary_cov(A, Q), rep_vector(mu, 1), F, H, d, R, t, Y);
}
