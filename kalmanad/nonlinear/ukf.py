r"""Continuous-discrete unscented (sigma-point) filter with local-linearisation sub-steps.

Sigma points of N(m, P) (L Lᵀ = P, λ = α²(n + κ) − n)::

    χ₀ = m,   χ_{±i} = m ± √(n + λ) Lᵢ       (i = 1 … n)
    w₀ᵐ = λ/(n + λ),   w₀ᶜ = w₀ᵐ + 1 − α² + β,   w_{±i} = 1/(2(n + λ))

The defaults α = 1, β = 0, κ = 0 give λ = 0: the third-degree spherical-radial
cubature rule (2n points ±√n Lᵢ, equal weights; χ₀ has weight 0), whose weights are
all non-negative, so the predicted covariance stays PSD.

Prediction over one sub-step of length h (the sub-steps as in the EKF, h ≤ ``max_dt``):
each sigma point χ moves by its own local-linearisation step
(:func:`~kalmanad.nonlinear.linearise.ll_transition` at χ: J = ∂f/∂x(χ), Q = G(χ)G(χ)ᵀ),
whose conditional mean ``χ + Fd(χ)`` and covariance ``Qd(χ)`` are combined by the law
of total covariance::

    m ← Σ wᵐ (χ + Fd(χ)),     P ← Σ wᶜ (χ + Fd(χ) − m)(·)ᵀ + Σ wᵐ Qd(χ)

and the sigma points are drawn afresh from (m, P) for the next sub-step. Update: the
sigma points of the predicted moments through h give ŷ, P_yy and the cross-covariance
C (:func:`~kalmanad.nonlinear.linearise.gaussian_update`). For a linear model every
map is affine and the rule is exact, so the log-likelihood is the exact one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from kalmanad.filter._common import safe_cholesky
from kalmanad.filter._types import FilterResult
from kalmanad.linalg._util import symmetrize
from kalmanad.nonlinear.ekf import run_filter
from kalmanad.nonlinear.linearise import gaussian_update, guard, ll_transition, value_and_jacobian
from kalmanad.nonlinear.model import NonlinearSDE

__all__ = ["UNSCENTED_DEFAULTS", "sigma_points", "ukf"]

#: Default unscented parameters (the cubature rule).
UNSCENTED_DEFAULTS = (("alpha", 1.0), ("beta", 0.0), ("kappa", 0.0))


def _weights(n: int, alpha: float, beta: float, kappa: float, dtype):
    lam = alpha**2 * (n + kappa) - n
    c = n + lam
    if not c > 0:
        raise ValueError(
            f"the unscented parameters give n + λ = {c} (n={n}, alpha={alpha}, kappa={kappa}); "
            "it must be positive"
        )
    wm = jnp.full((2 * n + 1,), 0.5 / c, dtype).at[0].set(lam / c)
    wc = wm.at[0].add(1.0 - alpha**2 + beta)
    return wm, wc, c


def sigma_points(m, P, scale):
    """``(χ (2n+1, n), ok)``: m and m ± √scale · (columns of chol(P)).

    P gets a relative jitter of 100·eps·max(diag P) before the factorisation (a singular
    covariance, e.g. after an exact observation, stays factorisable); ``ok`` is False
    where it still is not positive-definite.
    """
    n = m.shape[-1]
    eps = jnp.finfo(P.dtype).eps
    jitter = 100.0 * eps * jnp.max(jnp.abs(jnp.diagonal(P)))
    L, ok = safe_cholesky(symmetrize(P) + jitter * jnp.eye(n, dtype=P.dtype))
    d = jnp.sqrt(scale) * L.T  # rows: the scaled columns of L
    return jnp.concatenate([m[None], m[None] + d, m[None] - d], axis=0), ok


def _moments(points, wm, wc):
    mean = wm @ points
    dev = points - mean
    return mean, (dev * wc[:, None]).T @ dev


def _make(n, options, dtype):
    alpha, beta, kappa = (dict(options)[k] for k in ("alpha", "beta", "kappa"))
    return _weights(n, alpha, beta, kappa, dtype)


def _predict(model: NonlinearSDE, m, P, u, t0, dt, K: int, options):
    wm, wc, c = _make(model.n_states, options, m.dtype)
    h = dt / K

    def point_step(x, t):
        f, J = value_and_jacobian(lambda z: model.drift_at(z, u, t), x)
        _, qd, fd = ll_transition(J, model.rate_at(x, t), f, h)
        return x + fd, qd

    def body(j, carry):
        m, P, ok = carry
        t = t0 + j * h
        chi, ok_j = sigma_points(m, P, c)
        moved, qd = jax.vmap(point_step, in_axes=(0, None))(chi, t)
        m, P = _moments(moved, wm, wc)
        P = symmetrize(P + jnp.einsum("i,ijk->jk", wm, qd))
        return m, P, ok & ok_j

    m, P, ok = lax.fori_loop(0, K, body, (m, P, jnp.asarray(True)))
    m, p1 = guard(m)
    P, p2 = guard(P)
    return m, P, p1 + p2 + jnp.where(ok, 0.0, jnp.nan)


def _update(model: NonlinearSDE, m_p, P_p, u, y, R, options):
    wm, wc, c = _make(model.n_states, options, m_p.dtype)
    chi, ok = sigma_points(m_p, P_p, c)
    ys = jax.vmap(lambda x: model.observe(x, u))(chi)
    y_hat = wm @ ys
    dy = ys - y_hat
    dx = chi - m_p
    cross = (dx * wc[:, None]).T @ dy
    y_cov = (dy * wc[:, None]).T @ dy
    m_f, P_f, ll, ok_u, probe = gaussian_update(m_p, P_p, y_hat, cross, y_cov, R, y)
    return m_f, P_f, ll, ok & ok_u, probe


def ukf(model: NonlinearSDE, steps, y, R, K: int, **options) -> FilterResult:
    """The continuous-discrete sigma-point filter of one subject.

    Arguments as :func:`kalmanad.nonlinear.ekf.run_filter`; ``options``: ``alpha``,
    ``beta``, ``kappa`` (defaults :data:`UNSCENTED_DEFAULTS`).
    """
    opts = dict(UNSCENTED_DEFAULTS)
    opts.update(options)
    opts = tuple(sorted(opts.items()))

    def predict(model, m, P, u, t0, dt, K):
        return _predict(model, m, P, u, t0, dt, K, opts)

    def update(model, m, P, u, y, R):
        return _update(model, m, P, u, y, R, opts)

    return run_filter(model, steps, y, R, K, predict, update)
