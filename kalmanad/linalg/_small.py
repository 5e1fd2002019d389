"""Products of small matrices, written for the speed of XLA:CPU (private).

Shared by the discretisation and the filters, whose hot loops multiply 1×1 … 8×8
matrices, one at a time inside a scan body or as stacks of all T steps outside it.
Every product is at full precision: on GPUs a float32 product at JAX's default
precision may run in TF32 (about 3 digits); no effect on CPU or in float64.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from kalmanad._tuning import DOT_MIN_BATCH, SMALL_MM


def use_dot(batch_a, batch_b, size: int) -> bool:
    """Whether a batch-first product of matrices of largest dimension ``size`` should be
    a dot rather than a broadcast-multiply-sum.

    On XLA:CPU (thresholds in :mod:`kalmanad._tuning`):

    * above ``SMALL_MM``, the dot;
    * for n ≤ 3 and a stack of at least ``DOT_MIN_BATCH`` matrices, the batched dot too:
      the transposes of a multiply-sum (in reverse mode) materialise an (i, j, k)-shaped
      product, which the dot avoids;
    * for n = 4 … 8 the batched dot takes a slow path, slower than the multiply-sum;
    * single matrices, as inside a loop body, fuse best as multiply-sums (fewer kernels
      per iteration).
    """
    if size > SMALL_MM:
        return True
    batch = math.prod(jnp.broadcast_shapes(tuple(batch_a), tuple(batch_b)))
    return size <= 3 and batch >= DOT_MIN_BATCH


def small_matmul(a, b):
    """``a @ b`` for (..., i, j) @ (..., j, k), as a dot or a fusible multiply-sum."""
    if use_dot(a.shape[:-2], b.shape[:-2], max(a.shape[-2:] + b.shape[-1:])):
        return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def small_matvec(a, x):
    """``a @ x`` for (..., i, j) @ (..., j), as a dot or a fusible multiply-sum."""
    if use_dot(a.shape[:-2], x.shape[:-1], max(a.shape[-2:])):
        return jnp.matmul(a, x[..., None], precision=lax.Precision.HIGHEST)[..., 0]
    return jnp.sum(a * x[..., None, :], axis=-1)
