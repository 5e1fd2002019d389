// OU process, dx = theta (mu - x) dt + sqrt(2 theta) sigma dW, y = x + e, e ~ N(0, noise^2):
// the scalar Kalman filter in closed form (a = exp(-theta dt), stationary start).
data {
  int<lower=1> T;
  vector[T] t;
  vector[T] y;
}
parameters {
  real<lower=0> theta;
  real mu;
  real<lower=0> sigma;
  real<lower=0> noise;
}
model {
  real s2 = square(sigma);
  real r = square(noise);
  real m = mu;
  real P = s2;
  real ll = 0;
  theta ~ lognormal(0, 1);
  mu ~ normal(0, 5);
  sigma ~ normal(0, 2);
  noise ~ normal(0, 1);
  for (k in 1:T) {
    if (k > 1) {
      real a = exp(-theta * (t[k] - t[k - 1]));
      m = mu + a * (m - mu);
      P = s2 + square(a) * (P - s2);
    }
    {
      real S = P + r;
      real v = y[k] - m;
      real K = P / S;
      ll += -0.5 * (log(2 * pi() * S) + square(v) / S);
      m += K * v;
      P -= K * P;
    }
  }
  target += ll;
}
