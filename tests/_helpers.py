"""Helpers shared by the filter test modules (not a test module: no tests here)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kalmanad.ssm import DiscreteSSM


def spd(rng, k, scale=1.0):
    """A random symmetric positive-definite (k, k) matrix."""
    a = rng.normal(size=(k, k))
    return scale * (a @ a.T / k + 0.3 * np.eye(k))


def random_ssm(rng, T, n, m, *, zero_steps=(), dtype=np.float64):
    """Time-varying model with offsets; ``zero_steps`` get A = I, Q = 0 (a Δ = 0 step)."""
    A = np.stack([0.7 * np.eye(n) + 0.25 * rng.normal(size=(n, n)) for _ in range(T)])
    Q = np.stack([spd(rng, n, 0.5) for _ in range(T)])
    H = rng.normal(size=(T, m, n))
    R = np.stack([spd(rng, m, 0.3) for _ in range(T)])
    for k in zero_steps:
        A[k] = np.eye(n)
        Q[k] = 0.0
    b = rng.normal(size=(T, n))
    d = rng.normal(size=(T, m))
    ssm = DiscreteSSM(A, b, Q, H, d, R, rng.normal(size=n), spd(rng, n))
    return DiscreteSSM(*[np.asarray(x, dtype) for x in ssm])


def to_jax(ssm):
    """The SSM with every field a JAX array."""
    return jax.tree_util.tree_map(jnp.asarray, ssm)
