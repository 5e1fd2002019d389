"""Exact diffuse initialisation (Koopman & Durbin 2000, 2003), univariate treatment.

Diffuse state components have initial covariance ``κ P_∞ + P_*`` with ``κ → ∞``. The
filter carries the two parts separately during the first ``d`` steps (a static count,
the diffuse window) and processes the observation entries one at a time (after
decorrelating them with the Cholesky factor of R_k, so that each entry has unit noise
variance; the log-likelihood gets the Jacobian ``−Σ log L_Rᵢᵢ``). For an observed
entry with row ``h``, innovation ``v``, ``F_∞ = h P_∞ hᵀ``, ``F_* = h P_* hᵀ + 1``,
``M_∞ = P_∞ hᵀ``, ``M_* = P_* hᵀ``:

* if ``F_∞ > 0`` (numerically: above ``tol · |h|²``), with ``K₀ = M_∞ / F_∞``::

      a   ← a + K₀ v
      P_* ← P_* − M_* K₀ᵀ − K₀ M_*ᵀ + K₀ K₀ᵀ F_*
      P_∞ ← P_∞ − K₀ K₀ᵀ F_∞
      log-likelihood += −½ log(2π F_∞)

* otherwise the ordinary update, ``K = M_* / F_*``: ``a ← a + K v``,
  ``P_* ← P_* − K M_*ᵀ``, log-likelihood ``+= −½ (log(2π F_*) + v² / F_*)``.

Prediction: ``a ← A a + b``, ``P_* ← A P_* Aᵀ + Q``, ``P_∞ ← A P_∞ Aᵀ``. This is the
diffuse log-likelihood of Koopman & Durbin (the limit of
``log p_κ(y) + ½ q log κ``, q the number of diffuse components), as reported by
statsmodels with ``initialization='diffuse'``. After the window ``P_∞`` must vanish;
the remaining steps run the ordinary filter of the requested method (sequential, sqrt
or parallel) from ``(a, P_*)``.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad.filter._common import finite_scalar, safe_cholesky, tri_solve
from kalmanad.filter._types import FilterResult
from kalmanad.filter.parallel import filter_parallel
from kalmanad.filter.sequential import filter_sequential, finish, setup
from kalmanad.filter.sqrt import filter_sqrt
from kalmanad.linalg._util import symmetrize
from kalmanad.ssm import DiscreteSSM

# The filter that continues from the end of the diffuse window, by ``method``.
_TAIL_FILTERS = {"sequential": filter_sequential, "sqrt": filter_sqrt, "parallel": filter_parallel}


def _univariate_updates(a, Ps, Pinf, Hs, vs, obs, tol):
    """Process the m decorrelated entries of one step (m is static and small)."""
    ll = jnp.zeros((), a.dtype)
    ok = jnp.ones((), bool)
    for i in range(Hs.shape[0]):
        h, v, o = Hs[i], vs[i] - Hs[i] @ a, obs[i]
        Minf = Pinf @ h
        Ms = Ps @ h
        Finf = h @ Minf
        Fs = h @ Ms + 1.0
        diffuse = o & (Finf > tol * (h @ h))
        # Double where: each branch divides only by its own guarded denominator.
        Finf_safe = jnp.where(diffuse, Finf, 1.0)
        Fs_ok = Fs > 0
        Fs_safe = jnp.where(Fs_ok, Fs, 1.0)
        K0 = Minf / Finf_safe
        K = Ms / Fs_safe
        a_d = a + K0 * v
        MK = jnp.outer(Ms, K0)
        Ps_d = Ps - MK - MK.T + jnp.outer(K0, K0) * Fs
        Pinf_d = Pinf - jnp.outer(K0, K0) * Finf
        ll_d = -0.5 * jnp.log(2.0 * math.pi * Finf_safe)
        a_r = a + K * v
        Ps_r = Ps - jnp.outer(K, Ms)
        ll_r = -0.5 * (jnp.log(2.0 * math.pi * Fs_safe) + v * v / Fs_safe)
        regular = o & ~diffuse
        a = jnp.where(diffuse, a_d, jnp.where(regular, a_r, a))
        Ps = symmetrize(jnp.where(diffuse, Ps_d, jnp.where(regular, Ps_r, Ps)))
        Pinf = symmetrize(jnp.where(diffuse, Pinf_d, Pinf))
        ll = ll + jnp.where(diffuse, ll_d, jnp.where(regular, ll_r, 0.0))
        ok = ok & (~regular | Fs_ok)
    return a, Ps, Pinf, ll, ok


@partial(jax.jit, static_argnames=("diffuse_steps", "tail_method", "checkpoint"))
def filter_diffuse(
    ssm: DiscreteSSM,
    y,
    diffuse_mask,
    diffuse_steps: int,
    tail_method: str = "sequential",
    checkpoint: int | None = None,
) -> FilterResult:
    """Filter with exact diffuse initialisation (internal; see module doc).

    ``diffuse_mask`` (n,) selects the diffuse components; their rows and columns of
    ``initial_cov`` and entries of ``initial_mean`` are ignored. In the diffuse window
    the reported predicted/filtered covariances are the finite parts ``P_*``. The
    window is filtered sequentially (it is short: ``diffuse_steps`` steps); the rest
    of the series by ``tail_method`` ("sequential", "sqrt" or "parallel"), started
    from the state ``(a, P_*)`` at the end of the window, so every method gives the
    same exact diffuse log-likelihood. ``checkpoint`` is passed to the tail filter.
    """
    T, n = ssm.offset.shape
    mask = jnp.asarray(diffuse_mask)
    if mask.shape != (n,):
        raise ValueError(f"diffuse_mask must have shape (n,) = ({n},), got {mask.shape}")
    d = max(0, min(int(diffuse_steps), T))
    ssm_s, y0, n_obs, ok_in = setup(ssm, y)
    # Which entries are observed is recovered from y (NaN) in the window.
    obs_all = ~jnp.isnan(y)
    dtype = ssm_s.transition.dtype
    fmask = mask.astype(dtype)
    keep = 1.0 - fmask
    a0 = ssm_s.initial_mean * keep
    Ps0 = ssm_s.initial_cov * keep[:, None] * keep[None, :]
    Pinf0 = jnp.diag(fmask)
    tol = math.sqrt(float(np.finfo(dtype).eps))

    xs = (
        ssm_s.transition,
        ssm_s.offset,
        ssm_s.transition_cov,
        ssm_s.observation,
        ssm_s.observation_offset,
        ssm_s.observation_cov,
        y0,
        n_obs,
    )
    head = tuple(x[:d] for x in xs)

    def dstep(carry, inp):
        obs, inp = inp
        return _diffuse_step(carry, inp, obs, tol)

    (a, Ps, Pinf, _), (m_p1, P_p1, m_f1, P_f1, ll1, ok1) = lax.scan(
        dstep, (a0, Ps0, Pinf0, ok_in), (obs_all[:d], head)
    )
    # The diffuse period must have ended inside the window.
    ended = jnp.max(jnp.abs(Pinf)) <= tol * jnp.maximum(1.0, jnp.max(jnp.abs(Ps)))
    ll1 = jnp.where(ok1, ll1, jnp.nan)  # flagged as in the sequential filter
    total, pointwise = finish(ll1, ok_in)
    m_p, P_p, m_f, P_f = m_p1, P_p1, m_f1, P_f1
    if d < T:
        # Hand the end-of-window state to the requested filter for the remaining steps.
        tail_ssm = DiscreteSSM(
            *(x[d:] for x in ssm[:6]), initial_mean=a, initial_cov=symmetrize(Ps)
        )
        kw = {} if checkpoint is None else {"checkpoint": checkpoint}
        res = _TAIL_FILTERS[tail_method](tail_ssm, y[d:], **kw)
        head_ok = jnp.isfinite(total)
        total = jnp.where(head_ok, total + res.log_likelihood, -jnp.inf)
        pointwise = jnp.concatenate(
            [pointwise, jnp.where(head_ok, res.pointwise_log_likelihood, -jnp.inf)]
        )
        m_p = jnp.concatenate([m_p, res.predicted_mean])
        P_p = jnp.concatenate([P_p, res.predicted_cov])
        m_f = jnp.concatenate([m_f, res.filtered_mean])
        P_f = jnp.concatenate([P_f, res.filtered_cov])
    total = jnp.where(ended, total, -jnp.inf)
    pointwise = jnp.where(ended, pointwise, -jnp.inf)
    return FilterResult(total, pointwise, m_p, P_p, m_f, P_f)


def _diffuse_step(carry, inp, obs, tol):
    """One diffuse-window step: predict both parts, then the univariate updates."""
    a, Ps, Pinf, ok = carry
    A, b, Q, H, d, R, y0, _ = inp
    n = a.shape[-1]
    eye = jnp.eye(n, dtype=a.dtype)
    a_p = A @ a + b
    Ps_p = symmetrize(A @ Ps @ A.T) + Q
    Pinf_p = symmetrize(A @ Pinf @ A.T)
    ok_p = finite_scalar(a_p, Ps_p, Pinf_p)
    a_p = jnp.where(ok_p, a_p, 0.0)
    Ps_p = jnp.where(ok_p, Ps_p, eye)
    Pinf_p = jnp.where(ok_p, Pinf_p, 0.0 * eye)
    # Decorrelate the entries: y* = L_R⁻¹ (y − d), H* = L_R⁻¹ H. Missing entries keep a
    # zero row, zero value and unit variance (L_R is block-diagonal in that pattern).
    LR, ok_r = safe_cholesky(R)
    X = tri_solve(LR, jnp.concatenate([H, (y0 - d)[:, None]], axis=1))
    Hs, vs = X[:, :n], X[:, n]
    a_f, Ps_f, Pinf_f, ll, ok_u = _univariate_updates(a_p, Ps_p, Pinf_p, Hs, vs, obs, tol)
    ll = ll - jnp.sum(jnp.log(jnp.diagonal(LR)))
    good = ok_p & ok_r & ok_u & finite_scalar(a_f, Ps_f, Pinf_f, ll)
    a_f = jnp.where(good, a_f, 0.0)
    Ps_f = jnp.where(good, Ps_f, eye)
    Pinf_f = jnp.where(good, Pinf_f, 0.0 * eye)
    ll = jnp.where(good, ll, 0.0)
    ok = ok & good
    return (a_f, Ps_f, Pinf_f, ok), (a_p, Ps_p, a_f, Ps_f, ll, ok)
