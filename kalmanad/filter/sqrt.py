"""Square-root Kalman filter: Cholesky factors propagated by QR.

One step k fuses prediction and update in a single QR ("array form"). With ``L`` a
factor of the previous filtered covariance, ``G_Q`` one of ``Q_k`` and ``G_R`` one of
``R_k``, the pre-array ``M`` and its lower-triangular reduction ``M Θ = [post, 0]``
(Θ orthogonal, from the QR decomposition of ``Mᵀ``) are::

        [ G_R   H A L   H G_Q ]            [ S^½   0    ]
    M = [  0     A L     G_Q  ]     post = [ K̄    L_k  ]

so that ``S = H P⁻ Hᵀ + R = S^½ S^½ᵀ``, ``K̄ = P⁻ Hᵀ S^-ᵀ/²`` and the filtered factor
``L_k L_kᵀ = P⁻ − K̄ K̄ᵀ`` are obtained without ever forming a difference of
covariances: the covariances stay positive-definite in float32. Then ::

    z = S^-½ v,   m_k = m⁻ + K̄ z,   log p(y_k | y_<k) = −½ (n_obs log 2π + zᵀz) − Σ log S^½ᵢᵢ

Derivatives. A square root of a singular covariance (``Q_k = 0`` at a zero-length
step, rank-deficient noise) has an infinite derivative, so the factors ``G_Q``,
``G_R`` (symmetric eigen-decompositions, eigenvalues clamped at 0) and the propagated
``L_k`` carry no derivative. Instead the covariance ``P_k = L_k L_kᵀ`` is carried
alongside, and the step is a ``jax.custom_jvp`` whose tangent rule is the
covariance-form one::

    Ṗ⁻ = Ȧ P Aᵀ + A P Ȧᵀ + A Ṗ Aᵀ + Q̇,     C = P⁻ Hᵀ,   Ċ = Ṗ⁻ Hᵀ + P⁻ Ḣᵀ
    Ṡ  = Ḣ C + H Ċ + Ṙ,                    (S^½)˙ = S^½ Φ(S^-½ Ṡ S^-ᵀ/²)
    K̄˙ = (Ċ − K̄ (S^½)˙ᵀ) S^-ᵀ/²,           Ṗ_k = Ṗ⁻ − K̄˙ K̄ᵀ − K̄ K̄˙ᵀ

(Φ: lower triangle, halved diagonal). It is exact whenever ``S`` is positive-definite
— with ``Q = 0``, singular initial covariances or noiseless channels included — and
needs no inverse of a state covariance factor. The Cholesky factors reported in the
result get their own (Cholesky) derivative, which exists where the covariance is
positive-definite.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from kalmanad.filter._common import (
    attach_cholesky,
    chol_tangent,
    finish,
    flag,
    psd_factor,
    scan_segments,
    setup,
    step_loglik,
    tri_solve,
    tria,
)
from kalmanad.filter._types import FilterResult
from kalmanad.linalg._util import mT, symmetrize
from kalmanad.ssm import DiscreteSSM


def _core_forward(A, L, GQ, H, GR):
    m, n = H.shape
    AL = A @ L
    zeros = jnp.zeros((n, m), A.dtype)
    pre = jnp.concatenate(
        [
            jnp.concatenate([GR, H @ AL, H @ GQ], axis=1),
            jnp.concatenate([zeros, AL, GQ], axis=1),
        ],
        axis=0,
    )
    post = tria(pre)
    L_S, Kb, L_f = post[:m, :m], post[m:, :m], post[m:, m:]
    ok = jnp.isfinite(jnp.sum(post)) & jnp.all(jnp.diagonal(L_S) > 0)
    eye_m = jnp.eye(m, dtype=A.dtype)
    eye_n = jnp.eye(n, dtype=A.dtype)
    L_S = jnp.where(ok, L_S, eye_m)
    Kb = jnp.where(ok, Kb, 0.0)
    L_f = jnp.where(ok, L_f, eye_n)
    return L_S, Kb, L_f, ok


@jax.custom_jvp
def _core(A, P, L, Q, GQ, H, R, GR):
    """One fused predict/update in square-root form; see the module docstring.

    Returns ``(S^½, K̄, L_k, P_k, ok)`` with ``ok`` a 0/1 float (S positive-definite
    and everything finite); where not ok, placeholders (identity factors, zero gain).
    ``P``, ``Q``, ``R`` carry the derivatives; ``L``, ``GQ``, ``GR`` are their factors
    (forward values only).
    """
    L_S, Kb, L_f, ok = _core_forward(A, L, GQ, H, GR)
    # The derivatives are carried in covariance form: a step whose predicted covariance
    # overflows there is invalid (as in the sequential filter), even though the factors
    # themselves would not overflow.
    ok = ok & jnp.isfinite(jnp.sum(A @ P @ A.T + Q))
    L_S = jnp.where(ok, L_S, jnp.eye(L_S.shape[0], dtype=L_S.dtype))
    Kb = jnp.where(ok, Kb, 0.0)
    L_f = jnp.where(ok, L_f, jnp.eye(L.shape[0], dtype=L.dtype))
    P_f = jnp.where(ok, L_f @ L_f.T, jnp.eye(L.shape[0], dtype=L.dtype))
    return L_S, Kb, L_f, P_f, ok.astype(A.dtype)


@_core.defjvp
def _core_jvp(primals, tangents):
    A, P, _, Q, _, H, _, _ = primals
    dA, dP, _, dQ, _, dH, dR, _ = tangents
    L_S, Kb, L_f, P_f, okf = _core(*primals)
    ok = okf > 0
    APAt = A @ P @ A.T
    P_p = jnp.where(ok, symmetrize(APAt) + Q, 0.0)  # finite residuals (double where)
    dAPAt = dA @ P @ A.T
    dP_p = dAPAt + dAPAt.T + A @ symmetrize(dP) @ A.T + symmetrize(dQ)
    C = P_p @ H.T
    dC = dP_p @ H.T + P_p @ dH.T
    dHC = dH @ C
    dS = dHC + dHC.T + H @ dP_p @ H.T + symmetrize(dR)
    dL_S = chol_tangent(L_S, dS)
    dKb = mT(tri_solve(L_S, mT(dC - Kb @ dL_S.T)))
    dKbKt = dKb @ Kb.T
    dP_f = dP_p - dKbKt - dKbKt.T
    zero = jnp.zeros((), A.dtype)
    dL_S = jnp.where(ok, dL_S, zero)
    dKb = jnp.where(ok, dKb, zero)
    dP_f = jnp.where(ok, dP_f, zero)
    return (L_S, Kb, L_f, P_f, okf), (dL_S, dKb, jnp.zeros_like(L_f), dP_f, jnp.zeros_like(okf))


def _step(carry, inp):
    m, P, L = carry
    A, b, Q, GQ, H, d, R, GR, y0, n_obs, ok_qr = inp
    m_p = A @ m + b
    ok_p = jnp.isfinite(jnp.sum(m_p))
    m_p = jnp.where(ok_p, m_p, 0.0)
    L_S, Kb, L_f, P_f, okc = _core(A, P, L, Q, GQ, H, R, GR)
    z = tri_solve(L_S, (y0 - H @ m_p - d)[:, None])[:, 0]
    ll = step_loglik(n_obs, jnp.sum(z * z), jnp.sum(jnp.log(jnp.diagonal(L_S))))
    m_f = m_p + Kb @ z
    good = ok_p & ok_qr & (okc > 0) & jnp.isfinite(jnp.sum(m_f) + ll)
    m_f = jnp.where(good, m_f, 0.0)
    ll = jnp.where(good, ll, 0.0)
    return (m_f, P_f, L_f), (m_p, m_f, P_f, L_f, flag(ll, good))


@partial(jax.jit, static_argnames=("unroll", "checkpoint"))
def filter_sqrt(
    ssm: DiscreteSSM, y, *, unroll: int = 1, checkpoint: int | None = None
) -> FilterResult:
    """Square-root filter on an unbatched, promoted SSM (internal).

    ``checkpoint``: segment length of a rematerialised scan (see ``scan_segments``).
    """
    ssm, y0, n_obs, ok_in = setup(ssm, y)
    # Indefinite covariances (beyond rounding) are invalid: the factors would clamp them.
    GQ, ok_q = psd_factor(ssm.transition_cov)
    GR, ok_r = psd_factor(ssm.observation_cov)
    L0, ok_0 = psd_factor(ssm.initial_cov)
    ok_in = ok_in & ok_0
    xs = (
        ssm.transition,
        ssm.offset,
        ssm.transition_cov,
        GQ,
        ssm.observation,
        ssm.observation_offset,
        ssm.observation_cov,
        GR,
        y0,
        n_obs,
        ok_q & ok_r,
    )
    init = (ssm.initial_mean, ssm.initial_cov, L0)
    _, (m_p, m_f, P_f, L_f, ll) = scan_segments(
        _step, init, xs, checkpoint=checkpoint, unroll=unroll
    )
    total, pointwise = finish(ll, ok_in)

    # Predicted moments, vectorised after the scan (dead code when unused under jit).
    A = ssm.transition
    P_prev = jnp.concatenate([ssm.initial_cov[None], P_f[:-1]], axis=0)
    L_prev = jnp.concatenate([L0[None], L_f[:-1]], axis=0)
    P_p = symmetrize(A @ P_prev @ mT(A)) + ssm.transition_cov
    L_p = tria(jnp.concatenate([A @ L_prev, GQ], axis=-1))
    return FilterResult(
        total,
        pointwise,
        m_p,
        P_p,
        m_f,
        P_f,
        predicted_chol=attach_cholesky(P_p, L_p),
        filtered_chol=attach_cholesky(P_f, L_f),
    )
