"""``kalmanad.linalg._small``: both routes (dot, multiply-sum) against numpy's products."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from kalmanad.linalg._small import small_matmul, small_matvec, use_dot


@pytest.mark.parametrize("batch", [(), (5,), (70,), (3, 30)])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 9])
def test_products_match_numpy(n, batch):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(*batch, n, n + 1))
    b = rng.normal(size=(*batch, n + 1, n))
    x = rng.normal(size=(*batch, n + 1))
    # a product's rounding is relative to Σ|a||b|, not to the (possibly cancelled) entry
    tol = {"rtol": 1e-13, "atol": 1e-15 * float(np.max(np.abs(a) @ np.abs(b)))}
    np.testing.assert_allclose(small_matmul(jnp.asarray(a), jnp.asarray(b)), a @ b, **tol)
    want = (a @ x[..., None])[..., 0]
    np.testing.assert_allclose(small_matvec(jnp.asarray(a), jnp.asarray(x)), want, **tol)
    # broadcasting a shared left operand over the batch, as the filters do
    np.testing.assert_allclose(
        small_matmul(jnp.asarray(a[..., :1, :, :] if batch else a), jnp.asarray(b)),
        (a[..., :1, :, :] if batch else a) @ b,
        **tol,
    )


def test_route_choice():
    assert use_dot((), (), 9)  # large: always a dot
    assert not use_dot((), (), 2)  # single small matrix: multiply-sum
    assert use_dot((64,), (), 3) and not use_dot((63,), (), 3)  # stacks of ≤ 3×3
    assert not use_dot((1000,), (1000,), 4)  # 4…8: multiply-sum at any batch
