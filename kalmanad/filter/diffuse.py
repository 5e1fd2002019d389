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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad.filter._common import finish, finite_scalar, flag, safe_cholesky, setup, tri_solve
from kalmanad.filter._types import FilterResult, SmootherResult
from kalmanad.filter.parallel import filter_parallel
from kalmanad.filter.sequential import filter_sequential
from kalmanad.filter.sqrt import filter_sqrt
from kalmanad.linalg._util import symmetrize
from kalmanad.ssm import DiscreteSSM

# The filter that continues from the end of the diffuse window, by ``method``.
_TAIL_FILTERS = {"sequential": filter_sequential, "sqrt": filter_sqrt, "parallel": filter_parallel}


class _Entry(NamedTuple):
    """The terms of one decorrelated entry at a given (a, P_*, P_∞) (module doc)."""

    v: jax.Array  # innovation
    Finf: jax.Array  # F_∞ (1 where the entry is not diffuse)
    Fs: jax.Array  # F_*
    Fs_safe: jax.Array  # F_* (1 where it is not positive)
    Ms: jax.Array  # M_*
    K0: jax.Array  # M_∞ / F_∞
    K: jax.Array  # M_* / F_*
    diffuse: jax.Array  # observed with F_∞ > 0
    regular: jax.Array  # observed with F_∞ = 0
    Fs_ok: jax.Array  # F_* > 0


def _entry(a, Ps, Pinf, h, y, obs, tol) -> _Entry:
    """The terms of one entry with row ``h`` and decorrelated value ``y``."""
    Minf = Pinf @ h
    Ms = Ps @ h
    Finf = h @ Minf
    Fs = h @ Ms + 1.0
    diffuse = obs & (Finf > tol * (h @ h))
    # Double where: each branch divides only by its own guarded denominator.
    Finf_safe = jnp.where(diffuse, Finf, 1.0)
    Fs_ok = Fs > 0
    Fs_safe = jnp.where(Fs_ok, Fs, 1.0)
    return _Entry(
        v=y - h @ a,
        Finf=Finf_safe,
        Fs=Fs,
        Fs_safe=Fs_safe,
        Ms=Ms,
        K0=Minf / Finf_safe,
        K=Ms / Fs_safe,
        diffuse=diffuse,
        regular=obs & ~diffuse,
        Fs_ok=Fs_ok,
    )


def _apply_entry(a, Ps, Pinf, e: _Entry):
    """The update of ``(a, P_*, P_∞)`` by one entry and its log-likelihood term."""
    a_d = a + e.K0 * e.v
    MK = jnp.outer(e.Ms, e.K0)
    Ps_d = Ps - MK - MK.T + jnp.outer(e.K0, e.K0) * e.Fs
    Pinf_d = Pinf - jnp.outer(e.K0, e.K0) * e.Finf
    ll_d = -0.5 * jnp.log(2.0 * math.pi * e.Finf)
    a_r = a + e.K * e.v
    Ps_r = Ps - jnp.outer(e.K, e.Ms)
    ll_r = -0.5 * (jnp.log(2.0 * math.pi * e.Fs_safe) + e.v * e.v / e.Fs_safe)
    a = jnp.where(e.diffuse, a_d, jnp.where(e.regular, a_r, a))
    Ps = symmetrize(jnp.where(e.diffuse, Ps_d, jnp.where(e.regular, Ps_r, Ps)))
    Pinf = symmetrize(jnp.where(e.diffuse, Pinf_d, Pinf))
    ll = jnp.where(e.diffuse, ll_d, jnp.where(e.regular, ll_r, 0.0))
    return a, Ps, Pinf, ll


def _univariate_updates(a, Ps, Pinf, Hs, vs, obs, tol):
    """Process the m decorrelated entries of one step (m is static and small)."""
    ll = jnp.zeros((), a.dtype)
    ok = jnp.ones((), bool)
    for i in range(Hs.shape[0]):
        e = _entry(a, Ps, Pinf, Hs[i], vs[i], obs[i], tol)
        a, Ps, Pinf, ll_i = _apply_entry(a, Ps, Pinf, e)
        ll = ll + ll_i
        ok = ok & (~e.regular | e.Fs_ok)
    return a, Ps, Pinf, ll, ok


