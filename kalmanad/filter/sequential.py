"""Sequential (``lax.scan``) Kalman filter in covariance form, with its derived tangent rule.

One step k (predict through the transition, then update with y_k)::

    m⁻ = A_k m + b_k                       P⁻ = sym(A_k P A_kᵀ) + Q_k
    S  = H_k P⁻ H_kᵀ + R_k = L Lᵀ          (one Cholesky factorisation)
    W  = L⁻¹ H_k P⁻,  z = L⁻¹ v,  v = y_k − H_k m⁻ − d_k
    log p(y_k | y_<k) = −½ (n_obs log 2π + zᵀz) − Σ log Lᵢᵢ
    m  = m⁻ + Wᵀ z                         P = P⁻ − Wᵀ W

``Wᵀ z = K v`` and ``Wᵀ W = K S Kᵀ`` with the gain ``K = P⁻ Hᵀ S⁻¹``: the single
factorisation serves the gain, the log-determinant and the quadratic form, and
``Wᵀ W`` is exactly symmetric, so ``P`` stays symmetric to rounding.

One core, :func:`kalman_scan`, serves one subject and a panel alike: it runs in the
matrix-first layout of :mod:`kalmanad.filter._kernels` (a panel's subjects trail every
array), and its derivative is the derived tangent recursion of
:func:`kalman_scan_tangent` (a ``jax.custom_jvp``), which reverse mode transposes into
the adjoint filter. ``checkpoint`` rematerialises that recursion in segments.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from kalmanad._scan import inline_scan
from kalmanad._tuning import SMALL_MM
from kalmanad.filter._common import finish, first_bad_mask, flag, setup, step_loglik
from kalmanad.filter._kernels import cholesky, diag, eye, guard, mm, mv, sym, tr, tri_solve
from kalmanad.filter._types import FilterResult
from kalmanad.ssm import DiscreteSSM

__all__ = ["filter_sequential", "finish", "kalman_scan", "kalman_scan_tangent", "setup"]

# DiscreteSSM fields in the order of the scan's per-step inputs (the initial state apart).
_STEP_FIELDS = 6


def _update(m_p, P_p, H, d, R, y0, n_obs):
    """Kalman update in the fused Cholesky form (matrix-first layout).

    Returns ``(m, P, ll, ok, probe)``: ``ok`` is False where ``S`` is not
    positive-definite; ``probe`` is non-finite where an intermediate overflowed (those
    entries were replaced by 0, see ``guard``), so the result and its derivatives are
    always finite.
    """
    n = m_p.shape[0]
    HP = mm(H, P_p)  # (m, n)
    L, ok = cholesky(mm(HP, tr(H)) + R)
    v = y0 - mv(H, m_p) - d
    X, p1 = guard(tri_solve(L, jnp.concatenate([HP, v[:, None]], axis=1)), 2)  # L⁻¹[HP⁻, v]
    W, z = X[:, :n], X[:, n]
    ll, p2 = guard(step_loglik(n_obs, jnp.sum(z * z, axis=0), jnp.sum(jnp.log(diag(L)), 0)), 0)
    m_f, p3 = guard(m_p + mv(tr(W), z), 1)
    P_f, p4 = guard(P_p - mm(tr(W), W), 2)
    return m_f, P_f, ll, ok, p1 + p2 + p3 + p4


def _step(carry, inp):
    m, P = carry
    A, b, Q, H, d, R, y0, n_obs = inp
    m_p, p1 = guard(mv(A, m) + b, 1)
    # guard first, then symmetrise (this order keeps XLA's fast fused loop on CPU)
    P_p, p2 = guard(mm(mm(A, P), tr(A)) + Q, 2)
    P_p = sym(P_p)
    m_f, P_f, ll, ok, p3 = _update(m_p, P_p, H, d, R, y0, n_obs)
    return (m_f, P_f), (m_p, P_p, m_f, P_f, flag(ll, ok, p1 + p2 + p3))


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def kalman_scan(ssm: DiscreteSSM, y0, n_obs, unroll: int, checkpoint: int | None):
    """The filter recursion: per-step ``(m⁻, P⁻, m, P, flagged log-likelihood)``.

    Matrix-first layout with the step axis first: ``ssm.transition`` (T, n, n, *batch),
    ``y0`` (T, m, *batch), ``n_obs`` (T, *batch), ``ssm.initial_cov`` (n, n, *batch),
    every field carrying the whole batch shape. The flagged log-likelihood is NaN at
    an invalid step (see :func:`kalmanad.filter._common.flag`). Derivatives: the
    derived rule of :func:`kalman_scan_tangent`; ``checkpoint`` (a segment length)
    bounds the memory of its reverse mode.
    """
    xs = (*ssm[:_STEP_FIELDS], y0, n_obs)
    _, out = inline_scan(_step, (ssm.initial_mean, ssm.initial_cov), xs, unroll=unroll)
    return out


@kalman_scan.defjvp
def _kalman_scan_jvp(unroll, checkpoint, primals, tangents):
    ssm, y0, n_obs = primals
    dssm, dy0, _ = tangents
    out = kalman_scan(ssm, y0, n_obs, unroll, checkpoint)
    m_p, P_p, m_f, P_f, ll = out
    # valid: (T, *batch), True before the first invalid step
    valid = ~jnp.moveaxis(first_bad_mask(jnp.moveaxis(jnp.isfinite(ll), 0, -1)), -1, 0)
    m_prev = jnp.concatenate([ssm.initial_mean[None], m_f[:-1]])
    P_prev = jnp.concatenate([ssm.initial_cov[None], P_f[:-1]])
    A, _, _, H, d, R = ssm[:_STEP_FIELDS]
    primal_steps = (A, H, d, R, y0, m_p, P_p, m_prev, P_prev, valid)
    tangent_steps = (*dssm[:_STEP_FIELDS], dy0)
    init = (dssm.initial_mean, dssm.initial_cov)
    dout = kalman_scan_tangent(primal_steps, tangent_steps, init, unroll, checkpoint)
    return out, dout


def _coefficients(A, H, d, R, y0, m_p, P_p, m_prev, P_prev, valid):
    """One step's coefficients of the tangent recursion (see :func:`kalman_scan_tangent`).

    Steps from the first invalid one on get zero coefficients (finite, so no NaN
    reaches a derivative); their log-likelihood is ``-inf`` and masked downstream.
    """
    n, m = A.shape[0], H.shape[0]

    def clean(x):  # zero from the first invalid step on, and where not finite
        return jnp.where(valid & jnp.isfinite(x), x, 0.0)

    U = mm(H, P_p)
    L, _ = cholesky(mm(U, tr(H)) + R)
    v = y0 - mv(H, m_p) - d
    rhs = jnp.concatenate([U, v[:, None], eye(m, L)], axis=1)
    X = tri_solve(L, tri_solve(L, rhs), transpose=True)
    Kt = clean(X[:, :n])  # S⁻¹ U = Kᵀ  (m, n)
    alpha = clean(X[:, n])  # S⁻¹ v      (m,)
    S_inv = clean(X[:, n + 1 :])  # (m, m)
    K = tr(Kt)
    J = eye(n, A) - mm(K, H)
    g = mv(tr(H), alpha)
    return {
        "A": A, "H": H, "U": U, "K": K, "Kt": Kt, "J": J, "alpha": alpha, "S_inv": S_inv,
        "g": g, "m_p": m_p, "P_p": P_p, "m_prev": m_prev, "P_prev": P_prev, "valid": valid,
        "F": clean(mm(J, A)), "c": clean(mv(tr(A), g)),
    }  # fmt: skip


def _forcings(k, dA, db, dQ, dH, dd, dR, dy0):
    """One step's forcings: every term linear in the model's tangents, for all steps
    at once (masked by step only: a ``where`` on their values would not be linear)."""
    A, J, K, Kt, P_p = k["A"], k["J"], k["K"], k["Kt"], k["P_p"]
    a1 = mv(dA, k["m_prev"]) + db
    dA_P_At = mm(mm(dA, k["P_prev"]), tr(A))
    a2 = dA_P_At + tr(dA_P_At) + dQ
    dH_Ut = mm(dH, tr(k["U"]))
    s = dH_Ut + tr(dH_Ut) + dR
    r = dy0 - mv(dH, k["m_p"]) - dd
    P_dHt_Kt = mm(P_p, mm(tr(dH), Kt))
    E = mm(mm(J, a2), tr(J)) - P_dHt_Kt - tr(P_dHt_Kt) + mm(mm(K, s), Kt)
    e = mv(J, a1 + mv(a2, k["g"])) + mv(P_p, mv(tr(dH), k["alpha"])) + mv(K, r - mv(s, k["alpha"]))
    valid = k["valid"]
    return (a1, a2, s, r), (jnp.where(valid, E, 0.0), jnp.where(valid, e, 0.0))


def _outputs(k, a1, a2, s, r, dm_prev, dP_prev):
    """One step's output tangents ``(ṁ⁻, Ṗ⁻, ℓ̇)`` from the carried tangent before it."""
    A, H, alpha = k["A"], k["H"], k["alpha"]
    dm_p = mv(A, dm_prev) + a1
    dP_p = mm(mm(A, dP_prev), tr(A)) + a2
    dS = mm(mm(H, dP_p), tr(H)) + s
    dv = r - mv(H, dm_p)
    quad = alpha[:, None] * alpha[None] - k["S_inv"]
    dll = 0.5 * jnp.sum(quad * dS, axis=(0, 1)) - jnp.sum(alpha * dv, axis=0)
    return dm_p, dP_p, jnp.where(k["valid"], dll, 0.0)


