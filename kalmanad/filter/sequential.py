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
    first_bad_mask,
    guard,
    mask_missing,
    mm,
    mT,
    mv,
    safe_cholesky,
    sanitize_inputs,
    scan_segments,
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
    """Kalman update in the fused Cholesky form.

    Returns ``(m, P, ll, ok, probe)``: ``ok`` is False where ``S`` is not
    positive-definite; ``probe`` is non-finite where an intermediate overflowed (those
    entries were replaced by 0, see ``guard``), so the result and its derivatives are
    always finite.
    """
    n = m_p.shape[-1]
    HP = mm(H, P_p)  # (m, n)
    S = mm(HP, H.T) + R
    L, ok = safe_cholesky(S)
    v = y0 - mv(H, m_p) - d
    X, p1 = guard(tri_solve(L, jnp.concatenate([HP, v[:, None]], axis=1)))  # L⁻¹[HP⁻, v]
    W, z = X[:, :n], X[:, n]
    ll, p2 = guard(-0.5 * (n_obs * LOG_2PI + jnp.sum(z * z)) - jnp.sum(jnp.log(jnp.diagonal(L))))
    m_f, p3 = guard(m_p + mv(W.T, z))
    P_f, p4 = guard(P_p - mm(W.T, W))
    return m_f, P_f, ll, ok, p1 + p2 + p3 + p4


def _step(carry, inp):
    m, P = carry
    A, b, Q, H, d, R, y0, n_obs = inp
    m_p, p1 = guard(mv(A, m) + b)
    # guard first, then symmetrise (this order keeps XLA's fast fused loop on CPU)
    P_p, p2 = guard(mm(mm(A, P), A.T) + Q)
    P_p = symmetrize(P_p)
    m_f, P_f, ll, ok, p3 = update(m_p, P_p, H, d, R, y0, n_obs)
    return (m_f, P_f), (m_p, P_p, m_f, P_f, flag(ll, ok, p1 + p2 + p3))


def flag(ll, ok, probe):
    """Fold the validity of a step into its log-likelihood: NaN where invalid.

    ``0 * probe`` is NaN exactly when the probe is not finite; the NaN only marks the
    step for :func:`finish`, which masks it (its cotangent is zero, and neither the
    addition nor the product by the constant 0 uses the NaN in its derivative). A
    single per-step output keeps XLA's fused loop fast on CPU.
    """
    return ll + jnp.where(ok, 0.0, jnp.nan) + 0.0 * probe


def finish(ll, ok_in):
    """Total and pointwise log-likelihood from the flagged per-step values (T,).

    A step is valid when its innovation covariance is PD and nothing overflowed (its
    flagged value is finite); the pointwise values are ``-inf`` from the first invalid
    step on, the total is ``-inf`` if any step (or the input) is invalid.
    """
    ok_t = jnp.isfinite(ll) & ok_in
    bad = first_bad_mask(ok_t)
    ll = jnp.where(ok_t, ll, 0.0)
    total = jnp.where(bad[-1], -jnp.inf, jnp.sum(ll))
    return total, jnp.where(bad, -jnp.inf, ll)


def _scan(ssm: DiscreteSSM, y0, n_obs, unroll: int, checkpoint: int | None):
    """The filter recursion: per-step ``(m⁻, P⁻, m, P, flagged log-likelihood)``."""
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
    init = (ssm.initial_mean, ssm.initial_cov)
    _, out = scan_segments(_step, init, xs, checkpoint=checkpoint, unroll=unroll)
    return out


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _scan_tangent_rule(ssm: DiscreteSSM, y0, n_obs, unroll: int):
    """:func:`_scan` with the derived tangent rule below (reverse mode transposes it)."""
    return _scan(ssm, y0, n_obs, unroll, None)


