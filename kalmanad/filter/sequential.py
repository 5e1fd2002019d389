"""Sequential (``lax.scan``) Kalman filter in covariance form.

One step k (predict through the transition, then update with y_k)::

    m⁻ = A_k m + b_k                       P⁻ = sym(A_k P A_kᵀ) + Q_k
    S  = H_k P⁻ H_kᵀ + R_k = L Lᵀ          (one Cholesky factorisation)
    W  = L⁻¹ H_k P⁻,  z = L⁻¹ v,  v = y_k − H_k m⁻ − d_k
    log p(y_k | y_<k) = −½ (n_obs log 2π + zᵀz) − Σ log Lᵢᵢ
    m  = m⁻ + Wᵀ z                         P = P⁻ − Wᵀ W

``Wᵀ z = K v`` and ``Wᵀ W = K S Kᵀ`` with the gain ``K = P⁻ Hᵀ S⁻¹``: the single
factorisation serves the gain, the log-determinant and the quadratic form, and
``Wᵀ W`` is exactly symmetric, so ``P`` stays symmetric to rounding.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from kalmanad.filter._common import (
    LOG_2PI,
    guard,
    mask_missing,
    mm,
    mv,
    safe_cholesky,
    sanitize_inputs,
    symmetrize,
    tri_solve,
)
from kalmanad.filter._types import FilterResult
from kalmanad.ssm import DiscreteSSM


def setup(ssm: DiscreteSSM, y):
    """Guards and missing-value masking shared by the covariance-form filters.

    Returns ``(ssm, y0, n_obs, ok)``: the sanitised model with the masked observation
    arrays, the zero-filled observations, the count of observed entries per step and
    the all-inputs-finite flag.
    """
    y_fin = jnp.where(jnp.isinf(y), 0.0, y)  # inf is invalid, not missing
    ok_y = ~jnp.isinf(y).any()
    ssm, ok = sanitize_inputs(ssm, jnp.zeros((), y.dtype))
    y0, H, d, R, n_obs = mask_missing(
        y_fin, ssm.observation, ssm.observation_offset, ssm.observation_cov
    )
    ssm = ssm._replace(observation=H, observation_offset=d, observation_cov=R)
    return ssm, y0, n_obs, ok & ok_y


def update(m_p, P_p, H, d, R, y0, n_obs):
    """Kalman update in the fused Cholesky form; returns ``(m, P, ll, ok)``.

    Every intermediate that could overflow is guarded (see ``guard``), so the result
    and its derivatives are finite; ``ok`` says whether the step was valid.
    """
    n = m_p.shape[-1]
    HP = mm(H, P_p)  # (m, n)
    S = mm(HP, H.T) + R
    L, ok = safe_cholesky(S)
    v = y0 - mv(H, m_p) - d
    X, ok_x = guard(tri_solve(L, jnp.concatenate([HP, v[:, None]], axis=1)))  # L⁻¹[HP⁻, v]
    W, z = X[:, :n], X[:, n]
    logdet_half = jnp.log(jnp.diagonal(L))
    ll, ok_l = guard(-0.5 * (n_obs * LOG_2PI + jnp.sum(z * z)) - jnp.sum(logdet_half))
    m_f, ok_m = guard(m_p + mv(W.T, z))
    P_f, ok_p = guard(P_p - mm(W.T, W))
    return m_f, P_f, ll, ok & ok_x & ok_l & ok_m & ok_p


def _step(carry, inp):
    m, P, ok = carry
    A, b, Q, H, d, R, y0, n_obs = inp
    m_p, ok_m = guard(mv(A, m) + b)
    P_p, ok_p = guard(symmetrize(mm(mm(A, P), A.T)) + Q)
    m_f, P_f, ll, ok_u = update(m_p, P_p, H, d, R, y0, n_obs)
    ok = ok & ok_m & ok_p & ok_u
    return (m_f, P_f, ok), (m_p, P_p, m_f, P_f, ll, ok)


@partial(jax.jit, static_argnames=("unroll",))
def filter_sequential(ssm: DiscreteSSM, y, *, unroll: int = 1) -> FilterResult:
    """Sequential covariance-form filter on an unbatched, promoted SSM (internal)."""
    ssm, y0, n_obs, ok_in = setup(ssm, y)
    xs = (
        ssm.transition,
        ssm.offset,
        ssm.transition_cov,
        ssm.observation,
        ssm.observation_offset,
        ssm.observation_cov,
        y0,
        n_obs,
    )
    init = (ssm.initial_mean, ssm.initial_cov, ok_in)
    (_, _, ok), (m_p, P_p, m_f, P_f, ll, ok_t) = lax.scan(_step, init, xs, unroll=unroll)
    total = jnp.where(ok, jnp.sum(ll), -jnp.inf)
    pointwise = jnp.where(ok_t, ll, -jnp.inf)
    return FilterResult(total, pointwise, m_p, P_p, m_f, P_f)
