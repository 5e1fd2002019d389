"""Shared machinery of the filters: input checks, missing data, guards, small
factorisations, and the set-up and log-likelihood convention every filter uses
(:func:`setup`, :func:`step_loglik`, :func:`flag`, :func:`finish`).

Everything here is private to ``kalmanad.filter``. The unrolled factorisation and
solve (:func:`safe_cholesky`, :func:`tri_solve`) are those of
:mod:`kalmanad.filter._kernels`, read in the ordinary (..., r, c) layout. Shape
checks are static (they read ``.shape`` only), so they work under ``jit``/``vmap``;
value checks run only on concrete arrays, because inside a sampler an invalid value
must give ``-inf``, never an exception.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad._scan import inline_scan, scan_in_chunks
from kalmanad._tuning import FILTER_UNROLL_MAX
from kalmanad.filter import _kernels as kernels
from kalmanad.linalg._checks import as_float_array
from kalmanad.linalg._util import mT, symmetrize
from kalmanad.ssm import DiscreteSSM

LOG_2PI = math.log(2.0 * math.pi)

# Number of trailing ("core") dimensions of each DiscreteSSM field; anything in front
# is a batch dimension.
CORE_NDIM = {
    "transition": 3,
    "offset": 2,
    "transition_cov": 3,
    "observation": 3,
    "observation_offset": 2,
    "observation_cov": 3,
    "initial_mean": 1,
    "initial_cov": 2,
}


def is_concrete(*xs) -> bool:
    """True when no argument is a tracer (so its values may be inspected)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


# ------------------------------------------------------------------------ validation


def _expected_shapes(T: int, n: int, m: int) -> dict:
    return {
        "transition": (T, n, n),
        "offset": (T, n),
        "transition_cov": (T, n, n),
        "observation": (T, m, n),
        "observation_offset": (T, m),
        "observation_cov": (T, m, m),
        "initial_mean": (n,),
        "initial_cov": (n, n),
    }


def ssm_dims(ssm: DiscreteSSM, y_shape=None):
    """Return ``(T, n, m)`` of an unbatched SSM, raising ``ValueError`` on bad shapes.

    ``y_shape``, when given, must be ``(T, m)``.
    """
    for name in DiscreteSSM._fields:
        x = getattr(ssm, name)
        if not hasattr(x, "shape"):
            raise ValueError(f"DiscreteSSM.{name} must be an array, got {type(x).__name__}")
        if x.ndim != CORE_NDIM[name]:
            raise ValueError(
                f"DiscreteSSM.{name} must have {CORE_NDIM[name]} dimensions, got shape "
                f"{x.shape} (use jax.vmap, or matching leading batch dimensions on y, for "
                "several subjects)"
            )
    T, m, n = ssm.observation.shape
    if T == 0:
        raise ValueError("the model has no time steps (observation.shape[0] == 0)")
    expected = _expected_shapes(T, n, m)
    bad = [
        f"{name}: expected {expected[name]}, got {getattr(ssm, name).shape}"
        for name in DiscreteSSM._fields
        if tuple(getattr(ssm, name).shape) != expected[name]
    ]
    if bad:
        raise ValueError(
            f"inconsistent DiscreteSSM shapes (T={T}, n={n}, m={m} read from "
            f"observation.shape={ssm.observation.shape}): " + "; ".join(bad)
        )
    if y_shape is not None and tuple(y_shape) != (T, m):
        raise ValueError(
            f"y must have shape (T, m) = ({T}, {m}) to match the model, got {tuple(y_shape)}"
        )
    return T, n, m


def promote(ssm: DiscreteSSM, *others):
    """Cast every SSM field (and ``others``) to one common inexact dtype."""
    fields = [as_float_array(getattr(ssm, f), f"DiscreteSSM.{f}") for f in DiscreteSSM._fields]
    others = [as_float_array(o, "y") if o is not None else None for o in others]
    dtype = jnp.result_type(*fields, *[o for o in others if o is not None])
    ssm = DiscreteSSM(*[f.astype(dtype) for f in fields])
    others = [o.astype(dtype) if o is not None else None for o in others]
    return (ssm, *others)