@_scan_tangent_rule.defjvp
def _scan_tangent_rule_jvp(unroll, primals, tangents):
    r"""Tangent (forward-sensitivity) recursion of the filter, derived by hand.

    Differentiating one step (``U = H P⁻``, ``S = U Hᵀ + R``, ``α = S⁻¹ v``,
    ``K = Uᵀ S⁻¹``, ``J = I − K H``; dots are tangents)::

        ṁ⁻ = A ṁ + a₁,            a₁ = Ȧ m + ḃ
        Ṗ⁻ = A Ṗ Aᵀ + a₂,         a₂ = Ȧ P Aᵀ + A P Ȧᵀ + Q̇
        Ṡ  = H Ṗ⁻ Hᵀ + s,         s  = Ḣ Uᵀ + U Ḣᵀ + Ṙ
        v̇  = −H ṁ⁻ + r,           r  = ẏ − Ḣ m⁻ − ḋ
        ℓ̇  = ½ tr((α αᵀ − S⁻¹) Ṡ) − αᵀ v̇
        ṁ⁺ = J (ṁ⁻ + Ṗ⁻ Hᵀα) + P⁻ Ḣᵀ α + K (r − s α)
        Ṗ⁺ = J Ṗ⁻ Jᵀ − (P⁻ Ḣᵀ Kᵀ + K Ḣ P⁻) + K s Kᵀ

    Only ``(ṁ, Ṗ)`` is carried from step to step, and linearly: with ``F = J A`` and
    ``c = Aᵀ Hᵀ α`` the loop is ``ṁ ← F (ṁ + Ṗ c) + ẽ``, ``Ṗ ← F Ṗ Fᵀ + Ẽ``, where
    the forcings ``ẽ``, ``Ẽ`` (everything that does not depend on the carried tangent)
    and every coefficient are computed for all T steps at once, outside the loop.
    Reverse mode transposes this linear loop into the adjoint filter (a backward loop of
    the same few products), instead of differentiating every operation of the forward
    step: about half the time of JAX's automatic derivative of the step.

    Steps from the first invalid one on get zero coefficients (finite, so no NaN reaches
    a derivative); their log-likelihood is ``-inf`` and masked downstream.
    """
    ssm, y0, n_obs = primals
    dssm, dy0, _ = tangents
    out = _scan_tangent_rule(ssm, y0, n_obs, unroll)
    m_p, P_p, m_f, P_f, ll = out
    A, H, d, R = ssm.transition, ssm.observation, ssm.observation_offset, ssm.observation_cov
    dA, db, dQ, dH, dd, dR = dssm[:6]
    n, m = A.shape[-1], H.shape[-2]
    dtype = A.dtype
    valid = ~first_bad_mask(jnp.isfinite(ll))[:, None, None]

    def clean(x, finite=True):  # zero from the first invalid step on (and non-finite)
        keep = valid if x.ndim == 3 else valid[:, 0]
        return jnp.where(keep & jnp.isfinite(x) if finite else keep, x, 0.0)

    m_prev = jnp.concatenate([ssm.initial_mean[None], m_f[:-1]])
    P_prev = jnp.concatenate([ssm.initial_cov[None], P_f[:-1]])
    # The update's coefficients, recomputed for all steps at once.
    U = mm(H, P_p)
    L, _ = safe_cholesky(mm(U, mT(H)) + R)
    v = y0 - mv(H, m_p) - d
    eye_m = jnp.broadcast_to(jnp.eye(m, dtype=dtype), (*L.shape[:-2], m, m))
    X = tri_solve(L, tri_solve(L, jnp.concatenate([U, v[..., None], eye_m], -1)), transpose=True)
    Kt = clean(X[..., :n])  # S⁻¹ U = Kᵀ  (T, m, n)
    alpha = clean(X[..., n])  # S⁻¹ v      (T, m)
    S_inv = clean(X[..., n + 1 :])  # (T, m, m)
    K = mT(Kt)
    J = jnp.eye(n, dtype=dtype) - mm(K, H)
    F = clean(mm(J, A))
    g = mv(mT(H), alpha)
    c = clean(mv(mT(A), g))
    # Forcings: everything linear in the model's tangents, for all steps at once.
    a1 = mv(dA, m_prev) + db
    dA_P_At = mm(mm(dA, P_prev), mT(A))
    a2 = dA_P_At + mT(dA_P_At) + dQ
    dH_Ut = mm(dH, mT(U))
    s = dH_Ut + mT(dH_Ut) + dR
    r = dy0 - mv(dH, m_p) - dd
    P_dHt_Kt = mm(P_p, mm(mT(dH), Kt))
    E = mm(mm(J, a2), mT(J)) - P_dHt_Kt - mT(P_dHt_Kt) + mm(mm(K, s), Kt)
    e = mv(J, a1 + mv(a2, g)) + mv(P_p, mv(mT(dH), alpha)) + mv(K, r - mv(s, alpha))
    # (the forcings are linear in the tangents: masked by step only, a where on their
    # values would not be linear)
    E, e = clean(E, finite=False), clean(e, finite=False)

    def step(carry, inp):
        dm, dP = carry
        F_k, c_k, E_k, e_k = inp
        dm = mv(F_k, dm + mv(dP, c_k)) + e_k
        dP = mm(mm(F_k, dP), mT(F_k)) + E_k
        return (dm, dP), (dm, dP)

    init = (dssm.initial_mean, dssm.initial_cov)
    _, (dm_f, dP_f) = lax.scan(step, init, (F, c, E, e), unroll=unroll)
    dm_prev = jnp.concatenate([init[0][None], dm_f[:-1]])
    dP_prev = jnp.concatenate([init[1][None], dP_f[:-1]])
    dm_p = mv(A, dm_prev) + a1
    dP_p = mm(mm(A, dP_prev), mT(A)) + a2
    dS = mm(mm(H, dP_p), mT(H)) + s
    dv = r - mv(H, dm_p)
    quad = alpha[..., :, None] * alpha[..., None, :] - S_inv
    dll = 0.5 * jnp.sum(quad * dS, axis=(-2, -1)) - jnp.sum(alpha * dv, axis=-1)
    dll = jnp.where(valid[:, 0, 0], dll, 0.0)
    return out, (dm_p, dP_p, dm_f, dP_f, dll)


