"""Input checks shared by the linear-algebra primitives.

Checks run on shapes and dtypes only (static under ``jit``), so they never break
tracing; value checks (NaN, symmetry) are the caller's business, because inside a
sampler a bad value must give ``-inf``, not an exception.
"""

from __future__ import annotations

import jax.numpy as jnp


def as_float_array(x, name: str):
    """Return ``x`` as a JAX array with an inexact dtype.

    Integer and boolean input is promoted to JAX's default float type (float32, or
    float64 when ``jax_enable_x64`` is on), as ``scipy.linalg`` promotes to float64.
    Complex input is rejected: the Kalman stack is real.
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def check_square(x, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` has shape ``(..., n, n)`` with n >= 1."""
    if x.ndim < 2 or x.shape[-1] != x.shape[-2] or x.shape[-1] == 0:
        raise ValueError(
            f"{name} must be a (..., n, n) square matrix with n >= 1, got shape {x.shape}"
        )


def check_same_shape(a, b, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless the trailing matrix shapes of ``a`` and ``b`` agree."""
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same matrix shape, "
            f"got {name_a}.shape={a.shape} and {name_b}.shape={b.shape}"
        )


def common_dtype(*xs):
    """Result dtype of the inputs (all already inexact)."""
    return jnp.result_type(*xs)