def _index(k: int, lead: tuple):
    return tuple(int(i) for i in np.unravel_index(k, lead))


def check_values(ssm: DiscreteSSM, y=None) -> None:
    """Value checks on concrete input: finite entries, symmetric PSD covariances.

    Works with any leading batch dimensions. Raises ``ValueError`` naming the field and
    the first offending index. Skipped by the callers when any input is traced.
    """
    dtype = ssm.transition.dtype
    tol = math.sqrt(float(np.finfo(dtype).eps))
    tiny = float(np.finfo(dtype).tiny)
    for name in DiscreteSSM._fields:
        x = np.asarray(getattr(ssm, name))
        if not np.all(np.isfinite(x)):
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise ValueError(f"DiscreteSSM.{name} has a non-finite entry at index {idx}")
    if y is not None:
        yy = np.asarray(y)
        if np.any(np.isinf(yy)):
            idx = tuple(int(i) for i in np.argwhere(np.isinf(yy))[0])
            raise ValueError(f"y has an infinite entry at index {idx} (use NaN for missing)")
    covs = {
        name: np.asarray(getattr(ssm, name))
        for name in ("transition_cov", "observation_cov", "initial_cov")
    }
    # One scale for all process-noise steps: a tiny step's Qd legitimately carries
    # rounding of the size of the larger covariances it was computed from.
    scale_all = max(float(np.max(np.abs(c), initial=0.0)) for c in covs.values())
    for name, c in covs.items():
        lead = c.shape[:-2]
        flat = c.reshape((-1, *c.shape[-2:]))
        if flat.shape[0] == 0:
            continue
        asym = np.max(np.abs(flat - np.swapaxes(flat, -1, -2)), axis=(-2, -1))
        scale = np.maximum(np.max(np.abs(flat), axis=(-2, -1)), tiny)
        bad = np.nonzero(asym > tol * scale)[0]
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"DiscreteSSM.{name} is not symmetric at index {_index(k, lead)} "
                f"(max |C - Cᵀ| = {asym[k]:.3g}, shape {c.shape})"
            )
        lam = np.linalg.eigvalsh(0.5 * (flat + np.swapaxes(flat, -1, -2)))[:, 0]
        ref = np.full_like(scale, max(scale_all, tiny)) if name == "transition_cov" else scale
        bad = np.nonzero(lam < -tol * ref)[0]
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"DiscreteSSM.{name} is not positive semi-definite at index "
                f"{_index(k, lead)} (smallest eigenvalue {lam[k]:.3g}, shape {c.shape})"
            )


def prepare(ssm: DiscreteSSM, y, *, validate: bool = True):
    """Promote to one float dtype and check values (when concrete and ``validate``).

    Shapes are checked later, per subject, by :func:`ssm_dims`.
    """
    ssm, y = promote(ssm, jnp.asarray(y))
    if validate and is_concrete(ssm, y):
        check_values(ssm, y)
    return ssm, y


# ------------------------------------------------------------------- batching helper


def batched(fn, ssm: DiscreteSSM, arrays: tuple, array_core_ndims: tuple, batch_ndim: int):
    """Apply ``fn(ssm, *arrays)`` over ``batch_ndim`` leading batch dimensions.

    Each SSM field and each array either carries the full batch prefix (mapped) or none
    (shared). ``arrays`` entries may be ``None`` (passed through).
    """
    if batch_ndim == 0:
        return fn(ssm, *arrays)
    lead = None
    for x, core in [(getattr(ssm, f), CORE_NDIM[f]) for f in DiscreteSSM._fields] + list(
        zip(arrays, array_core_ndims, strict=True)
    ):
        if x is not None and jnp.ndim(x) == core + batch_ndim:
            lead = jnp.shape(x)[:batch_ndim]
            break

    def axes(x, core, name):
        if x is None:
            return None
        nd = jnp.ndim(x)
        if nd == core:
            return None
        if nd == core + batch_ndim and jnp.shape(x)[:batch_ndim] == lead:
            return 0
        raise ValueError(
            f"{name} must have shape (*batch, core) with batch={lead} and {core} core "
            f"dimensions, or no batch dimensions; got shape {jnp.shape(x)}"
        )

    ssm_axes = DiscreteSSM(
        *[axes(getattr(ssm, f), CORE_NDIM[f], f"DiscreteSSM.{f}") for f in DiscreteSSM._fields]
    )
    arr_axes = tuple(
        axes(a, c, f"argument {i}")
        for i, (a, c) in enumerate(zip(arrays, array_core_ndims, strict=True))
    )
    f = fn
    for _ in range(batch_ndim):
        f = jax.vmap(f, in_axes=(ssm_axes, *arr_axes))
    return f(ssm, *arrays)


