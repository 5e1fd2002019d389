"""Rauch–Tung–Striebel smoother (sequential reverse scan, or parallel-in-time), and
the exact diffuse smoother (:func:`diffuse_smoother_ssm`).

With the filtered moments ``(m_{k|k}, P_{k|k})``, the predicted ones
``(m_{k+1|k}, P_{k+1|k})`` and the transition ``A_{k+1}``::

    G_k     = P_{k|k} A_{k+1}ᵀ P_{k+1|k}⁻¹
    m_{k|T} = m_{k|k} + G_k (m_{k+1|T} − m_{k+1|k})
    P_{k|T} = P_{k|k} + G_k (P_{k+1|T} − P_{k+1|k}) G_kᵀ
    Cov[x_k, x_{k+1} | y] = G_k P_{k+1|T}

The gains do not depend on the smoothed moments, so they are computed for all steps
at once (one batched Cholesky solve); the reverse scan only does the two updates.
The parallel version (Särkkä & García-Fernández 2021) combines the elements
``(E, g, L) = (G_k, m_{k|k} − G_k m_{k+1|k}, P_{k|k} − G_k P_{k+1|k} G_kᵀ)`` with
``(E_i E_j, E_i g_j + g_i, E_i L_j E_iᵀ + L_i)`` in a reverse associative scan.

The predicted covariances must be positive-definite (they are whenever the process
noise or the filtered covariances are).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from kalmanad.filter._common import promote, ssm_dims
from kalmanad.filter._types import FilterResult, SmootherResult
from kalmanad.filter.diffuse import smooth_diffuse
from kalmanad.linalg import cho_solve
from kalmanad.linalg._util import mT, symmetrize
from kalmanad.ssm import DiscreteSSM


def _gains(transition, fr: FilterResult):
    """G_k = P_{k|k} A_{k+1}ᵀ P_{k+1|k}⁻¹ for k = 0..T-2, shape (T-1, n, n)."""
    P_f = fr.filtered_cov[:-1]
    P_p = fr.predicted_cov[1:]
    A = transition[1:]
    l = jnp.linalg.cholesky(symmetrize(P_p))
    # G_kᵀ = P_{k+1|k}⁻¹ A_{k+1} P_{k|k}
    return mT(cho_solve(l, A @ P_f))


def _smooth_sequential(fr: FilterResult, G):
    def step(carry, inp):
        m_next, P_next = carry
        m_f, P_f, m_p, P_p, g = inp
        m_s = m_f + g @ (m_next - m_p)
        P_s = P_f + symmetrize(g @ (P_next - P_p) @ g.T)
        return (m_s, P_s), (m_s, P_s, g @ P_next)

    init = (fr.filtered_mean[-1], fr.filtered_cov[-1])
    xs = (
        fr.filtered_mean[:-1],
        fr.filtered_cov[:-1],
        fr.predicted_mean[1:],
        fr.predicted_cov[1:],
        G,
    )
    _, (m_s, P_s, cross) = lax.scan(step, init, xs, reverse=True)
    return m_s, P_s, cross


def _smooth_parallel(fr: FilterResult, G):
    m_f, P_f = fr.filtered_mean, fr.filtered_cov
    g = m_f[:-1] - (G @ fr.predicted_mean[1:, :, None])[..., 0]
    Lk = P_f[:-1] - symmetrize(G @ fr.predicted_cov[1:] @ mT(G))
    E = jnp.concatenate([G, jnp.zeros_like(G[:1])], axis=0)
    g = jnp.concatenate([g, m_f[-1:]], axis=0)
    Lk = jnp.concatenate([Lk, P_f[-1:]], axis=0)

    def combine(later, earlier):
        # reverse=True: the operator receives (later, earlier) prefixes from the end.
        E2, g2, L2 = later
        E1, g1, L1 = earlier
        return (
            E1 @ E2,
            (E1 @ g2[..., None])[..., 0] + g1,
            symmetrize(E1 @ L2 @ mT(E1)) + L1,
        )

    _, m_s, P_s = lax.associative_scan(combine, (E, g, Lk), reverse=True)
    cross = G @ P_s[1:]
    return m_s[:-1], P_s[:-1], cross


def rts_smoother_ssm(ssm: DiscreteSSM, filter_result: FilterResult, method: str = "sequential"):
    """RTS smoother from a :class:`FilterResult` of the same model.

    Args:
        ssm: the model the filter ran on (only ``transition`` (T, n, n) is read).
        filter_result: output of :func:`filter_ssm` (any method).
        method: ``"sequential"`` (reverse ``lax.scan``) or ``"parallel"`` (reverse
            associative scan, O(log T) depth).

    Returns:
        :class:`SmootherResult` with smoothed means (T, n), covariances (T, n, n), the
        lag-one cross covariances Cov[x_k, x_{k+1} | y] (T-1, n, n) and the gains.
        Use ``jax.vmap`` for several subjects.
    """
    if method not in ("sequential", "parallel"):
        raise ValueError(f"method must be 'sequential' or 'parallel', got {method!r}")
    A = jnp.asarray(ssm.transition)
    m_f = filter_result.filtered_mean
    if A.ndim != 3 or m_f.ndim != 2 or A.shape[0] != m_f.shape[0]:
        raise ValueError(
            "rts_smoother_ssm expects an unbatched model and filter result: transition "
            f"(T, n, n) and filtered_mean (T, n), got {A.shape} and {m_f.shape} (use jax.vmap)"
        )
    dtype = jnp.result_type(A, m_f)
    A = A.astype(dtype)
    T = A.shape[0]
    if T == 1:
        z = jnp.zeros((0, *A.shape[1:]), dtype)
        return SmootherResult(m_f, filter_result.filtered_cov, z, z)
    return _smooth(A, filter_result, method)


@partial(jax.jit, static_argnames=("method",))
def _smooth(A, fr: FilterResult, method: str) -> SmootherResult:
    G = _gains(A, fr)
    smooth = _smooth_sequential if method == "sequential" else _smooth_parallel
    m_s, P_s, cross = smooth(fr, G)
    m_s = jnp.concatenate([m_s, fr.filtered_mean[-1:]], axis=0)
    P_s = jnp.concatenate([P_s, fr.filtered_cov[-1:]], axis=0)
    return SmootherResult(m_s, P_s, cross, G)


def diffuse_smoother_ssm(ssm: DiscreteSSM, y, diffuse_mask) -> SmootherResult:
    """Exact diffuse smoother, consistent with ``filter_ssm(..., diffuse_mask=...)``.

    The state components selected by ``diffuse_mask`` start with an improper
    (infinite-variance) distribution; the smoothed moments are the limits κ → ∞ of
    those with initial covariance ``κ I`` on those components (Durbin & Koopman 2012,
    §5.3, in the univariate form of §6.4; see :mod:`kalmanad.filter.diffuse`). No
    predicted covariance is inverted, so singular process noise is fine.

    Args:
        ssm: unbatched model (use ``jax.vmap`` for several subjects); the rows and
            columns of ``initial_cov`` and the entries of ``initial_mean`` of the
            diffuse components are ignored.
        y: (T, m) observations, NaN = missing.
        diffuse_mask: (n,) boolean, the diffuse components.

    Returns:
        :class:`SmootherResult` with smoothed means (T, n), covariances (T, n, n),
        lag-one cross covariances Cov[x_k, x_{k+1} | y] (T-1, n, n) and ``gain=None``
        (the RTS gains do not exist while a component is still diffuse). All NaN when
        the posterior is improper (the observations never pin every diffuse component
        down) or the model is invalid (the filter's log-likelihood is ``-inf``).
    """
    (ssm, y) = promote(ssm, jnp.asarray(y))
    _, n, _ = ssm_dims(ssm, y.shape)
    mask = jnp.asarray(diffuse_mask)
    if mask.dtype != jnp.bool_ or mask.shape != (n,):
        raise ValueError(
            f"diffuse_mask must be a boolean array of shape (n,) = ({n},), got dtype "
            f"{mask.dtype} and shape {mask.shape}"
        )
    return smooth_diffuse(ssm, y, mask)
