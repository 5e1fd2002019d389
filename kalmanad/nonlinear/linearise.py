r"""The local-linearisation step and the pieces shared by the nonlinear filters.

Local linearisation (Ozaki 1992; Jimenez & Biscay 2002). Over a sub-step of length h
from a point x, the drift is replaced by its first-order expansion
``f(z) ≈ f(x) + J (z − x)`` with ``J = ∂f/∂x(x)`` and the diffusion rate by its value
``Q = G(x) G(x)ᵀ``. The linear SDE ``dz = (J (z − x) + f(x)) dt + G dW`` started at x
has, exactly::

    E[z(h)]   = x + ∫₀ʰ e^{Js} ds f(x)          (= x + J⁻¹(e^{Jh} − I) f(x) for invertible J)
    Cov[z(h)] = Qd = ∫₀ʰ e^{Js} Q e^{Jᵀs} ds
    ∂E[z(h)]/∂x (through the linear part) = Ad = e^{Jh}

All three are blocks of one exponential (Van Loan), computed by
:func:`kalmanad.linalg.expm` (with its Fréchet-derivative rule)::

    expm([[J, Q, f], [0, −Jᵀ, 0], [0, 0, 0]] h) = [[Ad, Qd e^{−Jᵀh}, Fd], …],   Fd = ∫₀ʰ e^{Js} ds f

— no J⁻¹ (J may be singular). The block ``e^{−Jᵀh}`` grows like ``e^{‖J‖h}``, so the
exponential is taken at ``h / 2ˢ`` (``‖J‖ h / 2ˢ ≤ 1``) and the triple is then doubled s
times by the exact semigroup rule ``E(2τ) = (Ad², Qd + Ad Qd Adᵀ, Fd + Ad Fd)``: sums of
positive semi-definite terms, no cancellation (at most :data:`MAX_DOUBLINGS` doublings;
beyond ``‖J‖h ≈ 2^MAX_DOUBLINGS`` the remaining scale is left to the exponential itself).

For a linear drift the step is exact (J = A everywhere), so the nonlinear filters
reproduce the exact linear filter for every sub-step length.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad._discretize_routes import balance_scale, norm1
from kalmanad.discretize import check_times
from kalmanad.filter._common import LOG_2PI, first_bad_mask, safe_cholesky, tri_solve
from kalmanad.linalg import expm
from kalmanad.linalg._util import symmetrize

__all__ = [
    "MAX_DOUBLINGS",
    "finish",
    "gaussian_update",
    "guard",
    "ll_transition",
    "n_substeps",
    "value_and_jacobian",
]

#: The most doublings of the local-linearisation step (``‖J‖h`` up to 2^8 is split).
MAX_DOUBLINGS = 8


def value_and_jacobian(fn, x):
    """``(fn(x), ∂fn/∂x (x))`` of a function of one (n,) array, in one forward pass."""
    jac, val = jax.jacfwd(lambda z: (fn(z), fn(z)), has_aux=True)(x)
    return val, jac


def _double(triple):
    ad, qd, fd = triple
    return ad @ ad, symmetrize(qd + ad @ qd @ ad.T), fd + ad @ fd


def ll_transition(jac, rate, f, h):
    """``(Ad, Qd, Fd)`` of the local-linearisation step of length ``h``.

    Args:
        jac: (n, n) Jacobian J of the drift at the start point.
        rate: (n, n) diffusion rate Q = G Gᵀ at the start point.
        f: (n,) drift at the start point.
        h: () step length ≥ 0 (h = 0 gives exactly (I, 0, 0)).

    Returns:
        ``Ad = e^{Jh}`` (n, n), ``Qd = ∫₀ʰ e^{Js} Q e^{Jᵀs} ds`` (n, n) and
        ``Fd = ∫₀ʰ e^{Js} ds f`` (n,); the mean moves from x to ``x + Fd``.
    """
    n = jac.shape[-1]
    dtype = jac.dtype
    nu = lax.stop_gradient(jnp.maximum(norm1(jac), norm1(jac.T)))
    nu = jnp.where(jnp.isfinite(nu), nu, 0.0)
    scaled = lax.stop_gradient(nu * h)
    s = jnp.where(scaled > 1.0, jnp.ceil(jnp.log2(jnp.where(scaled > 1.0, scaled, 1.0))), 0.0)
    s = jnp.clip(s, 0, MAX_DOUBLINGS).astype(jnp.int32)
    hs = h * jnp.exp2(-s.astype(dtype))  # exact: a power of two
    # Off-diagonal blocks scaled by powers of two so that they do not drive expm's degree.
    alpha = balance_scale(norm1(lax.stop_gradient(rate)), nu)
    beta = balance_scale(jnp.sum(jnp.abs(lax.stop_gradient(f))), nu)
    z = jnp.zeros
    block = jnp.concatenate(
        [
            jnp.concatenate([jac, rate / alpha, (f / beta)[:, None]], axis=1),
            jnp.concatenate([z((n, n), dtype), -jac.T, z((n, 1), dtype)], axis=1),
            z((1, 2 * n + 1), dtype),
        ],
        axis=0,
    )
    e = expm(hs * block)
    ad = e[:n, :n]
    qd = symmetrize((e[:n, n : 2 * n] * alpha) @ ad.T)
    fd = e[:n, 2 * n] * beta

    def body(j, triple):
        doubled = _double(triple)
        return tuple(jnp.where(j < s, d, t) for d, t in zip(doubled, triple, strict=True))

    return lax.fori_loop(0, MAX_DOUBLINGS, body, (ad, qd, fd))


def n_substeps(times, max_dt: float, n: int | None = None) -> int:
    """The number K of equal sub-steps per observation interval (static).

    ``K = max_k ceil(Δ_k / max_dt)`` over every interval of concrete ``times`` (..., T)
    (at least 1), so that every sub-step Δ_k / K is at most ``max_dt``. ``n``, when given,
    is used instead (needed when ``times`` are traced).
    """
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_substeps must be a positive integer, got {n!r}")
        return int(n)
    t = check_times(times)
    if t is None:
        raise ValueError(
            "the nonlinear filters need concrete times to choose the number of sub-steps "
            "per interval; pass n_substeps=K when the times are traced"
        )
    if t.shape[-1] < 2:
        return 1
    longest = float(np.max(np.diff(t, axis=-1)))
    # (a relative slack: a step equal to max_dt up to rounding is one sub-step)
    return max(1, math.ceil(longest / max_dt * (1.0 - 1e-12)))


def guard(x):
    """``(x with non-finite entries set to 0, Σ x)``: the sum is a finiteness probe.

    Keeps every value downstream (and so every derivative) finite; the probe marks the
    step invalid (see :func:`finish`).
    """
    return jnp.where(jnp.isfinite(x), x, 0.0), jnp.sum(x)


def gaussian_update(m_p, P_p, y_hat, cross, y_cov, R, y):
    """Kalman update from the predicted moments of the observation (one time step).

    The joint Gaussian approximation ``[x; y] ~ N([m⁻; ŷ], [[P⁻, C], [Cᵀ, S − R]])``
    conditioned on the observed entries of ``y``::

        S = P_yy + R = L Lᵀ,   W = L⁻¹ Cᵀ,   z = L⁻¹ (y − ŷ)
        log p(y | ·) = −½ (n_obs log 2π + zᵀz) − Σ log Lᵢᵢ
        m = m⁻ + Wᵀ z,         P = P⁻ − Wᵀ W

    (EKF: ``C = P⁻Hᵀ``, ``P_yy = H P⁻ Hᵀ``, ``ŷ = h(m⁻)``; sigma-point filters: their
    sample moments.) NaN entries of ``y`` are missing: their rows and columns drop out
    exactly (a unit variance and zero innovation stand in, as in the linear filters).

    Args:
        m_p: (n,), P_p: (n, n) predicted moments; y_hat: (m,); cross: (n, m) C;
        y_cov: (m, m) P_yy; R: (m, m); y: (m,) with NaN for missing.

    Returns:
        ``(m, P, ll, ok, probe)``: ``ok`` is False where S is not positive-definite,
        ``probe`` non-finite where a value overflowed.
    """
    n = m_p.shape[-1]
    obs = ~jnp.isnan(y)
    y0 = jnp.where(obs, y, 0.0)
    both = obs[:, None] & obs[None, :]
    S = jnp.where(both, y_cov + R, 0.0) + jnp.diag(jnp.where(obs, 0.0, 1.0)).astype(R.dtype)
    C = jnp.where(obs[None, :], cross, 0.0)
    v = jnp.where(obs, y0 - y_hat, 0.0)
    L, ok = safe_cholesky(symmetrize(S))
    X, p1 = guard(tri_solve(L, jnp.concatenate([C.T, v[:, None]], axis=1)))
    W, z = X[:, :n], X[:, n]
    n_obs = jnp.sum(obs).astype(m_p.dtype)
    ll = -0.5 * (n_obs * LOG_2PI + z @ z) - jnp.sum(jnp.log(jnp.diagonal(L)))
    ll, p2 = guard(ll)
    m_f, p3 = guard(m_p + W.T @ z)
    P_f, p4 = guard(symmetrize(P_p - W.T @ W))
    return m_f, P_f, ll, ok, p1 + p2 + p3 + p4


def flag(ll, ok, probe):
    """The step's log-likelihood, NaN where it is invalid (masked by :func:`finish`)."""
    return ll + jnp.where(ok, 0.0, jnp.nan) + 0.0 * probe


def finish(ll):
    """Total and pointwise log-likelihood from the flagged per-step values (T,).

    The pointwise values are ``-inf`` from the first invalid step on; the total is
    ``-inf`` if any step is invalid.
    """
    ok_t = jnp.isfinite(ll)
    bad = first_bad_mask(ok_t)
    ll = jnp.where(ok_t, ll, 0.0)
    total = jnp.where(bad[-1], -jnp.inf, jnp.sum(ll))
    return total, jnp.where(bad, -jnp.inf, ll)