# -------------------------------------------------------------------- missing values


def mask_missing(y, observation, observation_offset, observation_cov):
    """Exact missing-value treatment by zeroing, vectorised over the T axis.

    For each step, entries of ``y`` that are NaN get a zero row in ``H`` and ``d``, a
    zero innovation (``y`` set to 0), unit variance and zero cross-covariance in ``R``.
    The innovation covariance is then block-diagonal (observed block, identity), so the
    Gaussian density factorises and the missing block contributes exactly
    ``-½ n_missing log 2π``, which the callers leave out by using ``n_observed`` in the
    normalising constant. Returns ``(y0, H, d, R, n_observed)``.
    """
    obs = ~jnp.isnan(y)  # (T, m)
    y0 = jnp.where(obs, y, 0.0)
    H = jnp.where(obs[..., None], observation, 0.0)
    d = jnp.where(obs, observation_offset, 0.0)
    both = obs[..., :, None] & obs[..., None, :]
    eye = jnp.eye(y.shape[-1], dtype=y.dtype)
    R = jnp.where(both, observation_cov, 0.0) + jnp.where(obs, 0.0, 1.0)[..., None] * eye
    n_obs = jnp.sum(obs, axis=-1).astype(y.dtype)
    return y0, H, d, R, n_obs


def sanitize_inputs(ssm: DiscreteSSM, y0):
    """Replace non-finite model entries by zeros; return ``(ssm, all_finite)``.

    The double-``where`` trick: downstream arithmetic never sees a NaN/inf from the
    input, so the gradients stay finite (zero with respect to the replaced entries)
    while the caller reports ``-inf`` through ``all_finite``. Covariances are also
    symmetrised here (each is read as its symmetric part, as in ``kalmanad.linalg``).
    """
    ok = jnp.isfinite(y0).all()
    fields = []
    for name in DiscreteSSM._fields:
        x = getattr(ssm, name)
        fin = jnp.isfinite(x)
        ok = ok & fin.all()
        x = jnp.where(fin, x, 0.0)
        if name in ("transition_cov", "observation_cov", "initial_cov"):
            x = symmetrize(x)
            ok = ok & _passes_psd_minors(x)
        fields.append(x)
    return DiscreteSSM(*fields), ok


def _passes_psd_minors(c):
    """Necessary condition for PSD ``c`` (..., k, k): every 1x1 and 2x2 principal minor
    is non-negative (``c_ii >= 0``, ``c_ij² <= c_ii c_jj``), up to rounding.

    O(k²) per matrix and outside the scan. A covariance that is indefinite in a way
    the minors miss is still caught when it makes an innovation covariance non-PD;
    an invalid noise covariance that the data would never expose (e.g. a negative
    observation variance smaller than the predicted state variance) is caught here.
    """
    diag = jnp.diagonal(c, axis1=-2, axis2=-1)
    eps = jnp.finfo(c.dtype).eps
    scale = jnp.max(jnp.abs(diag), axis=-1, keepdims=True)
    ok_diag = jnp.all(diag >= -8 * eps * scale)
    d = jnp.maximum(diag, 0.0)
    bound = d[..., :, None] * d[..., None, :]
    slack = 8 * eps * scale[..., None] ** 2
    ok_minor = jnp.all(c * c <= bound + slack)
    return ok_diag & ok_minor