def _carried(F, c, E, e, init, unroll: int):
    """The linear loop ``ṁ ← F (ṁ + Ṗ c) + e``, ``Ṗ ← F Ṗ Fᵀ + E`` over the steps."""
    if F.shape[1] <= SMALL_MM:
        # The products as broadcast-multiply-sums, with the broadcast forms of F, Fᵀ and
        # c made here, outside the loop: the body then holds no operation on F or c
        # alone, which JAX's linearisation of the loop would otherwise run as a
        # separate loop storing their per-step reshapes for the transposed loop.
        def step(carry, inp):
            dm, dP = carry
            F_k, F_col, Ft_row, c_row, E_k, e_k = inp
            u = dm + jnp.sum(dP * c_row, axis=1)  # ṁ + Ṗ c
            dm = jnp.sum(F_k * u[None], axis=1) + e_k
            FdP = jnp.sum(F_col * dP[None], axis=1)
            dP = jnp.sum(FdP[:, :, None] * Ft_row, axis=1) + E_k
            return (dm, dP), (dm, dP)

        Ft = jnp.swapaxes(F, 1, 2)
        xs = (F, F[:, :, :, None], Ft[:, None], c[:, None], E, e)
    else:

        def step(carry, inp):
            dm, dP = carry
            F_k, Ft_k, c_k, E_k, e_k = inp
            dm = mv(F_k, dm + mv(dP, c_k)) + e_k
            dP = mm(mm(F_k, dP), Ft_k) + E_k
            return (dm, dP), (dm, dP)

        xs = (F, jnp.swapaxes(F, 1, 2), c, E, e)
    return inline_scan(step, init, xs, unroll=unroll)


