"""The Taylor coefficients ``zʲ/j!`` of the exponential, with their exact rule.

The default discretisation route (``kalmanad.discretize``, ``method="van_loan"``)
evaluates Van Loan's integrals as power series in ``z = σΔ`` whose matrix powers are
shared by every step; this table of coefficients is the only part of the route that
depends on the step, so its derivative rule carries every derivative with respect to
the step lengths and, through ``σ``-scaled powers, none of the matrix algebra.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["taylor_coefficients"]


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def taylor_coefficients(z, degree: int):
    """``c[j] = zʲ/j!`` for j = 0 … ``degree``: shape (degree + 1, K) for ``z`` (K,).

    The powers come from two short tables, ``z^(8i + l) = (z⁸)ⁱ zˡ`` (l < 8): one fused
    element-wise kernel (a cumulative product along j lowers on CPU to a much slower
    windowed reduction). Every power is a product of at most six factors, so the
    relative error stays a few ulps; for ``|z| ≤ 2`` (the discretisation's range)
    ``z^33`` is far from overflow, and a tiny ``z`` underflows to exact zeros.

    Derivative (closed form, every order): ``dc[j]/dz = c[j−1]`` (and ``dc[0]/dz = 0``),
    the same table shifted by one, so ``jax.jvp`` costs one shift and one product and
    reverse mode one weighted sum over j.
    """
    one = jnp.ones_like(z)
    z2 = z * z
    z4 = z2 * z2
    low = jnp.stack([one, z, z2, z2 * z, z4, z4 * z, z4 * z2, z4 * z2 * z])
    z8 = z4 * z4
    highs = [one, z8]
    while 8 * len(highs) < degree + 1:
        highs.append(highs[-1] * z8)
    c = (jnp.stack(highs)[:, None, :] * low[None, :, :]).reshape(8 * len(highs), -1)
    inv_factorial = np.array([1.0 / math.factorial(j) for j in range(degree + 1)])
    return c[: degree + 1] * jnp.asarray(inv_factorial, z.dtype)[:, None]


@taylor_coefficients.defjvp
def _taylor_coefficients_jvp(degree, primals, tangents):
    (z,), (dz,) = primals, tangents
    c = taylor_coefficients(z, degree)
    shifted = jnp.concatenate([jnp.zeros_like(c[:1]), c[:-1]])
    return c, shifted * dz[None, :]