def finite_scalar(*xs):
    """One cheap finiteness test of several arrays (a sum of finite values is finite
    unless it overflows, which is treated as invalid too)."""
    total = sum(jnp.sum(x) for x in xs)
    return jnp.isfinite(total)


# ------------------------------------------------------------- small factorisations


def safe_cholesky(s):
    """Lower Cholesky factor of symmetric ``s`` (..., m, m) and a PD flag (...,).

    :func:`kalmanad.filter._kernels.cholesky` in the ordinary (batch-first) layout:
    a finite placeholder and a zero tangent where ``s`` is not positive-definite.
    """
    l, ok = kernels.cholesky(jnp.moveaxis(s, (-2, -1), (0, 1)))
    return jnp.moveaxis(l, (0, 1), (-2, -1)), ok


def tri_solve(l, b, *, transpose: bool = False):
    """``l⁻¹ b`` (``l⁻ᵀ b`` if ``transpose``) for lower-triangular ``l`` (..., m, m),
    ``b`` (..., m, k), batch dimensions broadcast (:func:`kalmanad.filter._kernels.tri_solve`
    in the ordinary layout)."""
    batch = jnp.broadcast_shapes(l.shape[:-2], b.shape[:-2])
    l = jnp.broadcast_to(l, batch + l.shape[-2:])
    b = jnp.broadcast_to(b, batch + b.shape[-2:])
    x = kernels.tri_solve(
        jnp.moveaxis(l, (-2, -1), (0, 1)), jnp.moveaxis(b, (-2, -1), (0, 1)), transpose=transpose
    )
    return jnp.moveaxis(x, (0, 1), (-2, -1))


def solve(a, b):
    """Solve ``a x = b`` for a general square ``a`` (..., r, r), ``b`` (..., r, k).

    For r <= FILTER_UNROLL_MAX: Gaussian elimination with partial pivoting, unrolled into
    element-wise operations (vectorised over the batch; a LAPACK LU is slow to
    compile on XLA:CPU, and the parallel filter has one per scan level). Beyond:
    ``jnp.linalg.solve``.
    """
    r = a.shape[-1]
    if r > FILTER_UNROLL_MAX:
        return jnp.linalg.solve(a, b)
    batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = jnp.broadcast_to(a, batch + a.shape[-2:])
    b = jnp.broadcast_to(b, batch + b.shape[-2:])
    rows = [jnp.concatenate([a[..., i, :], b[..., i, :]], axis=-1) for i in range(r)]
    for k in range(r):
        # partial pivoting: bring the largest |entry| of column k (rows >= k) to row k
        mag = jnp.stack([jnp.abs(rows[i][..., k]) for i in range(k, r)], axis=-1)
        p = jnp.argmax(mag, axis=-1) + k
        pivot_row = rows[k]
        for i in range(k + 1, r):
            pivot_row = jnp.where((p == i)[..., None], rows[i], pivot_row)
        for i in range(k + 1, r):
            rows[i] = jnp.where((p == i)[..., None], rows[k], rows[i])
        rows[k] = pivot_row
        for i in range(k + 1, r):
            f = rows[i][..., k] / rows[k][..., k]
            rows[i] = rows[i] - f[..., None] * rows[k]
    x = [None] * r
    for i in range(r - 1, -1, -1):
        acc = rows[i][..., r:]
        for j in range(i + 1, r):
            acc = acc - rows[i][..., j, None] * x[j]
        x[i] = acc / rows[i][..., i, None]
    return jnp.stack(x, axis=-2)