def _segment(carry, steps, unroll: int):
    """The tangent recursion over one run of steps, from the carried tangent ``carry``."""
    prim, tang = steps
    k = jax.vmap(_coefficients)(*prim)
    (a1, a2, s, r), (E, e) = jax.vmap(_forcings)(k, *tang)
    last, (dm_f, dP_f) = _carried(k["F"], k["c"], E, e, carry, unroll)
    dm_prev = jnp.concatenate([carry[0][None], dm_f[:-1]])
    dP_prev = jnp.concatenate([carry[1][None], dP_f[:-1]])
    dm_p, dP_p, dll = jax.vmap(_outputs)(k, a1, a2, s, r, dm_prev, dP_prev)
    return last, (dm_p, dP_p, dm_f, dP_f, dll)


@partial(jax.jit, static_argnums=(3, 4))
def kalman_scan_tangent(primal_steps, tangent_steps, init, unroll: int, checkpoint: int | None):
    r"""Tangent (forward-sensitivity) recursion of :func:`kalman_scan`, derived by hand.

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
    and every coefficient are computed for all steps of a segment at once, outside the
    loop. Reverse mode transposes this linear loop into the adjoint filter (a backward
    loop of the same few products) instead of differentiating every operation of the
    forward step.

    ``primal_steps``: per-step ``(A, H, d, R, y0, m⁻, P⁻, m_prev, P_prev, valid)``;
    ``tangent_steps``: per-step ``(Ȧ, ḃ, Q̇, Ḣ, ḋ, Ṙ, ẏ)``; ``init``: ``(ṁ₀, Ṗ₀)``.
    Returns the tangents ``(ṁ⁻, Ṗ⁻, ṁ, Ṗ, ℓ̇)`` of :func:`kalman_scan`'s outputs. With
    ``checkpoint = k`` the steps run in segments of k, each a ``jax.checkpoint``: reverse
    mode keeps only the carried tangent at each segment start and recomputes a
    segment's coefficients while it is transposed, so the rule's working memory is
    O(T/k + k) steps beyond the filter's own outputs.
    """
    steps = (primal_steps, tangent_steps)
    T = jax.tree.leaves(steps)[0].shape[0]
    if checkpoint is None or checkpoint >= T:
        return _segment(init, steps, unroll)[1]
    n_seg = T // checkpoint
    T0 = n_seg * checkpoint
    segment = jax.checkpoint(partial(_segment, unroll=unroll))
    head = jax.tree.map(lambda x: x[:T0].reshape(n_seg, checkpoint, *x.shape[1:]), steps)
    carry, ys = lax.scan(segment, init, head)
    ys = jax.tree.map(lambda y: y.reshape(T0, *y.shape[2:]), ys)
    if T0 == T:
        return ys
    _, rest = segment(carry, jax.tree.map(lambda x: x[T0:], steps))
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, rest)