@partial(jax.jit, static_argnames=("unroll", "checkpoint"))
def filter_sequential(
    ssm: DiscreteSSM, y, *, unroll: int | None = None, checkpoint: int | None = None
) -> FilterResult:
    """Sequential covariance-form filter on an unbatched, promoted SSM (internal).

    ``unroll`` steps per loop iteration (default: 1 for one state, else 4). XLA's CPU
    runtime runs a loop body of at most 8 kernels inline and a larger one through its
    concurrent executor, at about a microsecond per step: the one-state step fits (T =
    2000: 0.5 ms primal, 0.8 ms with the gradient), unrolled it does not (2.7 and
    3.2 ms); larger states never fit, and there 4 steps per iteration amortise the
    loop's own overhead.
    ``checkpoint``: segment length of a rematerialised scan (see ``scan_segments``);
    with it, derivatives are JAX's own through the segments (the tangent rule would
    store its coefficients for every step, which checkpointing exists to avoid).
    """
    ssm, y0, n_obs, ok_in = setup(ssm, y)
    if unroll is None:
        unroll = 1 if ssm.transition.shape[-1] == 1 else 4
    if checkpoint is None:
        m_p, P_p, m_f, P_f, ll = _scan_tangent_rule(ssm, y0, n_obs, unroll)
    else:
        m_p, P_p, m_f, P_f, ll = _scan(ssm, y0, n_obs, unroll, checkpoint)
    total, pointwise = finish(ll, ok_in)
    return FilterResult(total, pointwise, m_p, P_p, m_f, P_f)