def psd_sqrt(s):
    """A square root ``g`` with ``g gᵀ = s₊`` of a symmetric PSD ``s`` (..., n, n),
    and a flag (...,) that ``s`` is PSD up to rounding.

    ``s₊`` clamps negative eigenvalues to zero: ``g = V diag(√λ₊)``, from the
    eigen-decomposition of the symmetric part of ``s``. Robust to singular ``s``
    (``Q = 0`` at a zero-length step). The flag is False where the most negative
    eigenvalue exceeds ``√eps`` times the largest magnitude (an indefinite covariance,
    not rounding). Differentiable where the eigenvalues are distinct and positive; the
    square root has an infinite derivative at 0 (see :func:`psd_factor`).
    """
    tol = float(np.sqrt(np.finfo(s.dtype).eps))
    if s.shape[-1] == 1:
        ok = s[..., 0, 0] >= 0
        return jnp.sqrt(jnp.maximum(s, 0.0)), ok
    lam, vec = jnp.linalg.eigh(symmetrize(s))
    ok = lam[..., 0] >= -tol * jnp.max(jnp.abs(lam), axis=-1)
    return vec * jnp.sqrt(jnp.maximum(lam, 0.0))[..., None, :], ok


def psd_factor(s):
    """:func:`psd_sqrt` with its gradient stopped, for the square-root filter, which
    carries derivatives in covariance form (singular covariances are common there)."""
    return psd_sqrt(lax.stop_gradient(s))


def tria(m):
    """Lower-triangular ``l`` (..., r, r), positive diagonal, with ``l lᵀ = m mᵀ``,
    for ``m`` (..., r, c), c >= r, by a QR decomposition of ``mᵀ`` (forward only)."""
    r = jnp.linalg.qr(mT(m), mode="r")
    l = mT(r)
    sign = jnp.where(jnp.diagonal(l, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(l.dtype)
    return l * sign[..., None, :]


def chol_tangent(l, dp):
    """Tangent of the Cholesky factor ``l`` of ``P`` for a symmetric tangent ``dp``:
    ``L̇ = L Φ(L⁻¹ Ṗ L⁻ᵀ)`` (valid for any diagonal signs of ``l``).

    The rule of :func:`kalmanad.linalg.cholesky.cholesky_lower`, kept apart because it
    takes a given factor (the square-root filter's, from QR, with no failure to mask)
    and solves by unrolled substitution for small sizes, which fuses with the filter
    step."""
    x = tri_solve(l, dp)
    x = mT(tri_solve(l, mT(x)))
    phi = jnp.tril(x) - 0.5 * jnp.eye(x.shape[-1], dtype=x.dtype) * x
    return l @ phi


@jax.custom_jvp
def attach_cholesky(p, l):
    """Return ``l`` (a lower factor of ``p`` computed without derivative information)
    with the tangent of the Cholesky factor of ``p``.

    The square-root filter propagates factors forward-only and carries derivatives in
    covariance form; this gives its reported factors the right derivative. The tangent
    needs ``p`` positive-definite (the Cholesky factor is not differentiable otherwise).
    """
    return l


@attach_cholesky.defjvp
def _attach_cholesky_jvp(primals, tangents):
    _, l = primals
    dp, _ = tangents
    return l, chol_tangent(l, symmetrize(dp))


def check_checkpoint(checkpoint, method: str = "sequential") -> int | None:
    """Validate the ``checkpoint`` segment length (a positive int, or None) for ``method``."""
    if checkpoint is None:
        return None
    if method == "parallel":
        raise ValueError(
            "checkpoint applies to the 'sequential' and 'sqrt' filters (the parallel "
            "filter's associative scan has no sequential segments to rematerialise)"
        )
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, np.integer)):
        raise ValueError(
            f"checkpoint must be a positive integer segment length or None, got {checkpoint!r}"
        )
    if checkpoint < 1:
        raise ValueError(f"checkpoint must be a positive segment length, got {checkpoint}")
    return int(checkpoint)


