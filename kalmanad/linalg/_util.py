"""Matrix transpose and symmetric part over the trailing axes (private, shared by every layer).

With ``tail = 1`` a matrix is read in the filters' batch-last layout (..., i, j, B), one
trailing batch axis; ``tail = 0`` (the default) is the ordinary (..., i, j) layout.
"""

from __future__ import annotations

import jax.numpy as jnp


def mT(x, tail: int = 0):
    """The transpose of each matrix of ``x`` (..., i, j, *tail)."""
    return jnp.swapaxes(x, -1 - tail, -2 - tail)


def symmetrize(x, tail: int = 0):
    """The symmetric part ``(x + xᵀ)/2`` of each matrix of ``x`` (..., n, n, *tail)."""
    return 0.5 * (x + mT(x, tail))
