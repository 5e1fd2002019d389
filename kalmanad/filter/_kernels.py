"""Small-matrix kernels of the filters, in the matrix-first layout (private).

A matrix is stored as ``(r, c, *batch)`` and a vector as ``(r, *batch)``: the matrix
axes lead and any batch (one subject: none; a panel: the subjects) trails. Every
kernel indexes from the front, so one code path serves every batch shape, and in a
panel each entry ``x[i, j]`` is a contiguous vector over the subjects, which XLA:CPU
vectorises (in the batch-first layout the innermost axis is the matrix's own small
length). Operands of one kernel carry the same batch shape (or size-1 axes).

Up to :data:`kalmanad._tuning.SMALL_MM` (products) and
:data:`kalmanad._tuning.FILTER_UNROLL_MAX` (factorisations, solves) the kernels are
unrolled element-wise operations that XLA fuses with the rest of a filter step; larger
matrices go to dots and LAPACK. Linear in the right-hand sides, so reverse mode
transposes them.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from kalmanad._tuning import FILTER_UNROLL_MAX, SMALL_MM
from kalmanad.linalg.cholesky import cholesky_lower

_HI = lax.Precision.HIGHEST


def tr(x):
    """The transpose of each matrix of ``x`` (r, c, *batch)."""
    return jnp.swapaxes(x, 0, 1)


def sym(x):
    """The symmetric part ``(x + xᵀ)/2`` of each matrix of ``x`` (n, n, *batch)."""
    return 0.5 * (x + tr(x))


def mm(a, b):
    """``a @ b`` for ``a`` (i, j, *batch), ``b`` (j, k, *batch)."""
    if max(a.shape[:2] + b.shape[1:2]) > SMALL_MM:
        return jnp.einsum("ij...,jk...->ik...", a, b, precision=_HI)
    return jnp.sum(a[:, :, None] * b[None], axis=1)


def mv(a, x):
    """``a @ x`` for ``a`` (i, j, *batch), ``x`` (j, *batch)."""
    if max(a.shape[:2]) > SMALL_MM:
        return jnp.einsum("ij...,j...->i...", a, x, precision=_HI)
    return jnp.sum(a * x[None], axis=1)


def eye(n: int, like):
    """The (n, n) identity broadcast to the batch shape of ``like`` (r, c, *batch)."""
    batch = like.shape[2:]
    return jnp.broadcast_to(
        jnp.eye(n, dtype=like.dtype).reshape((n, n) + (1,) * len(batch)), (n, n, *batch)
    )


def diag(x):
    """The diagonal of each matrix of ``x`` (r, r, *batch), as (r, *batch)."""
    return jnp.moveaxis(jnp.diagonal(x, axis1=0, axis2=1), -1, 0)


def guard(x, core: int):
    """``(x with non-finite entries set to 0, Σ x)``; the sum (over the ``core``
    leading matrix/vector axes, one per batch entry) is a finiteness probe.

    The replacement is element-wise and the probe is only tested after the scan:
    no reduction feeds a selection inside the loop, which keeps XLA's fused loop fast
    on CPU. Every value a later operation uses in its derivative is then finite, so
    with the caller masking invalid steps no NaN reaches any gradient. (A sum of
    finite values that overflows flags the step too, conservatively.)
    """
    return jnp.where(jnp.isfinite(x), x, 0.0), jnp.sum(x, axis=tuple(range(core)))


def _to_batch_first(x):
    return jnp.moveaxis(x, (0, 1), (-2, -1))


def _from_batch_first(x):
    return jnp.moveaxis(x, (-2, -1), (0, 1))


def cholesky(s):
    """Lower Cholesky factor of symmetric ``s`` (m, m, *batch) and a PD flag (*batch).

    Where ``s`` is not positive-definite or not finite, the factor is replaced by a
    finite placeholder (and its tangent by zero), so downstream arithmetic and every
    derivative stay finite; the caller turns ``ok == False`` into a ``-inf``
    log-likelihood. Reads the lower triangle of ``s``. Unrolled, with a guarded square
    root at each pivot, for m ≤ ``FILTER_UNROLL_MAX``; LAPACK (with a NaN-safe tangent
    rule) beyond.
    """
    m = s.shape[0]
    if m > FILTER_UNROLL_MAX:
        l = cholesky_lower(_to_batch_first(s))
        d = jnp.diagonal(l, axis1=-2, axis2=-1)
        ok = jnp.all(jnp.isfinite(l), axis=(-2, -1)) & jnp.all(d > 0, axis=-1)
        l = jnp.where(ok[..., None, None], l, jnp.eye(m, dtype=s.dtype))
        return _from_batch_first(l), ok
    batch = s.shape[2:]
    ok = jnp.ones(batch, bool)
    cols = [[None] * m for _ in range(m)]  # cols[i][j] = L_ij
    zero = jnp.zeros(batch, s.dtype)
    for j in range(m):
        a = s[j, j]
        for k in range(j):
            a = a - cols[j][k] * cols[j][k]
        good = (a > 0) & jnp.isfinite(a)
        ok = ok & good
        d = jnp.sqrt(jnp.where(good, a, 1.0))
        cols[j][j] = d
        for i in range(j + 1, m):
            b = s[i, j]
            for k in range(j):
                b = b - cols[i][k] * cols[j][k]
            b = b / d
            fin = jnp.isfinite(b)
            ok = ok & fin
            cols[i][j] = jnp.where(fin, b, 0.0)
        for i in range(j):
            cols[i][j] = zero
    return jnp.stack([jnp.stack(r) for r in cols]), ok


def tri_solve(l, b, *, transpose: bool = False):
    """``l⁻¹ b`` (``l⁻ᵀ b`` if ``transpose``) for lower-triangular ``l`` (r, r, *batch)
    and ``b`` (r, k, *batch): unrolled substitution for r ≤ ``FILTER_UNROLL_MAX``."""
    r = l.shape[0]
    if r > FILTER_UNROLL_MAX:
        lf, bf = _to_batch_first(l), _to_batch_first(b)
        batch = jnp.broadcast_shapes(lf.shape[:-2], bf.shape[:-2])
        lf = jnp.broadcast_to(lf, batch + lf.shape[-2:])
        bf = jnp.broadcast_to(bf, batch + bf.shape[-2:])
        x = lax.linalg.triangular_solve(lf, bf, left_side=True, lower=True, transpose_a=transpose)
        return _from_batch_first(x)

    def e(i, j):  # entry (i, j) of op(l), broadcast over the k columns
        return (l[j, i] if transpose else l[i, j])[None]

    order = range(r - 1, -1, -1) if transpose else range(r)
    x = [None] * r
    for i in order:
        acc = b[i]
        for j in range(i + 1, r) if transpose else range(i):
            acc = acc - e(i, j) * x[j]
        x[i] = acc / e(i, i)
    return jnp.stack(x)
