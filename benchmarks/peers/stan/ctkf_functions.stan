  // Continuous-discrete Kalman filter for a stable linear SDE, as ctsem's Stan code
  // does it: the drift is discretised with matrix_exp, the process-noise covariance of
  // a step from the stationary covariance (Q_d = P_inf - A_d P_inf A_d'), and the
  // log-likelihood is the Gaussian prediction-error decomposition.
  // Stan 2.21 syntax (Debian's rstan): declarations at the top of each block.

  // P solving A P + P A' + Q = 0, by the Kronecker-sum linear system (n^2 unknowns).
  matrix stationary_cov(matrix A, matrix Q) {
    int n = rows(A);
    matrix[n * n, n * n] K = rep_matrix(0, n * n, n * n);
    vector[n * n] p;
    matrix[n, n] P;
    for (j in 1:n) {
      for (i in 1:n) {
        for (k in 1:n) {
          K[(j - 1) * n + i, (j - 1) * n + k] += A[i, k];  // vec(A P) = (I (x) A) vec(P)
          K[(j - 1) * n + i, (k - 1) * n + i] += A[j, k];  // vec(P A') = (A (x) I) vec(P)
        }
      }
    }
    p = -mdivide_left(K, to_vector(Q));
    P = to_matrix(p, n, n);
    return 0.5 * (P + P');
  }

  // Log-likelihood of the rows of Y (T x m) observed at times t (T), for
  //   dx = (A x + f_k) dt + G dW,  GG' = Q,   y_k = H x(t_k) + d + e_k,  e_k ~ N(0, R),
  // with the forcing f_k (row k of F, T x n) held constant over (t_{k-1}, t_k] (row 1
  // unused) and a stationary start x(t_1) ~ N(m0, P_inf), P_inf = stationary_cov(A, Q).
  real ct_kalman_ll(matrix A, matrix Pinf, vector m0, matrix F, matrix H, vector d,
                    matrix R, vector t, matrix Y) {
    int n = rows(A);
    int m = rows(H);
    int T = rows(Y);
    vector[n] x = m0;
    matrix[n, n] P = Pinf;
    real ll = 0;
    for (k in 1:T) {
      if (k > 1) {
        matrix[n, n] Ad = matrix_exp(A * (t[k] - t[k - 1]));
        vector[n] xs = -mdivide_left(A, F[k]');  // equilibrium under this step's forcing
        x = xs + Ad * (x - xs);
        P = Pinf + quad_form_sym(P - Pinf, Ad');  // Ad P Ad' + (Pinf - Ad Pinf Ad')
      }
      {
        matrix[m, n] HP = H * P;
        matrix[m, m] S = quad_form_sym(P, H') + R;
        matrix[m, m] L = cholesky_decompose(S);
        vector[m] mu = H * x + d;
        matrix[n, m] K = mdivide_right_spd(HP', S);
        ll += multi_normal_cholesky_lpdf(Y[k]' | mu, L);
        x += K * (Y[k]' - mu);
        P -= K * HP;
        P = 0.5 * (P + P');
      }
    }
    return ll;
  }
