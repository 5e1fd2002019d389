"""Matrix transpose and symmetric part over the trailing axes (private, shared by every layer)."""

from __future__ import annotations

import jax.numpy as jnp


def mT(x):
    """The transpose of each matrix of ``x`` (..., i, j)."""
    return jnp.swapaxes(x, -1, -2)


def symmetrize(x):
    """The symmetric part ``(x + xᵀ)/2`` of each matrix of ``x`` (..., n, n)."""
    return 0.5 * (x + mT(x))
