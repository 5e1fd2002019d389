"""Parallel-in-time Kalman filter (Särkkä & García-Fernández 2021), associative scan.

Each step k becomes an element ``(A, b, C, η, J)`` of an associative operator: the
conditional ``p(x_k | x_{k-1}, y_k) = N(A x_{k-1} + b, C)`` together with the
likelihood of y_k as an (information-form) function of x_{k-1},
``p(y_k | x_{k-1}) ∝ N_I(x_{k-1}; η, J)``. With the prior mean ``b'_k`` and covariance
``Q'_k`` of x_k given x_{k-1}, ``F'_k = A_k`` (for k = 0 the prior is folded in:
``F'_0 = 0``, ``b'_0 = A_0 m_0 + b_0``, ``Q'_0 = A_0 P_0 A_0ᵀ + Q_0``) and one Cholesky
factorisation ``S = H Q' Hᵀ + R = L Lᵀ``::

    W = L⁻¹ H Q',  U = L⁻¹ H F',  z = L⁻¹ (y − H b' − d)
    A = F' − Wᵀ U,  b = b' + Wᵀ z,  C = Q' − Wᵀ W,  η = Uᵀ z,  J = Uᵀ U

Combining an earlier element i with a later j (``M = (I + C_i J_j)⁻¹``)::

    A_ij = A_j M A_i                      b_ij = A_j M (b_i + C_i η_j) + b_j
    C_ij = A_j M C_i A_jᵀ + C_j
    η_ij = A_iᵀ Mᵀ (η_j − J_j b_i) + η_i  J_ij = A_iᵀ Mᵀ J_j A_i + J_i

The prefix "sums" are the filtered moments ``(b, C) = (m_{k|k}, P_{k|k})``. The
predictive moments follow in one vectorised step, ``m_{k|k-1} = A_k m_{k-1|k-1} + b_k``,
``P_{k|k-1} = A_k P_{k-1|k-1} A_kᵀ + Q_k``, and give the pointwise log-likelihood —
no sequential dependency anywhere: O(log T) depth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from kalmanad.filter._common import (
    finish,
    flag,
    safe_cholesky,
    setup,
    solve,
    step_loglik,
    tri_solve,
)
from kalmanad.filter._types import FilterResult
from kalmanad.linalg._util import mT, symmetrize
from kalmanad.ssm import DiscreteSSM


def _elements(F, b, Q, H, d, R, y0):
    """Filtering elements for all steps at once (vectorised over the leading axis)."""
    n = F.shape[-1]
    L, ok = safe_cholesky(symmetrize(H @ Q @ mT(H)) + R)
    v = y0 - (H @ b[..., None])[..., 0] - d
    HQ = H @ Q
    X = tri_solve(L, jnp.concatenate([HQ, H @ F, v[..., None]], axis=-1))
    W, U, z = X[..., :n], X[..., n : 2 * n], X[..., 2 * n]
    Wt = mT(W)
    A = F - Wt @ U
    bb = b + (Wt @ z[..., None])[..., 0]
    C = Q - Wt @ W
    eta = (mT(U) @ z[..., None])[..., 0]
    J = mT(U) @ U
    return (A, bb, C, eta, J), ok


def _combine(ei, ej):
    """Associative operator; ``ei`` is the earlier element (batched over axis 0)."""
    A1, b1, C1, eta1, J1 = ei
    A2, b2, C2, eta2, J2 = ej
    eye = jnp.eye(A1.shape[-1], dtype=A1.dtype)
    M = solve(eye + C1 @ J2, eye)  # (I + C_i J_j)⁻¹; Mᵀ = (I + J_j C_i)⁻¹
    A2M = A2 @ M
    A = A2M @ A1
    b = (A2M @ (b1 + (C1 @ eta2[..., None])[..., 0])[..., None])[..., 0] + b2
    C = symmetrize(A2M @ C1 @ mT(A2)) + C2
    MA1t = mT(M @ A1)  # A_iᵀ Mᵀ
    eta = (MA1t @ (eta2 - (J2 @ b1[..., None])[..., 0])[..., None])[..., 0] + eta1
    J = symmetrize(MA1t @ J2 @ A1) + J1
    return A, b, C, eta, J


@jax.jit
def filter_parallel(ssm: DiscreteSSM, y) -> FilterResult:
    """Parallel-in-time filter on an unbatched, promoted SSM (internal)."""
    ssm, y0, n_obs, ok_in = setup(ssm, y)
    F, b, Q = ssm.transition, ssm.offset, ssm.transition_cov
    H, d, R = ssm.observation, ssm.observation_offset, ssm.observation_cov
    m0, P0 = ssm.initial_mean, ssm.initial_cov

    # Fold the prior into step 0 (its element then has A = 0, η = 0, J = 0).
    b_first = F[0] @ m0 + b[0]
    Q_first = symmetrize(F[0] @ P0 @ F[0].T) + Q[0]
    Fp = F.at[0].set(jnp.zeros_like(F[0]))
    bp = b.at[0].set(b_first)
    Qp = Q.at[0].set(Q_first)

    elems, ok_e = _elements(Fp, bp, Qp, H, d, R, y0)
    # Guard invalid elements (double where): placeholders keep the scan finite.
    ok_e = ok_e & jax.vmap(lambda *e: jnp.isfinite(sum(jnp.sum(x) for x in e)))(*elems)
    n = F.shape[-1]
    eye = jnp.eye(n, dtype=F.dtype)
    safe = (jnp.zeros_like(F[0]), jnp.zeros_like(b[0]), eye, jnp.zeros_like(b[0]), 0.0 * eye)
    elems = tuple(
        jnp.where(ok_e.reshape((-1,) + (1,) * (x.ndim - 1)), x, s)
        for x, s in zip(elems, safe, strict=True)
    )
    _, m_f, P_f, _, _ = lax.associative_scan(_combine, elems)

    fin_f = jnp.isfinite(jnp.sum(m_f, -1) + jnp.sum(P_f, (-2, -1)))
    m_f = jnp.where(fin_f[:, None], m_f, 0.0)
    P_f = jnp.where(fin_f[:, None, None], P_f, eye)

    # Predictive moments and the pointwise log-likelihood, vectorised.
    m_prev = jnp.concatenate([m0[None], m_f[:-1]], axis=0)
    P_prev = jnp.concatenate([P0[None], P_f[:-1]], axis=0)
    m_p = (F @ m_prev[..., None])[..., 0] + b
    P_p = symmetrize(F @ P_prev @ mT(F)) + Q
    # An overflowing prediction (e.g. a huge transition) is invalid: replace it before
    # it meets H, so that no inf·0 reaches the gradients of the observation model.
    fin_p = jnp.isfinite(jnp.sum(m_p, -1) + jnp.sum(P_p, (-2, -1)))
    m_p = jnp.where(fin_p[:, None], m_p, 0.0)
    P_p = jnp.where(fin_p[:, None, None], P_p, eye)
    L, ok_s = safe_cholesky(symmetrize(H @ P_p @ mT(H)) + R)
    v = y0 - (H @ m_p[..., None])[..., 0] - d
    z = tri_solve(L, v[..., None])[..., 0]
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    ll = step_loglik(n_obs, jnp.sum(z * z, axis=-1), half_logdet)
    total, pointwise = finish(flag(ll, ok_e & ok_s & fin_f & fin_p), ok_in)
    return FilterResult(total, pointwise, m_p, P_p, m_f, P_f)