def _diffuse_start(ssm_s, mask, y0, n_obs):
    """The start shared by the diffuse filter and smoother: the diffuse mask as floats
    (n,), the initial mean a0 (n,) and finite covariance P_*0 (n, n) with the diffuse
    components zeroed, the tolerance below which P_∞ has vanished, and the per-step
    scan inputs (transition, offset, noise, observation, its offset and noise, y0, n_obs).
    """
    dtype = ssm_s.transition.dtype
    fmask = mask.astype(dtype)
    keep = 1.0 - fmask
    a0 = ssm_s.initial_mean * keep
    Ps0 = ssm_s.initial_cov * keep[:, None] * keep[None, :]
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
    return fmask, a0, Ps0, tol, xs


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
    fmask, a0, Ps0, tol, xs = _diffuse_start(ssm_s, mask, y0, n_obs)
    Pinf0 = jnp.diag(fmask)
    head = tuple(x[:d] for x in xs)

    def dstep(carry, inp):
        obs, inp = inp
        return _diffuse_step(carry, inp, obs, tol)

    (a, Ps, Pinf, _), (m_p1, P_p1, m_f1, P_f1, ll1, ok1, *_) = lax.scan(
        dstep, (a0, Ps0, Pinf0, ok_in), (obs_all[:d], head)
    )
    # The diffuse period must have ended inside the window.
    ended = jnp.max(jnp.abs(Pinf)) <= tol * jnp.maximum(1.0, jnp.max(jnp.abs(Ps)))
    ll1 = flag(ll1, ok1)
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
    """One step: predict both parts, then the univariate updates.

    Returns the new carry and ``(a_p, P*_p, a_f, P*_f, ll, ok, P∞_p, P∞_f, H*, y*)``:
    predicted and filtered moments, the step's log-likelihood, the validity flag, and
    the decorrelated rows and values (the smoother recomputes the entries from them).
    """
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
    return (a_f, Ps_f, Pinf_f, ok), (a_p, Ps_p, a_f, Ps_f, ll, ok, Pinf_p, Pinf_f, Hs, vs)


# ---------------------------------------------------------------------------------------
# exact diffuse smoothing
# ---------------------------------------------------------------------------------------
# Durbin & Koopman (2012, §5.3; univariate form §6.4) expand the backward quantities of
# the smoother in κ⁻¹: r = r₀ + κ⁻¹ r₁ + …, N = N₀ + κ⁻¹ N₁ + κ⁻² N₂ + …, at the
# point before each step's entries (they hold the information of that step's entries
# and of all later steps). With the predicted parts (a, P_*, P_∞) there,
#
#     E[x | y]   = a + P_* r₀ + P_∞ r₁
#     Cov[x | y] = P_* − P_* N₀ P_* − P_∞ N₁ P_* − P_* N₁ P_∞ − P_∞ N₂ P_∞
#
# (P_∞ r₀ = 0 and P_∞ N₀ = 0 hold exactly, so the κ-order terms vanish). Going back
# through an entry with F_∞ > 0, with K₀ = M_∞/F_∞, K₁ = (M_* − K₀ F_*)/F_∞,
# L₀ = I − K₀hᵀ, L₁ = −K₁hᵀ:
#
#     r₀ ← L₀ᵀ r₀,   r₁ ← h v/F_∞ + L₀ᵀ r₁ + L₁ᵀ r₀
#     N₀ ← L₀ᵀ N₀ L₀
#     N₁ ← hhᵀ/F_∞ + L₀ᵀ N₁ L₀ + L₁ᵀ N₀ L₀ + L₀ᵀ N₀ L₁
#     N₂ ← −hhᵀ F_*/F_∞² + L₀ᵀ N₂ L₀ + L₁ᵀ N₁ L₀ + L₀ᵀ N₁ L₁ + L₁ᵀ N₀ L₁
#
# (the κ⁻² term of the gain only enters N₂ next to N₀ L₀ P_∞ = 0 and is left out);
# through an ordinary entry (F_∞ = 0), with L = I − K hᵀ, K = M_*/F_*: r₀ ← h v/F_* + Lᵀ r₀,
# N₀ ← hhᵀ/F_* + Lᵀ N₀ L, and r₁, N₁, N₂ ← Lᵀ · L; through a transition A every term
# becomes Aᵀ r, Aᵀ N A. Once P_∞ = 0 these are the ordinary (univariate) smoother.
# The lag-one cross covariance, from the finite-κ Cov[x_k, x_{k+1} | y] =
# P_{k|k} Aᵀ (I − N P_{k+1}) (N, P_{k+1} at step k+1; filtered P_{k|k}) is
#
#     P_*f Aᵀ − P_*f Aᵀ (N₀ P_*' + N₁ P_∞') − P_∞f Aᵀ (N₁ P_*' + N₂ P_∞').


def _entry_back(back, e: _Entry, h):
    """The backward quantities ``(r₀, r₁, N₀, N₁, N₂)`` before one entry."""
    r0, r1, N0, N1, N2 = back
    hh = jnp.outer(h, h)
    # F_∞ > 0
    K1 = (e.Ms - e.K0 * e.Fs) / e.Finf
    L0 = jnp.eye(h.shape[0], dtype=h.dtype) - jnp.outer(e.K0, h)
    L1 = -jnp.outer(K1, h)
    X1 = L1.T @ N0 @ L0
    X2 = L1.T @ N1 @ L0
    diffuse = (
        L0.T @ r0,
        h * (e.v / e.Finf) + L0.T @ r1 + L1.T @ r0,
        L0.T @ N0 @ L0,
        hh / e.Finf + L0.T @ N1 @ L0 + X1 + X1.T,
        -hh * (e.Fs / e.Finf**2) + L0.T @ N2 @ L0 + X2 + X2.T + L1.T @ N0 @ L1,
    )
    # F_∞ = 0
    L = jnp.eye(h.shape[0], dtype=h.dtype) - jnp.outer(e.K, h)
    regular = (
        h * (e.v / e.Fs_safe) + L.T @ r0,
        L.T @ r1,
        hh / e.Fs_safe + L.T @ N0 @ L,
        L.T @ N1 @ L,
        L.T @ N2 @ L,
    )
    return tuple(
        jnp.where(e.diffuse, xd, jnp.where(e.regular, xr, x))
        for xd, xr, x in zip(diffuse, regular, back, strict=True)
    )


