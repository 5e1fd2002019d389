// Stochastically driven damped harmonic oscillator (tinygp's SHO kernel) + mean + noise:
// drift [[0, 1], [-omega^2, -omega/quality]], diffusion diag(0, 2 omega^3 / quality),
// observation [sigma, 0]; its stationary covariance is diag(1, omega^2) in closed form.
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
  matrix[T, 2] F = rep_matrix(0, T, 2);
}
parameters {
  real<lower=0> omega;
  real<lower=0> quality;
  real<lower=0> sigma;
  real mu;
  real<lower=0> noise;
}
model {
  matrix[2, 2] A;
  matrix[2, 2] Pinf = rep_matrix(0, 2, 2);
  matrix[1, 2] H;
  A[1, 1] = 0;
  A[1, 2] = 1;
  A[2, 1] = -square(omega);
  A[2, 2] = -omega / quality;
  Pinf[1, 1] = 1;
  Pinf[2, 2] = square(omega);
  H[1, 1] = sigma;
  H[1, 2] = 0;
  omega ~ lognormal(0, 1);
  quality ~ lognormal(0, 1);
  sigma ~ normal(0, 2);
  mu ~ normal(0, 5);
  noise ~ normal(0, 1);
  target += ct_kalman_ll(A, Pinf, rep_vector(0, 2), F, H, rep_vector(mu, 1),
                         rep_matrix(square(noise), 1, 1), t, Y);
}
