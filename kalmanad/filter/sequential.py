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

from kalmanad._scan import inline_scan
from kalmanad._tuning import BATCH_LAST_MIN, SMALL_MM
from kalmanad.filter._common import (
    LOG_2PI,
    columns,
    diagonal,
    eye_like,
    first_bad_mask,
    guard,
    mask_missing,
    mm,
    mm_steps,
    mv,
    mv_steps,
    safe_cholesky,
    sanitize_inputs,
    scan_segments,
    tri_solve,
)
from kalmanad.filter._types import FilterResult
from kalmanad.linalg._util import mT, symmetrize
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


def update(m_p, P_p, H, d, R, y0, n_obs, tail: int = 0):
    """Kalman update in the fused Cholesky form.

    Returns ``(m, P, ll, ok, probe)``: ``ok`` is False where ``S`` is not
    positive-definite; ``probe`` is non-finite where an intermediate overflowed (those
    entries were replaced by 0, see ``guard``), so the result and its derivatives are
    always finite. With ``tail = 1`` every operand is batch-last (see ``_common``).
    """
    n = m_p.shape[-1 - tail]
    HP = mm(H, P_p, tail)  # (m, n)
    S = mm(HP, mT(H, tail), tail) + R
    L, ok = safe_cholesky(S, tail)
    v = y0 - mv(H, m_p, tail) - d
    rhs = jnp.concatenate([HP, jnp.expand_dims(v, -1 - tail)], axis=-1 - tail)
    X, p1 = guard(tri_solve(L, rhs, tail=tail), tail)  # L⁻¹[HP⁻, v]
    W, z = columns(X, slice(0, n), tail), columns(X, n, tail)
    quad = jnp.sum(z * z, axis=-1 - tail)
    logdet = jnp.sum(jnp.log(diagonal(L, tail)), axis=-1)
    ll, p2 = guard(-0.5 * (n_obs * LOG_2PI + quad) - logdet, tail)
    m_f, p3 = guard(m_p + mv(mT(W, tail), z, tail), tail)
    P_f, p4 = guard(P_p - mm(mT(W, tail), W, tail), tail)
    return m_f, P_f, ll, ok, p1 + p2 + p3 + p4


def _step(carry, inp, tail: int = 0):
    m, P = carry
    A, b, Q, H, d, R, y0, n_obs = inp
    m_p, p1 = guard(mv(A, m, tail) + b, tail)
    # guard first, then symmetrise (this order keeps XLA's fast fused loop on CPU)
    P_p, p2 = guard(mm(mm(A, P, tail), mT(A, tail), tail) + Q, tail)
    P_p = symmetrize(P_p, tail)
    m_f, P_f, ll, ok, p3 = update(m_p, P_p, H, d, R, y0, n_obs, tail)
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


def _scan(ssm: DiscreteSSM, y0, n_obs, unroll: int, checkpoint: int | None, tail: int = 0):
    """The filter recursion: per-step ``(m⁻, P⁻, m, P, flagged log-likelihood)``.

    Every array has the step axis first (and, with ``tail = 1``, the batch axis last).
    """
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
    step = partial(_step, tail=tail)
    _, out = scan_segments(step, init, xs, checkpoint=checkpoint, unroll=unroll)
    return out


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _scan_tangent_rule(ssm: DiscreteSSM, y0, n_obs, unroll: int, tail: int):
    """:func:`_scan` with the derived tangent rule below (reverse mode transposes it)."""
    return _scan(ssm, y0, n_obs, unroll, None, tail)