def _smooth_step(back, inp, tol):
    """One backward step: from the quantities at step k+1 to those at step k."""
    a_p, Ps_p, Pinf_p, Ps_f, Pinf_f, Hs, vs, obs, A, Ps_n, Pinf_n = inp
    r0, r1, N0, N1, N2 = back
    AT = A.T
    cross = Ps_f @ AT - Ps_f @ AT @ (N0 @ Ps_n + N1 @ Pinf_n)
    cross = cross - Pinf_f @ AT @ (N1 @ Ps_n + N2 @ Pinf_n)
    back = (AT @ r0, AT @ r1, AT @ N0 @ A, AT @ N1 @ A, AT @ N2 @ A)
    # The entries of step k, recomputed forward from its predicted moments.
    a, Ps, Pinf = a_p, Ps_p, Pinf_p
    entries = []
    for i in range(Hs.shape[0]):
        e = _entry(a, Ps, Pinf, Hs[i], vs[i], obs[i], tol)
        entries.append(e)
        a, Ps, Pinf, _ = _apply_entry(a, Ps, Pinf, e)
    for i in reversed(range(Hs.shape[0])):
        back = _entry_back(back, entries[i], Hs[i])
    r0, r1, N0, N1, N2 = back
    mean = a_p + Ps_p @ r0 + Pinf_p @ r1
    PN1P = Pinf_p @ N1 @ Ps_p
    cov = Ps_p - Ps_p @ N0 @ Ps_p - PN1P - PN1P.T - Pinf_p @ N2 @ Pinf_p
    return back, (mean, symmetrize(cov), cross)


@jax.jit
def smooth_diffuse(ssm: DiscreteSSM, y, diffuse_mask) -> SmootherResult:
    """Exact diffuse smoother (Durbin & Koopman §5.3, univariate form; internal).

    ``ssm`` unbatched ((T, ...) fields), ``y`` (T, m) with NaN for missing entries,
    ``diffuse_mask`` (n,) as in :func:`filter_diffuse`. Runs the univariate exact
    diffuse filter over the whole series (it is the ordinary univariate filter once
    ``P_∞`` has vanished) and the backward recursion of the section comment above.

    Returns:
        :class:`SmootherResult` with smoothed means (T, n), covariances (T, n, n) and
        lag-one cross covariances (T-1, n, n); ``gain`` is None (the RTS gains
        ``P_{k|k} Aᵀ P_{k+1|k}⁻¹`` do not exist while ``P_∞ ≠ 0``). Every entry is NaN
        when the filter is invalid at some step (its log-likelihood is ``-inf``) or
        the diffuse period has not ended by the last step (the posterior is improper).
    """
    n = ssm.offset.shape[-1]
    mask = jnp.asarray(diffuse_mask)
    ssm_s, y0, n_obs, ok_in = setup(ssm, y)
    obs_all = ~jnp.isnan(y)
    dtype = ssm_s.transition.dtype
    fmask, a0, Ps0, tol, xs = _diffuse_start(ssm_s, mask, y0, n_obs)

    def fstep(carry, inp):
        obs, inp = inp
        return _diffuse_step(carry, inp, obs, tol)

    (_, Ps, Pinf, ok), out = lax.scan(fstep, (a0, Ps0, jnp.diag(fmask), ok_in), (obs_all, xs))
    a_p, Ps_p, _, Ps_f, _, _, Pinf_p, Pinf_f, Hs, vs = out
    ended = jnp.max(jnp.abs(Pinf)) <= tol * jnp.maximum(1.0, jnp.max(jnp.abs(Ps)))

    def shift(x):  # the values at step k+1 (zeros after the last step)
        return jnp.concatenate([x[1:], jnp.zeros_like(x[:1])])

    zero_n = jnp.zeros((n,), dtype)
    zero_nn = jnp.zeros((n, n), dtype)
    back0 = (zero_n, zero_n, zero_nn, zero_nn, zero_nn)
    seq = (a_p, Ps_p, Pinf_p, Ps_f, Pinf_f, Hs, vs, obs_all)
    seq = (*seq, shift(ssm_s.transition), shift(Ps_p), shift(Pinf_p))
    _, (mean, cov, cross) = lax.scan(lambda b, i: _smooth_step(b, i, tol), back0, seq, reverse=True)
    good = ok & ended
    mean, cov, cross = (jnp.where(good, x, jnp.nan) for x in (mean, cov, cross[:-1]))
    return SmootherResult(mean, cov, cross, None)
