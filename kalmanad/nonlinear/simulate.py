"""Euler–Maruyama simulation of a :class:`~kalmanad.nonlinear.NonlinearSDE`.

Between observation times the interval Δ_k is cut into K equal sub-steps h = Δ_k/K
(K = ceil(max Δ / max_dt), static) and the state moves by::

    x ← x + f(x, u_{k−1}, t) h + G(x, t) √h ξ,      ξ ~ N(0, I_k)

(Itô; strong order 1/2, weak order 1 in h), with x(t_0) ~ N(m0, P0) and
y_k = h(x(t_k), u_k) + e_k, e_k ~ N(0, R). The law approaches the model's as h → 0:
choose ``max_dt`` well below the fastest time scale of the drift (and of the noise's
state dependence).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad.filter._types import Simulation
from kalmanad.nonlinear.api import interval_steps
from kalmanad.nonlinear.linearise import n_substeps as substep_count
from kalmanad.nonlinear.model import NonlinearSDE

__all__ = ["simulate_nonlinear"]


def _psd_factor(c):
    """A factor F with F Fᵀ = c (symmetric PSD; eigen-decomposition, negatives clipped)."""
    lam, vec = jnp.linalg.eigh(0.5 * (c + c.T))
    return vec * jnp.sqrt(jnp.maximum(lam, 0.0))[None, :]


def _one_path(model: NonlinearSDE, key, steps, K: int):
    n, m = model.n_states, model.n_obs
    k_noise = model.n_noise
    dtype = model.dtype
    key0, key_obs, key_path = jax.random.split(key, 3)
    x0 = model.initial_mean + _psd_factor(model.initial_cov) @ jax.random.normal(key0, (n,), dtype)
    r_factor = _psd_factor(model.noise_cov())
    T = steps[0].shape[0]
    keys = jax.random.split(key_path, T)
    eps = jax.random.normal(key_obs, (T, m), dtype)

    def interval(x, inp):
        dt, t0, u_hold, u_obs, key_k, e_k = inp
        h = dt / K
        noise = jax.random.normal(key_k, (K, k_noise), dtype)

        def sub(j, x):
            t = t0 + j * h
            g = model.factor_at(x, t)
            return x + model.drift_at(x, u_hold, t) * h + g @ (jnp.sqrt(h) * noise[j])

        x = lax.fori_loop(0, K, sub, x)
        return x, (x, model.observe(x, u_obs) + r_factor @ e_k)

    _, (states, obs) = lax.scan(interval, x0, (*steps, keys, eps))
    return states, obs


@partial(jax.jit, static_argnames=("K", "sample_shape"))
def _simulate(model, times, key, inputs, *, K, sample_shape):
    T = times.shape[-1]
    batch = tuple(
        jnp.broadcast_shapes(times.shape[:-1], () if inputs is None else inputs.shape[:-2])
    )
    size = math.prod(batch)
    t = jnp.broadcast_to(times, (*batch, T)).reshape(size, T)
    if inputs is None:
        u = jnp.zeros((size, T, model.n_inputs), model.dtype)
    else:
        p = inputs.shape[-1]
        u = jnp.broadcast_to(inputs, (*batch, T, p)).reshape(size, T, p)
    n_draws = math.prod(sample_shape)
    keys = jax.random.split(key, n_draws * size)
    keys = keys.reshape((n_draws, size, *keys.shape[1:]))  # (raw uint32 keys: a last axis)

    def path(key, t, u):
        return _one_path(model, key, interval_steps(t, u, model.n_inputs, model.dtype), K)

    states, obs = jax.vmap(jax.vmap(path))(
        keys, jnp.broadcast_to(t, (n_draws, size, T)), jnp.broadcast_to(u, (n_draws, *u.shape))
    )
    shape = tuple(sample_shape) + batch
    return Simulation(
        states=states.reshape(shape + states.shape[2:]),
        observations=obs.reshape(shape + obs.shape[2:]),
    )


def simulate_nonlinear(
    model: NonlinearSDE,
    times,
    key,
    inputs=None,
    *,
    sample_shape=(),
    max_dt: float | None = None,
    n_substeps: int | None = None,
) -> Simulation:
    """Euler–Maruyama draws of the states and observations at ``times``.

    Args:
        model: the :class:`~kalmanad.nonlinear.NonlinearSDE`.
        times: (..., T) non-decreasing observation times (concrete, unless
            ``n_substeps`` is given).
        key: a ``jax.random`` key (every draw derives from it).
        inputs: (..., T, p) inputs (held over the following interval), or None.
        sample_shape: leading shape of independent draws.
        max_dt: the longest Euler–Maruyama sub-step (default ``model.max_dt``).
        n_substeps: sub-steps per interval, instead of ``max_dt``.

    Returns:
        :class:`~kalmanad.filter.Simulation` with ``states`` (*sample_shape, ..., T, n)
        and ``observations`` (*sample_shape, ..., T, m).
    """
    if not isinstance(model, NonlinearSDE):
        raise TypeError(f"model must be a NonlinearSDE, got {type(model).__name__}")
    max_dt = model.max_dt if max_dt is None else float(max_dt)
    if not (math.isfinite(max_dt) and max_dt > 0):
        raise ValueError(f"max_dt must be a positive finite number, got {max_dt}")
    K = substep_count(times, max_dt, n_substeps)
    p = model.n_inputs
    if inputs is None and p:
        raise ValueError(f"the model has n_inputs={p}: pass inputs of shape (..., T, {p})")
    if inputs is not None:
        inputs = jnp.asarray(inputs, model.dtype)
        if inputs.ndim < 2 or inputs.shape[-2:] != (np.shape(times)[-1], p):
            raise ValueError(
                f"inputs must have shape (..., T, p) = (..., {np.shape(times)[-1]}, {p}), "
                f"got {inputs.shape}"
            )
    sample_shape = tuple(int(s) for s in sample_shape)
    times = jnp.asarray(
        np.asarray(times) if not isinstance(times, jax.Array) else times, model.dtype
    )
    return _simulate(model, times, key, inputs, K=K, sample_shape=sample_shape)