@_scan_tangent_rule.defjvp
def _scan_tangent_rule_jvp(unroll, tail, primals, tangents):
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
    out = _scan_tangent_rule(ssm, y0, n_obs, unroll, tail)
    m_p, P_p, m_f, P_f, ll = out
    A, H, d, R = ssm.transition, ssm.observation, ssm.observation_offset, ssm.observation_cov
    dA, db, dQ, dH, dd, dR = dssm[:6]
    n, m = A.shape[-1 - tail], H.shape[-2 - tail]
    dtype = A.dtype
    # valid: (T, *batch), True before the first invalid step (ll is (T, *batch))
    valid = jnp.moveaxis(~first_bad_mask(jnp.moveaxis(jnp.isfinite(ll), 0, -1)), -1, 0)

    def clean(x, finite=True):  # zero from the first invalid step on (and non-finite)
        core = x.ndim - valid.ndim  # the matrix/vector axes between T and the batch
        keep = valid.reshape(valid.shape[:1] + (1,) * core + valid.shape[1:])
        return jnp.where(keep & jnp.isfinite(x) if finite else keep, x, 0.0)

    def mm_(a, b):
        return mm_steps(a, b, tail)

    def mv_(a, x):
        return mv_steps(a, x, tail)

    def t_(x):
        return mT(x, tail)

    m_prev = jnp.concatenate([ssm.initial_mean[None], m_f[:-1]])
    P_prev = jnp.concatenate([ssm.initial_cov[None], P_f[:-1]])
    # The update's coefficients, recomputed for all steps at once.
    U = mm_(H, P_p)
    L, _ = safe_cholesky(mm_(U, t_(H)) + R, tail)
    v = y0 - mv_(H, m_p) - d
    eye_m = jnp.broadcast_to(eye_like(m, dtype, tail), L.shape)
    rhs = jnp.concatenate([U, jnp.expand_dims(v, -1 - tail), eye_m], -1 - tail)
    X = tri_solve(L, tri_solve(L, rhs, tail=tail), transpose=True, tail=tail)
    Kt = clean(columns(X, slice(0, n), tail))  # S⁻¹ U = Kᵀ  (T, m, n)
    alpha = clean(columns(X, n, tail))  # S⁻¹ v      (T, m)
    S_inv = clean(columns(X, slice(n + 1, None), tail))  # (T, m, m)
    K = t_(Kt)
    J = eye_like(n, dtype, tail) - mm_(K, H)
    F = clean(mm_(J, A))
    g = mv_(t_(H), alpha)
    c = clean(mv_(t_(A), g))
    # Forcings: everything linear in the model's tangents, for all steps at once.
    a1 = mv_(dA, m_prev) + db
    dA_P_At = mm_(mm_(dA, P_prev), t_(A))
    a2 = dA_P_At + t_(dA_P_At) + dQ
    dH_Ut = mm_(dH, t_(U))
    s = dH_Ut + t_(dH_Ut) + dR
    r = dy0 - mv_(dH, m_p) - dd
    P_dHt_Kt = mm_(P_p, mm_(t_(dH), Kt))
    E = mm_(mm_(J, a2), t_(J)) - P_dHt_Kt - t_(P_dHt_Kt) + mm_(mm_(K, s), Kt)
    e = mv_(J, a1 + mv_(a2, g)) + mv_(P_p, mv_(t_(dH), alpha)) + mv_(K, r - mv_(s, alpha))
    # (the forcings are linear in the tangents: masked by step only, a where on their
    # values would not be linear)
    E, e = clean(E, finite=False), clean(e, finite=False)

    init = (dssm.initial_mean, dssm.initial_cov)
    if tail or n <= SMALL_MM:
        # The products as broadcast-multiply-sums (see ``mm``), with the broadcast forms
        # of F, Fᵀ and c made here, outside the loop: the body then holds no operation
        # on F or c alone, which JAX's linearisation of the loop would otherwise run as
        # a separate loop storing their per-step reshapes for the transposed loop.
        def step(carry, inp):
            dm, dP = carry
            F_k, F_col, Ft_row, c_row, E_k, e_k = inp
            u = dm + jnp.sum(dP * c_row, axis=-1 - tail)  # ṁ + Ṗ c
            dm = jnp.sum(F_k * jnp.expand_dims(u, -2 - tail), axis=-1 - tail) + e_k
            FdP = jnp.sum(F_col * jnp.expand_dims(dP, -3 - tail), axis=-2 - tail)
            dP = jnp.sum(jnp.expand_dims(FdP, -1 - tail) * Ft_row, axis=-2 - tail) + E_k
            return (dm, dP), (dm, dP)

        xs = (
            F,
            jnp.expand_dims(F, -1 - tail),
            jnp.expand_dims(t_(F), -3 - tail),
            jnp.expand_dims(c, -2 - tail),
            E,
            e,
        )
    else:

        def step(carry, inp):
            dm, dP = carry
            F_k, Ft_k, c_k, E_k, e_k = inp
            dm = mv_(F_k, dm + mv_(dP, c_k)) + e_k
            dP = mm_(mm_(F_k, dP), Ft_k) + E_k
            return (dm, dP), (dm, dP)

        xs = (F, t_(F), c, E, e)
    _, (dm_f, dP_f) = inline_scan(step, init, xs, unroll=unroll)
    dm_prev = jnp.concatenate([init[0][None], dm_f[:-1]])
    dP_prev = jnp.concatenate([init[1][None], dP_f[:-1]])
    dm_p = mv_(A, dm_prev) + a1
    dP_p = mm_(mm_(A, dP_prev), t_(A)) + a2
    dS = mm_(mm_(H, dP_p), t_(H)) + s
    dv = r - mv_(H, dm_p)
    quad = jnp.expand_dims(alpha, -1 - tail) * jnp.expand_dims(alpha, -2 - tail) - S_inv
    dll = 0.5 * jnp.sum(quad * dS, axis=(-2 - tail, -1 - tail))
    dll = dll - jnp.sum(alpha * dv, axis=-1 - tail)
    dll = jnp.where(valid, dll, 0.0)
    return out, (dm_p, dP_p, dm_f, dP_f, dll)