def _subjects_last(x, batch: int):
    """(*batch, ...) → (..., *batch): the ``batch`` leading axes moved to the end."""
    return jnp.moveaxis(x, tuple(range(batch)), tuple(range(x.ndim - batch, x.ndim)))


def _subjects_first(x, batch: int):
    """The inverse of :func:`_subjects_last`."""
    return jnp.moveaxis(x, tuple(range(x.ndim - batch, x.ndim)), tuple(range(batch)))


@partial(jax.jit, static_argnames=("unroll", "checkpoint"))
def filter_sequential(
    ssm: DiscreteSSM, y, *, unroll: int | None = None, checkpoint: int | None = None
) -> FilterResult:
    """Sequential covariance-form filter on a promoted SSM (internal).

    ``y`` (*batch, T, m); every ``ssm`` field carries the same leading batch shape
    (broadcast by the caller; none for one subject). The per-subject set-up runs under
    ``vmap``; the recursion, :func:`kalman_scan`, once for the whole batch, with the
    subjects as trailing axes.

    Loops: XLA's CPU runtime runs a loop body inline when it has at most 8 kernels or
    when every buffer it touches holds at most ``kalmanad._tuning.INLINE_BUFFER_BYTES``,
    and otherwise through its concurrent executor, which costs time on every step. The
    scans therefore run in chunks of steps small enough for the second rule
    (``kalmanad._scan.inline_scan``). ``unroll`` (steps per loop iteration) applies only
    where no chunks fit; default 4 for one subject with several states, where it
    amortises the loop's own overhead, else 1 (a panel's step is long already, and
    unrolling it only lengthens compilation).
    ``checkpoint``: segment length of the rematerialised tangent recursion (see
    :func:`kalman_scan_tangent`); values and derivatives are unchanged.
    """
    nb = y.ndim - 2
    run_setup = setup
    for _ in range(nb):
        run_setup = jax.vmap(run_setup)
    ssm, y0, n_obs, ok_in = run_setup(ssm, y)
    if unroll is None:
        unroll = 1 if nb or ssm.transition.shape[-1] == 1 else 4
    ssm, y0, n_obs = jax.tree.map(lambda x: _subjects_last(x, nb), (ssm, y0, n_obs))
    m_p, P_p, m_f, P_f, ll = kalman_scan(ssm, y0, n_obs, unroll, checkpoint)
    total, pointwise = finish(ll, ok_in)
    m_p, P_p, m_f, P_f, pointwise = (
        _subjects_first(x, nb) for x in (m_p, P_p, m_f, P_f, pointwise)
    )
    return FilterResult(total, pointwise, m_p, P_p, m_f, P_f)
