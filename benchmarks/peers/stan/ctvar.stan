// CT-VAR: 2 latents with cross effects, 3 indicators, one zero-order-hold input.
//   dx = (A x + b u(t)) dt + diag(sigma) dW,   A = [[-auto1, cross12], [cross21, -auto2]]
//   y = H x + d + e,  H = [[1, 0], [0, 1], [lam, 0]],  e ~ N(0, diag(noise^2))
// u is held at u_{k-1} over (t_{k-1}, t_k]; stationary start (mean 0: no input before t_1).
functions {
#include ctkf_functions.stan
}
data {
  int<lower=1> T;
  vector[T] t;
  matrix[T, 3] Y;
  vector[T] u;
}
transformed data {
  vector[T] ulag;
  ulag[1] = 0;
  for (k in 2:T) ulag[k] = u[k - 1];
}
parameters {
  real<lower=0> auto1;
  real<lower=0> auto2;
  real cross12;
  real cross21;
  real<lower=0> sigma1;
  real<lower=0> sigma2;
  real lam;
  vector[3] intercept;
  real<lower=0> noise1;
  real<lower=0> noise2;
  real<lower=0> noise3;
  vector[2] b;
}
model {
  matrix[2, 2] A;
  matrix[2, 2] Q = rep_matrix(0, 2, 2);
  matrix[3, 2] H = rep_matrix(0, 3, 2);
  matrix[3, 3] R = rep_matrix(0, 3, 3);
  A[1, 1] = -auto1;
  A[1, 2] = cross12;
  A[2, 1] = cross21;
  A[2, 2] = -auto2;
  Q[1, 1] = square(sigma1);
  Q[2, 2] = square(sigma2);
  H[1, 1] = 1;
  H[2, 2] = 1;
  H[3, 1] = lam;
  R[1, 1] = square(noise1);
  R[2, 2] = square(noise2);
  R[3, 3] = square(noise3);
  auto1 ~ lognormal(-0.5, 0.75);
  auto2 ~ lognormal(-0.5, 0.75);
  cross12 ~ normal(0, 0.5);
  cross21 ~ normal(0, 0.5);
  sigma1 ~ normal(0, 1);
  sigma2 ~ normal(0, 1);
  lam ~ normal(0, 1);
  intercept ~ normal(0, 3);
  noise1 ~ normal(0, 0.5);
  noise2 ~ normal(0, 0.5);
  noise3 ~ normal(0, 0.5);
  b ~ normal(0, 1);
  target += ct_kalman_ll(A, stationary_cov(A, Q), rep_vector(0, 2), ulag * b', H, intercept,
                         R, t, Y);
}