def _core(ssm: DiscreteSSM, y0, n_obs, unroll: int, checkpoint: int | None, tail: int):
    if checkpoint is None:
        return _scan_tangent_rule(ssm, y0, n_obs, unroll, tail)
    return _scan(ssm, y0, n_obs, unroll, checkpoint, tail)


@partial(jax.jit, static_argnames=("unroll", "checkpoint"))
def filter_sequential(
    ssm: DiscreteSSM, y, *, unroll: int | None = None, checkpoint: int | None = None
) -> FilterResult:
    """Sequential covariance-form filter on an unbatched, promoted SSM (internal).

    Loops: XLA's CPU runtime runs a loop body inline when it has at most 8 kernels or
    when every buffer it touches holds at most ``kalmanad._tuning.INLINE_BUFFER_BYTES``,
    and otherwise through its concurrent executor, which costs time on every step. The
    scans therefore run in chunks of steps small enough for the second rule
    (``kalmanad._scan.inline_scan``: 16 steps for n = 2 in float64). ``unroll`` (steps
    per loop iteration; default 1 for one state, else 4)
    applies only where no chunks fit (large states), where it amortises the loop's
    own overhead.
    ``checkpoint``: segment length of a rematerialised scan (see ``scan_segments``);
    with it, derivatives are JAX's own through the segments (the tangent rule would
    store its coefficients for every step, which checkpointing exists to avoid).
    """
    ssm, y0, n_obs, ok_in = setup(ssm, y)
    if unroll is None:
        unroll = 1 if ssm.transition.shape[-1] == 1 else 4
    m_p, P_p, m_f, P_f, ll = _core(ssm, y0, n_obs, unroll, checkpoint, 0)
    total, pointwise = finish(ll, ok_in)
    return FilterResult(total, pointwise, m_p, P_p, m_f, P_f)


def batch_last_applies(n: int, m: int, batch: int) -> bool:
    """Whether :func:`filter_sequential_panel` handles this panel (small matrices only)."""
    return batch >= BATCH_LAST_MIN and max(n, m) <= SMALL_MM


@partial(jax.jit, static_argnames=("unroll", "checkpoint"))
def filter_sequential_panel(
    ssm: DiscreteSSM, y, *, unroll: int = 1, checkpoint: int | None = None
) -> FilterResult:
    """:func:`filter_sequential` of a panel, in the batch-last layout.

    ``ssm`` fields and ``y`` (B, T, m) carry one leading subject axis (every field
    broadcast to it). The per-subject guards run batch-first (under ``vmap``); the
    recursion and its tangent rule run on (T, ..., B) arrays, so every element-wise
    product of the small matrices is a contiguous length-B vector operation (see
    ``_common``). Same results as ``vmap(filter_sequential)``, to rounding.
    """
    ssm, y0, n_obs, ok_in = jax.vmap(setup)(ssm, y)

    def last(x):  # (B, T, ...) -> (T, ..., B); (B, ...) -> (..., B)
        return jnp.moveaxis(x, 0, -1)

    def first(x):  # (T, ..., B) -> (B, T, ...)
        return jnp.moveaxis(x, -1, 0)

    out = _core(jax.tree.map(last, ssm), last(y0), last(n_obs), unroll, checkpoint, 1)
    m_p, P_p, m_f, P_f, ll = (first(x) for x in out)
    total, pointwise = jax.vmap(finish)(ll, ok_in)
    return FilterResult(total, pointwise, m_p, P_p, m_f, P_f)
