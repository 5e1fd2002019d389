"""``kalmanad._scan.inline_scan``: a scan in small chunks, step for step the same scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanad._scan import inline_chunk, inline_scan
from kalmanad._tuning import INLINE_BUFFER_BYTES


def _step(carry, x):
    """A filter-like step on (2, 2) matrices: nonlinear, so the order of steps matters."""
    a, q = x
    carry = a @ carry @ a.T / (1.0 + jnp.trace(carry)) + q
    return carry, (carry, jnp.sin(carry[0, 1]))


def _xs(T, seed=0):
    rng = np.random.default_rng(seed)
    a = jnp.asarray(rng.normal(size=(T, 2, 2)) / 2)
    q = jnp.asarray(rng.normal(size=(T, 2, 2)))
    return a, q @ jnp.swapaxes(q, -1, -2)


def test_chunk_keeps_every_buffer_small():
    init = jnp.eye(2)
    k = inline_chunk(_step, init, _xs(3))
    # per step: two (2, 2) inputs and one (2, 2) output of 8-byte floats
    assert k == INLINE_BUFFER_BYTES // (4 * jnp.zeros(()).dtype.itemsize)
    big = jnp.zeros((9, 9))  # a carry larger than the bound: no chunks
    assert inline_chunk(lambda c, x: (c, x), big, jnp.zeros((5, 3))) == 1


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T", [5, 23, 48, 50])  # no chunk, chunk + rest, exact chunks, rest
def test_same_values_and_gradients_as_scan(T, reverse):
    xs = _xs(T)
    init = jnp.eye(2) * 0.5

    def total(scan, init, xs):
        carry, (cs, s) = scan(_step, init, xs, reverse=reverse)
        return jnp.sum(carry) + jnp.sum(cs * cs) + jnp.sum(s)

    want = jax.lax.scan(_step, init, xs, reverse=reverse)
    got = inline_scan(_step, init, xs, reverse=reverse)
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)
    g_want = jax.grad(lambda i, x: total(jax.lax.scan, i, x), argnums=(0, 1))(init, xs)
    g_got = jax.grad(lambda i, x: total(inline_scan, i, x), argnums=(0, 1))(init, xs)
    for w, g in zip(jax.tree.leaves(g_want), jax.tree.leaves(g_got), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
