"""Loops that XLA:CPU runs fast: :func:`inline_scan` (private, shared by every layer).

Below the linear algebra in the layering: it imports only :mod:`kalmanad._tuning`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad._tuning import INLINE_BUFFER_BYTES


def inline_chunk(step, init, xs) -> int:
    """Steps per inner loop of :func:`inline_scan`: the most whose stacked per-step
    inputs and outputs, and the carry, each fit in ``INLINE_BUFFER_BYTES``."""
    x0 = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), xs)
    _, y0 = jax.eval_shape(step, init, x0)
    per_step = [x.dtype.itemsize * math.prod(x.shape) for x in jax.tree.leaves((x0, y0))]
    carry = [jnp.result_type(x).itemsize * math.prod(np.shape(x)) for x in jax.tree.leaves(init)]
    if max(carry, default=0) > INLINE_BUFFER_BYTES:
        return 1
    return INLINE_BUFFER_BYTES // max([*per_step, 1])


def inline_scan(step, init, xs, *, unroll: int = 1, reverse: bool = False):
    """``lax.scan(step, init, xs)`` as a scan over chunks of an inner scan, when that helps.

    The inner scan runs over chunks of k = :func:`inline_chunk` steps, so every buffer
    of its body is small and XLA:CPU runs the body inline (see ``INLINE_BUFFER_BYTES``);
    only the outer scan, T/k trips, pays the concurrent executor (a chunk one buffer
    over the threshold is slower than no chunks at all). The first ``(T // k) * k``
    steps (the last, with ``reverse``) run chunked, the rest as a plain scan. Same
    results, step for step: only the loop structure differs. Inner loops are not
    unrolled (it does not make them faster); ``unroll`` applies when unchunked.
    """
    T = jax.tree.leaves(xs)[0].shape[0]
    k = inline_chunk(step, init, xs)
    if k < 2 or T < 2 * k:
        return lax.scan(step, init, xs, unroll=unroll, reverse=reverse)
    return scan_in_chunks(step, init, xs, k, reverse=reverse)


def scan_in_chunks(step, init, xs, k: int, *, unroll: int = 1, reverse: bool = False, wrap=None):
    """``lax.scan(step, init, xs)`` as an outer scan over chunks of an inner k-step scan.

    The first ``(T // k) * k`` steps (the last, with ``reverse``) run chunked, the rest
    as a plain scan; ``wrap`` (e.g. ``jax.checkpoint``) is applied to the chunk's scan;
    ``unroll`` to the inner and the remaining scans. Same results, step for step. Used
    by :func:`inline_scan` and by the filters' checkpointed scan. Requires 1 <= k <= T.
    """
    T = jax.tree.leaves(xs)[0].shape[0]
    n_seg = T // k
    T0 = n_seg * k
    main = slice(T - T0, T) if reverse else slice(0, T0)
    rest = slice(0, T - T0) if reverse else slice(T0, T)

    def segment(carry, xs_seg):
        return lax.scan(step, carry, xs_seg, unroll=unroll, reverse=reverse)

    if wrap is not None:
        segment = wrap(segment)
    head = jax.tree.map(lambda x: x[main].reshape(n_seg, k, *x.shape[1:]), xs)
    carry, ys = lax.scan(segment, init, head, reverse=reverse)
    ys = jax.tree.map(lambda y: y.reshape(T0, *y.shape[2:]), ys)
    if T0 == T:
        return carry, ys
    # reversed, the chunked part holds the last steps, so it runs first in both cases
    tail_xs = jax.tree.map(lambda x: x[rest], xs)
    carry, ys_rest = lax.scan(step, carry, tail_xs, unroll=unroll, reverse=reverse)
    parts = (ys_rest, ys) if reverse else (ys, ys_rest)
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *parts)
