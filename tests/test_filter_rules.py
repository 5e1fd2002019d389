"""The default log-likelihood's gradient goes through kalmanad's explicit rules.

Read off the jaxpr of ``jax.grad`` of the public ``kalmanad.log_likelihood`` with every
option at its default: the discretisation's Taylor coefficients
(``kalmanad.linalg.taylor_coefficients``), the stationary start's Lyapunov solve
(``kalmanad.linalg.solve_continuous_lyapunov``, a ``custom_linear_solve``) and the
sequential filter's derived tangent rule (``kalman_scan`` and its transposed
``kalman_scan_tangent``) each appear by name; JAX does not differentiate through
their algorithms.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

import kalmanad
from kalmanad.filter.sequential import kalman_scan, kalman_scan_tangent
from kalmanad.linalg import taylor_coefficients


def _grad_jaxpr(model_of, theta, times, y):
    return str(
        jax.make_jaxpr(jax.grad(lambda p: kalmanad.log_likelihood(model_of(p), times, y)))(theta)
    )


def _calls(text, kind):
    """Names of the ``kind`` calls (custom_jvp_call, jit) in a jaxpr's text."""
    return set(re.findall(rf"\b{kind}\[\s*name=(\w+)", text))


def _assert_filter_rule(text):
    assert kalman_scan.__name__ in _calls(text, "custom_jvp_call")
    assert kalman_scan_tangent.__name__ in _calls(text, "jit")


def test_two_state_model_uses_taylor_and_filter_rules():
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(0.5, 12))
    y = rng.normal(size=(12, 1))

    def model_of(p):
        return kalmanad.LinearSDE(
            drift=jnp.array([[0.0, 1.0], [-1.0, 0.0]]) + p[0] * jnp.eye(2),
            diffusion=jnp.diag(jnp.stack([0.1, p[1] ** 2])),
            observation=jnp.array([[1.0, 0.0]]),
            observation_noise=jnp.array([[0.2]]),
            initial_mean=jnp.zeros(2),
            initial_cov=jnp.eye(2),
        )

    text = _grad_jaxpr(model_of, jnp.array([-0.5, 0.7]), times, y)
    assert taylor_coefficients.__name__ in _calls(text, "custom_jvp_call")
    _assert_filter_rule(text)


def test_stationary_start_uses_lyapunov_and_filter_rules():
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.exponential(0.5, 12))
    y = rng.normal(size=(12, 1))

    def model_of(p):
        return kalmanad.LinearSDE(
            drift=jnp.reshape(-p[0], (1, 1)),
            diffusion=jnp.reshape(p[1], (1, 1)),
            observation=jnp.ones((1, 1)),
            observation_noise=jnp.array([[0.3]]),
        )

    model = model_of(jnp.array([1.0, 1.0]))
    assert model.initial_state == "stationary"  # the default start
    text = _grad_jaxpr(model_of, jnp.array([0.8, 1.3]), times, y)
    assert "custom_linear_solve" in text  # solve_continuous_lyapunov's transposable solve
    _assert_filter_rule(text)
