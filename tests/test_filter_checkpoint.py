"""Checkpointed (rematerialised) scans: same values and gradients, less gradient memory.

``checkpoint=k`` runs the sequential and sqrt filters as a scan over ``jax.checkpoint``-ed
segments of k steps. The memory checks read XLA's own buffer assignment of the compiled
gradient (``memory_analysis``): deterministic, no timing.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanad as ka
from kalmanad.filter import filter_ssm
from kalmanad.filter._common import scan_segments


def _oscillator(initial_state="stationary"):
    return ka.LinearSDE(
        drift=jnp.array([[0.0, 1.0], [-4.0, -0.5]]),
        diffusion=jnp.diag(jnp.array([0.0, 1.0])),
        observation=jnp.array([[1.0, 0.0]]),
        observation_noise=jnp.array([[0.1]]),
        initial_state=initial_state,
    )


def _data(T, regular=False, seed=0):
    rng = np.random.default_rng(seed)
    times = np.arange(T) * 0.1 if regular else np.cumsum(rng.exponential(0.1, T))
    y = np.array(ka.simulate(_oscillator(), times, jax.random.key(seed)).observations)
    missing = rng.random(T) < 0.1
    missing[:4] = False  # the exact diffuse window (n = 2 steps) needs observations
    y[missing] = np.nan
    return times, y


def test_scan_segments_matches_scan():
    def step(c, x):
        c = 0.9 * c + jnp.sin(x)
        return c, c * x

    xs = jnp.linspace(0.0, 3.0, 23)
    want = jax.lax.scan(step, 0.5, xs)
    for k in (1, 4, 5, 23, 40):  # remainders, exact multiples, k >= T
        got = scan_segments(step, 0.5, xs, checkpoint=k)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-14)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-14)
        g = jax.grad(lambda a, k=k: scan_segments(step, a, xs, checkpoint=k)[1].sum())(0.5)
        g0 = jax.grad(lambda a: jax.lax.scan(step, a, xs)[1].sum())(0.5)
        np.testing.assert_allclose(g, g0, rtol=1e-13)


@pytest.mark.parametrize(
    ("method", "initial_state"),
    [
        ("sequential", "stationary"),
        pytest.param("sqrt", "stationary", marks=pytest.mark.slow),
        pytest.param("sequential", "diffuse", marks=pytest.mark.slow),
        pytest.param("sqrt", "diffuse", marks=pytest.mark.slow),
    ],
)
def test_checkpoint_keeps_values_and_gradients(method, initial_state):
    times, y = _data(103, regular=True)

    def f(theta, checkpoint):
        m = _oscillator(initial_state)
        m = m.replace(drift=m.drift.at[1, 1].set(theta[0]), observation_noise=theta[1:, None])
        res = ka.kalman_filter(m, times, y, method=method, checkpoint=checkpoint)
        return res.log_likelihood, res.filtered_mean

    theta = jnp.array([-0.5, 0.1])
    run = jax.jit(lambda t, k: (f(t, k), jax.grad(lambda t: f(t, k)[0])(t)), static_argnums=1)
    (v0, m0), g0 = run(theta, None)
    (v1, m1), g1 = run(theta, 20)  # 103 = 5 segments of 20 and a tail of 3
    assert np.isfinite(v0)
    np.testing.assert_allclose(v1, v0, rtol=1e-13)
    np.testing.assert_allclose(m1, m0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g1, g0, rtol=1e-11)


def _regular_ssm(T):
    """The oscillator's DiscreteSSM at a regular step, and data (no discretisation cost)."""
    times, y = _data(8, regular=True)
    ssm = ka.statespace.discretize_observed(_oscillator(), times)[0]
    rep = {
        f: jnp.broadcast_to(getattr(ssm, f)[1], (T, *getattr(ssm, f).shape[1:]))
        for f in (
            "transition",
            "offset",
            "transition_cov",
            "observation",
            "observation_offset",
            "observation_cov",
        )
    }
    y = np.resize(y, (T, 1))
    return ssm._replace(**rep), jnp.asarray(y)


def _gradient_temp_bytes(T, checkpoint):
    ssm, y = _regular_ssm(T)

    def loss(a):
        s = ssm._replace(transition=ssm.transition * a)
        return filter_ssm(s, y, checkpoint=checkpoint).log_likelihood

    compiled = jax.jit(jax.value_and_grad(loss)).lower(1.0).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_gradient_memory_linear_in_T_and_reduced_by_checkpointing():
    T = 4096
    plain = _gradient_temp_bytes(T, None)
    plain_2 = _gradient_temp_bytes(2 * T, None)
    ck = _gradient_temp_bytes(T, 64)  # √T
    n = 2
    # O(T n²): linear in T with a bounded number of n×n blocks per step.
    assert 1.8 < plain_2 / plain < 2.2
    assert plain / 8 / T < 40 * n * n
    # Checkpointing drops the per-step residuals of the filter (what remains is the
    # per-step model arrays, the gradient's inputs and outputs).
    assert ck < 0.7 * plain


def test_checkpoint_argument_errors():
    times, y = _data(10)
    m = _oscillator()
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="checkpoint"):
            ka.kalman_filter(m, times, y, checkpoint=bad)
    with pytest.raises(ValueError, match="'sequential' and 'sqrt'"):
        ka.kalman_filter(m, times, y, method="parallel", checkpoint=5)


@pytest.mark.parametrize("checkpoint", [None, 16])
def test_gradient_goes_through_the_derived_rule_with_and_without_checkpoint(checkpoint):
    ssm, y = _regular_ssm(50)

    def loss(a):
        s = ssm._replace(transition=ssm.transition * a)
        return filter_ssm(s, y, checkpoint=checkpoint).log_likelihood

    text = str(jax.make_jaxpr(jax.grad(loss))(1.0))
    # the filter's custom JVP, and its tangent recursion transposed into the adjoint
    assert re.search(r"custom_jvp_call\[\s*name=kalman_scan\s", text)
    assert "name=kalman_scan_tangent" in text
    assert ("remat" in text) == (checkpoint is not None)
    g = jax.grad(loss)(1.0)
    g_ck = jax.grad(
        lambda a: (
            filter_ssm(ssm._replace(transition=ssm.transition * a), y, checkpoint=7).log_likelihood
        )
    )(1.0)
    np.testing.assert_allclose(g_ck, g, rtol=1e-12)