def scan_segments(step, init, xs, *, checkpoint: int | None = None, unroll: int = 1):
    """``lax.scan(step, init, xs)``, optionally in rematerialised segments.

    With ``checkpoint = k`` the first ``(T // k) * k`` steps run as an outer scan over
    segments of k steps, each segment a ``jax.checkpoint``-ed inner scan, and the
    remaining steps as a plain scan. Reverse-mode AD then stores only the carry at each
    segment start (T/k carries) plus, while one segment is being differentiated, that
    segment's per-step residuals (k steps), instead of the residuals of all T steps:
    the gradient's working memory drops from O(T) to O(T/k + k) steps (k ≈ √T is the
    minimum) for about one extra forward pass. The stacked per-step outputs are
    outputs, not residuals, and are the same as without checkpointing.
    """
    T = jax.tree.leaves(xs)[0].shape[0]
    if checkpoint is None or checkpoint >= T:
        return inline_scan(step, init, xs, unroll=unroll)
    return scan_in_chunks(step, init, xs, checkpoint, unroll=unroll, wrap=jax.checkpoint)


def first_bad_mask(ok):
    """``True`` from the first ``False`` of ``ok`` (T,) onwards (cumulative invalidity).

    Via the index of the first invalid step (O(T); a cumulative sum is lowered to an
    O(T²) reduce-window on CPU).
    """
    T = ok.shape[-1]
    first = jnp.where(jnp.all(ok, axis=-1), T, jnp.argmin(ok, axis=-1))
    return jnp.arange(T) >= first[..., None]


# ------------------------------------------- set-up and the log-likelihood convention


def setup(ssm: DiscreteSSM, y):
    """The set-up every filter shares: guards and missing-value masking (one subject).

    Returns ``(ssm, y0, n_obs, ok)``: the sanitised model (non-finite entries zeroed,
    covariances symmetrised, see :func:`sanitize_inputs`) with the masked observation
    arrays (see :func:`mask_missing`), the zero-filled observations, the count of
    observed entries per step and the all-inputs-valid flag. An infinite observation
    is invalid, not missing.
    """
    y_fin = jnp.where(jnp.isinf(y), 0.0, y)
    ok_y = ~jnp.isinf(y).any()
    ssm, ok = sanitize_inputs(ssm, jnp.zeros((), y.dtype))
    y0, H, d, R, n_obs = mask_missing(
        y_fin, ssm.observation, ssm.observation_offset, ssm.observation_cov
    )
    ssm = ssm._replace(observation=H, observation_offset=d, observation_cov=R)
    return ssm, y0, n_obs, ok & ok_y


def step_loglik(n_obs, quad, half_logdet):
    """``log N(v; 0, S)`` of one step's observed entries from ``quad = vᵀ S⁻¹ v`` and
    ``half_logdet = Σ log Lᵢᵢ`` (``S = L Lᵀ``): ``−½ (n_obs log 2π + quad) − half_logdet``."""
    return -0.5 * (n_obs * LOG_2PI + quad) - half_logdet


def flag(ll, ok, probe=0.0):
    """Fold the validity of a step into its log-likelihood: NaN where invalid.

    ``ok`` is False where the step failed (e.g. ``S`` not positive-definite); ``0 *
    probe`` is NaN exactly when a probe (see ``_kernels.guard``) is not finite. The NaN
    only marks the step for :func:`finish`, which masks it (its cotangent is zero, and
    neither the addition nor the product by the constant 0 uses the NaN in its
    derivative). A single per-step output keeps XLA's fused loop fast on CPU.
    """
    return ll + jnp.where(ok, 0.0, jnp.nan) + 0.0 * probe


def finish(ll, ok_in):
    """Total and pointwise log-likelihood from the flagged per-step values (T, *batch).

    The convention of every filter: a step is valid when its flagged value is finite;
    the pointwise values are ``-inf`` from the first invalid step on, the total is
    ``-inf`` if any step or the input (``ok_in``, shape batch) is invalid.
    """
    ok_t = jnp.isfinite(ll) & ok_in
    bad = jnp.moveaxis(first_bad_mask(jnp.moveaxis(ok_t, 0, -1)), -1, 0)
    ll = jnp.where(ok_t, ll, 0.0)
    total = jnp.where(bad[-1], -jnp.inf, jnp.sum(ll, axis=0))
    return total, jnp.where(bad, -jnp.inf, ll)
