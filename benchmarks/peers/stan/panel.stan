// Hierarchical CT-VAR panel: S subjects x T irregular observations, 2 latents observed
// directly with noise, subject random continuous intercepts (non-centred), stationary
// start per subject:
//   dx = (A x + c_s) dt + diag(sigma) dW,   c_s = cint + cint_sd .* re_z[s],
//   y = x + e,  x(t_1) ~ N(-A^{-1} c_s, P_inf).
functions {
#include ctkf_functions.stan
}
data {
  int<lower=1> S;
  int<lower=1> T;
  matrix[S, T] t;
  matrix[S * T, 2] Y;  // subject s in rows (s - 1) T + 1 .. s T
}
transformed data {
  matrix[2, 2] H = diag_matrix(rep_vector(1, 2));
  vector[2] d = rep_vector(0, 2);
}
parameters {
  real<lower=0> auto1;
  real<lower=0> auto2;
  real cross12;
  real cross21;
  real<lower=0> sigma1;
  real<lower=0> sigma2;
  real cint1;
  real cint2;
  real<lower=0> noise1;
  real<lower=0> noise2;
  real<lower=0> cint1_sd;
  real<lower=0> cint2_sd;
  matrix[S, 2] re_z;
}
model {
  matrix[2, 2] A;
  matrix[2, 2] Q = rep_matrix(0, 2, 2);
  matrix[2, 2] R = rep_matrix(0, 2, 2);
  matrix[2, 2] Pinf;
  A[1, 1] = -auto1;
  A[1, 2] = cross12;
  A[2, 1] = cross21;
  A[2, 2] = -auto2;
  Q[1, 1] = square(sigma1);
  Q[2, 2] = square(sigma2);
  R[1, 1] = square(noise1);
  R[2, 2] = square(noise2);
  Pinf = stationary_cov(A, Q);
  auto1 ~ lognormal(-0.5, 0.75);
  auto2 ~ lognormal(-0.5, 0.75);
  cross12 ~ normal(0, 0.5);
  cross21 ~ normal(0, 0.5);
  sigma1 ~ normal(0, 1);
  sigma2 ~ normal(0, 1);
  cint1 ~ normal(0, 1);
  cint2 ~ normal(0, 1);
  noise1 ~ normal(0, 0.5);
  noise2 ~ normal(0, 0.5);
  cint1_sd ~ normal(0, 1);
  cint2_sd ~ normal(0, 1);
  to_vector(re_z) ~ normal(0, 1);
  for (s in 1:S) {
    vector[2] c;
    c[1] = cint1 + cint1_sd * re_z[s, 1];
    c[2] = cint2 + cint2_sd * re_z[s, 2];
    target += ct_kalman_ll(A, Pinf, -mdivide_left(A, c), rep_matrix(c', T), H, d, R,
                           t[s]', block(Y, (s - 1) * T + 1, 1, T, 2));
  }
}
