"""Shared machinery of the filters: input checks, missing data, guards, small factorisations.

Everything here is private to ``kalmanad.filter``. Shape checks are static (they read
``.shape`` only), so they work under ``jit``/``vmap``; value checks run only on
concrete arrays, because inside a sampler an invalid value must give ``-inf``, never
an exception.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad._scan import inline_scan, scan_in_chunks
from kalmanad._tuning import FILTER_UNROLL_MAX
from kalmanad.linalg._checks import as_float_array
from kalmanad.linalg._small import small_matmul, small_matvec
from kalmanad.linalg._util import mT, symmetrize
from kalmanad.linalg.cholesky import cholesky_lower
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


# Batch-last layout: with ``tail = 1`` the matrix helpers below read a matrix as
# (..., i, j, B), with one trailing batch axis (size B, or 1 for a shared operand).
# Element-wise products of small matrices then run over contiguous length-B vectors,
# which XLA vectorises on CPU, unlike the batch-first (B, ..., i, j) layout, whose
# innermost axis has the matrix's own small length. ``tail = 0`` (the default) is the
# ordinary (..., i, j) layout.


def entry(x, i, j, tail: int = 0):
    """Entry (i, j) of each matrix of ``x`` (..., r, c, *tail): shape (..., *tail)."""
    return x[(Ellipsis, i, j) + (slice(None),) * tail]


def row(x, i, tail: int = 0):
    """Row i of each matrix of ``x`` (..., r, c, *tail)."""
    return x[(Ellipsis, i, slice(None)) + (slice(None),) * tail]


def columns(x, cols, tail: int = 0):
    """Columns ``cols`` (an index or a slice) of each matrix of ``x`` (..., r, c, *tail)."""
    return x[(Ellipsis, slice(None), cols) + (slice(None),) * tail]


def eye_like(n: int, dtype, tail: int = 0):
    """The (n, n) identity with ``tail`` trailing unit axes (broadcasts over a batch)."""
    return jnp.eye(n, dtype=dtype).reshape((n, n) + (1,) * tail)


def diagonal(x, tail: int = 0):
    """The diagonals of ``x`` (..., r, r, *tail), as (..., *tail, r)."""
    return jnp.diagonal(x, axis1=-2 - tail, axis2=-1 - tail)


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


# Products inside scan bodies are broadcast-multiply-sums up to SMALL_MM
# (kalmanad.linalg._small): XLA then fuses a whole filter step into a few loop kernels
# instead of one library call per tiny product.


def mm(a, b, tail: int = 0):
    """``a @ b`` for (..., i, j) @ (..., j, k), fusible for small sizes.

    With ``tail = 1``: (..., i, j, B) @ (..., j, k, B), small sizes only.
    """
    if tail:
        prod = jnp.expand_dims(a, -1 - tail) * jnp.expand_dims(b, -3 - tail)
        return jnp.sum(prod, axis=-2 - tail)
    return small_matmul(a, b)


def mv(a, x, tail: int = 0):
    """``a @ x`` for (..., i, j) @ (..., j), fusible for small sizes.

    With ``tail = 1``: (..., i, j, B) @ (..., j, B), small sizes only.
    """
    if tail:
        return jnp.sum(a * jnp.expand_dims(x, -2 - tail), axis=-1 - tail)
    return small_matvec(a, x)


def mm_steps(a, b, tail: int = 0):
    """:func:`mm` for the stacks of all T steps at once (outside a loop body).

    Batch-last (``tail = 1``) matrices of size ≤ 3 are multiplied by a dot with batch
    dimensions (steps and subjects), which beats the multiply-sum for such stacks (as
    :data:`kalmanad._tuning.DOT_MIN_BATCH` does batch-first). Batch-first
    stacks already get the batched dot from :func:`small_matmul`.
    """
    if tail and max(a.shape[-3:-1] + b.shape[-2:-1]) <= 3:  # (i, j) and (k) of (..., B)
        return jnp.einsum("...ijb,...jkb->...ikb", a, b, precision=lax.Precision.HIGHEST)
    return mm(a, b, tail)


def mv_steps(a, x, tail: int = 0):
    """:func:`mv` for the stacks of all T steps at once (see :func:`mm_steps`)."""
    if tail and max(a.shape[-3:-1]) <= 3:
        return jnp.einsum("...ijb,...jb->...ib", a, x, precision=lax.Precision.HIGHEST)
    return mv(a, x, tail)


# ------------------------------------------------------------- small factorisations


def safe_cholesky(s, tail: int = 0):
    """Lower Cholesky factor of symmetric ``s`` (..., m, m) and a PD flag (...,).

    Where ``s`` is not positive-definite or not finite, the factor is replaced by a
    finite placeholder (and its tangent by zero), so downstream arithmetic and every
    derivative stay finite; the caller turns ``ok == False`` into a ``-inf``
    log-likelihood. Reads the lower triangle of ``s``.

    For m <= FILTER_UNROLL_MAX the factorisation is unrolled into element-wise operations with a
    guarded square root at each pivot (no library call, no reduction: XLA fuses it
    with the rest of a filter step). Beyond, LAPACK with a NaN-safe tangent rule.
    With ``tail = 1`` (batch-last, small sizes only): ``s`` (..., m, m, B), flag (..., B).
    """
    m = s.shape[-1 - tail]
    if m > FILTER_UNROLL_MAX:
        assert not tail, "batch-last layout: small matrices only"
        l = cholesky_lower(s)
        d = jnp.diagonal(l, axis1=-2, axis2=-1)
        ok = jnp.all(jnp.isfinite(l), axis=(-2, -1)) & jnp.all(d > 0, axis=-1)
        l = jnp.where(ok[..., None, None], l, jnp.eye(m, dtype=s.dtype))
        return l, ok
    batch = s.shape[: s.ndim - 2 - tail] + s.shape[s.ndim - tail :]
    ok = jnp.ones(batch, bool)
    cols = [[None] * m for _ in range(m)]  # cols[i][j] = L_ij
    zero = jnp.zeros(batch, s.dtype)
    for j in range(m):
        a = entry(s, j, j, tail)
        for k in range(j):
            a = a - cols[j][k] * cols[j][k]
        good = (a > 0) & jnp.isfinite(a)
        ok = ok & good
        d = jnp.sqrt(jnp.where(good, a, 1.0))
        cols[j][j] = d
        for i in range(j + 1, m):
            b = entry(s, i, j, tail)
            for k in range(j):
                b = b - cols[i][k] * cols[j][k]
            b = b / d
            fin = jnp.isfinite(b)
            ok = ok & fin
            cols[i][j] = jnp.where(fin, b, 0.0)
        for i in range(j):
            cols[i][j] = zero
    l = jnp.stack([jnp.stack(r, axis=-1 - tail) for r in cols], axis=-2 - tail)
    return l, ok


def guard(x, tail: int = 0):
    """``(x with non-finite entries set to 0, Σ x)`` — the sum is a finiteness probe.

    The replacement is element-wise and the probe is only tested after the scan
    (``isfinite`` of the stacked per-step probes): no reduction feeds a selection
    inside the loop, which keeps XLA's fused loop fast on CPU (about 10x for n = 2).
    Every value a later operation uses in its derivative is then finite, so with the
    caller masking invalid steps no NaN reaches any gradient. (A sum of finite values
    that overflows flags the step too, conservatively.) With ``tail`` trailing batch
    axes the probe is one per batch entry.
    """
    return jnp.where(jnp.isfinite(x), x, 0.0), jnp.sum(x, axis=tuple(range(x.ndim - tail)))


def substitute(
    a, b, *, lower: bool, transpose: bool = False, unit_diagonal: bool = False, tail: int = 0
):
    """Solve ``op(a) x = b`` for triangular ``a`` (..., r, r), ``b`` (..., r, k).

    ``op(a) = aᵀ`` if ``transpose``; ``a`` is lower- (``lower``) or upper-triangular,
    optionally with an implicit unit diagonal. Batch dimensions broadcast. Unrolled
    forward/back substitution for r <= FILTER_UNROLL_MAX, ``lax.linalg.triangular_solve`` beyond.
    With ``tail = 1`` (batch-last, small sizes only): (..., r, r, B) and (..., r, k, B).
    """
    r = a.shape[-1 - tail]
    if r > FILTER_UNROLL_MAX:
        assert not tail, "batch-last layout: small matrices only"
        batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a = jnp.broadcast_to(a, batch + a.shape[-2:])
        b = jnp.broadcast_to(b, batch + b.shape[-2:])
        return lax.linalg.triangular_solve(
            a, b, left_side=True, lower=lower, transpose_a=transpose, unit_diagonal=unit_diagonal
        )

    def e(i, j):  # entry (i, j) of op(a), with an axis for the k columns
        x = entry(a, j, i, tail) if transpose else entry(a, i, j, tail)
        return jnp.expand_dims(x, -1 - tail)

    forward = lower != transpose
    order = range(r) if forward else range(r - 1, -1, -1)
    x = [None] * r
    for i in order:
        acc = row(b, i, tail)
        for j in range(i) if forward else range(i + 1, r):
            acc = acc - e(i, j) * x[j]
        x[i] = acc if unit_diagonal else acc / e(i, i)
    return jnp.stack(x, axis=-2 - tail)


def tri_solve(l, b, *, transpose: bool = False, tail: int = 0):
    """``l⁻¹ b`` (``l⁻ᵀ b`` if ``transpose``) for lower-triangular ``l`` (..., m, m),
    ``b`` (..., m, k) (batch-last with ``tail = 1``)."""
    return substitute(l, b, lower=True, transpose=transpose, tail=tail)


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
