"""The nonlinear filters (kalmanad.nonlinear): exactness on linear models, conventions
(missing values, inputs, irregular and tied times, panels), validation, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanad
from kalmanad.nonlinear import (
    NonlinearSDE,
    as_linear,
    from_linear,
    nonlinear_filter,
    nonlinear_log_likelihood,
    simulate_nonlinear,
)


def _ctvar():
    """A 2-state CT-VAR with an intercept, one input (drift and observation) and a known
    start."""
    return kalmanad.LinearSDE(
        drift=[[-0.5, 0.3], [-0.2, -1.0]],
        diffusion=[[1.0, 0.2], [0.2, 0.5]],
        observation=[[1.0, 0.0], [0.5, 1.0]],
        observation_noise=[[0.1, 0.02], [0.02, 0.2]],
        drift_intercept=[0.1, -0.2],
        input_effect=[[0.5], [0.0]],
        observation_input_effect=[[0.0], [1.0]],
        initial_mean=[0.3, -0.1],
        initial_cov=[[0.5, 0.1], [0.1, 0.4]],
    )


def _ou():
    """The scalar OU process with a stationary start."""
    return kalmanad.LinearSDE(
        drift=[[-0.7]], diffusion=[[0.8]], observation=[[1.0]], observation_noise=[[0.2]]
    )


def _data(rng, T, m, p):
    times = np.cumsum(rng.uniform(0.05, 1.5, T))
    times[5] = times[4]  # a tie: a zero-length interval
    y = rng.normal(size=(T, m))
    y[3, 0] = np.nan  # partially missing row
    y[7] = np.nan  # fully missing row
    u = rng.normal(size=(T, p)) if p else None
    return times, y, u


@pytest.mark.parametrize(
    ("which", "max_dt", "method"),
    [
        ("ou", 100.0, "ekf"),  # one sub-step per interval
        pytest.param("ou", 0.25, "ukf", marks=pytest.mark.slow),
        pytest.param("ctvar", 100.0, "ekf", marks=pytest.mark.slow),
        ("ctvar", 0.25, "ekf"),  # several sub-steps per interval
        ("ctvar", 0.25, "ukf"),
    ],
)
def test_linear_models_give_the_exact_log_likelihood(which, max_dt, method):
    rng = np.random.default_rng(0)
    lin = _ou() if which == "ou" else _ctvar()
    times, y, u = _data(rng, 25, lin.n_obs, lin.n_inputs)
    ref = kalmanad.kalman_filter(lin, times, y, u)
    res = nonlinear_filter(from_linear(lin, max_dt=max_dt), times, y, u, method=method)
    assert abs(float(res.log_likelihood) / float(ref.log_likelihood) - 1.0) <= 1e-9
    np.testing.assert_allclose(
        res.pointwise_log_likelihood, ref.pointwise_log_likelihood, atol=1e-9
    )
    np.testing.assert_allclose(res.filtered_mean, ref.filtered_mean, atol=1e-9)
    np.testing.assert_allclose(res.filtered_cov, ref.filtered_cov, atol=1e-9)
    np.testing.assert_allclose(res.predicted_mean, ref.predicted_mean, atol=1e-9)
    np.testing.assert_allclose(res.predicted_cov, ref.predicted_cov, atol=1e-9)
    assert res.pointwise_log_likelihood[7] == 0.0  # a fully missing row contributes nothing


@pytest.mark.slow  # (about 30 s of compilation; test_nonlinear_numpyro checks gradients by default)
def test_gradient_matches_the_exact_linear_gradient():
    rng = np.random.default_rng(1)
    lin = _ctvar()
    times, y, u = _data(rng, 15, 2, 1)

    def exact(a):
        return kalmanad.log_likelihood(lin.replace(drift=a), times, y, u)

    def ekf(a):
        return nonlinear_log_likelihood(from_linear(lin.replace(drift=a), max_dt=0.5), times, y, u)

    np.testing.assert_allclose(jax.grad(ekf)(lin.drift), jax.grad(exact)(lin.drift), rtol=1e-8)


def _logistic(r=1.0, sigma=0.1, noise=0.04):
    def drift(x, u, t, p):
        return p["r"] * x * (1.0 - x / p["K"])

    def diffusion(x, t, p):
        return p["sigma"] * x[:, None]

    def observation(x, u, p):
        return x

    return NonlinearSDE(
        drift=drift,
        diffusion=diffusion,
        observation=observation,
        observation_noise=[[noise]],
        initial_mean=[1.0],
        initial_cov=[[0.05]],
        params={"r": r, "K": 5.0, "sigma": sigma},
        max_dt=0.1,
    )


def test_panel_by_vmap_and_jit_match_single_subjects():
    model = _logistic()
    times = np.stack([np.linspace(0.0, 6.0, 13), np.linspace(0.0, 6.0, 13) ** 1.1])
    sim = simulate_nonlinear(model, times, jax.random.key(0))
    y = np.asarray(sim.observations)
    assert y.shape == (2, 13, 1) and np.all(np.isfinite(y))
    panel = nonlinear_filter(model, times, y, n_substeps=8)
    assert panel.log_likelihood.shape == (2,)
    for s in range(2):
        one = nonlinear_filter(model, times[s], y[s], n_substeps=8)
        np.testing.assert_allclose(panel.log_likelihood[s], one.log_likelihood, rtol=1e-12)
    # one model per subject: vmap over the parameters with the times closed over
    rs = jnp.array([0.8, 1.2])

    def ll(r, yy):
        return nonlinear_log_likelihood(
            model.replace(params={**model.params, "r": r}), times[0], yy
        )

    batched = jax.jit(jax.vmap(ll))(rs, y[:, :, :])
    for s in range(2):
        np.testing.assert_allclose(batched[s], ll(rs[s], y[s]), rtol=1e-12)


@pytest.mark.slow  # (the default-run twin is in test_nonlinear_numpyro)
def test_invalid_parameters_give_minus_inf_with_finite_gradients():
    model = _logistic()
    times = np.linspace(0.0, 5.0, 11)
    y = np.asarray(simulate_nonlinear(model, times, jax.random.key(1)).observations)

    def ll(noise, sigma):
        m = jax.tree.map(lambda x: x, model)  # a copy built without validation
        m = m.tree_unflatten(
            m.tree_flatten()[1],
            (
                {**model.params, "sigma": sigma},
                model.initial_mean,
                model.initial_cov,
                jnp.reshape(noise, (1, 1)),
            ),
        )
        return nonlinear_log_likelihood(m, times, y)

    assert np.isfinite(ll(0.04, 0.1))
    for noise, sigma in [(-0.04, 0.1), (0.04, jnp.nan)]:
        value, grads = jax.value_and_grad(ll, argnums=(0, 1))(noise, sigma)
        assert value == -jnp.inf
        assert all(np.isfinite(g) for g in grads)


def test_model_validation_names_the_problem():
    ok = _logistic()
    with pytest.raises(ValueError, match="drift must return shape"):
        ok.replace(drift=lambda x, u, t, p: jnp.concatenate([x, x]))
    with pytest.raises(ValueError, match="diffusion_form='rate'"):
        ok.replace(diffusion=lambda x, t, p: jnp.ones((1, 2)), diffusion_form="rate")
    with pytest.raises(ValueError, match="observation_noise has shape"):
        ok.replace(observation_noise=jnp.eye(2))
    with pytest.raises(ValueError, match="initial_cov has shape"):
        ok.replace(initial_cov=jnp.eye(2))
    with pytest.raises(ValueError, match="could not be evaluated"):
        ok.replace(drift=lambda x, u, t, p: x @ jnp.ones((3,)))
    with pytest.raises(ValueError, match="observation_noise must be positive semi-definite"):
        ok.replace(observation_noise=[[-1.0]])
    with pytest.raises(ValueError, match="max_dt"):
        ok.replace(max_dt=0.0)
    with pytest.raises(ValueError, match="y must have shape"):
        nonlinear_filter(ok, np.arange(4.0), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="times must be non-decreasing"):
        nonlinear_filter(ok, np.array([0.0, 2.0, 1.0]), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="method must be one of"):
        nonlinear_filter(ok, np.arange(3.0), np.zeros((3, 1)), method="pf")
    with pytest.raises(ValueError, match="unknown option"):
        nonlinear_filter(ok, np.arange(3.0), np.zeros((3, 1)), method="ekf", alpha=0.5)


def test_as_linear_and_auto_route_to_the_exact_filter():
    lin = _ctvar()
    rng = np.random.default_rng(2)
    times, y, u = _data(rng, 10, 2, 1)
    back = as_linear(from_linear(lin))
    assert isinstance(back, kalmanad.LinearSDE)
    np.testing.assert_array_equal(back.drift, lin.drift)
    assert as_linear(_logistic()) is None
    auto = nonlinear_filter(from_linear(lin), times, y, u, method="auto")
    np.testing.assert_allclose(
        auto.log_likelihood, kalmanad.log_likelihood(lin, times, y, u), rtol=1e-14
    )
    with pytest.raises(ValueError, match="diffuse"):
        from_linear(lin.replace(initial_state="diffuse"))


def test_float32_model_runs_in_float32():
    m64 = _logistic()
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    m32 = m64.replace(
        params=jax.tree.map(f32, m64.params),
        initial_mean=f32(m64.initial_mean),
        initial_cov=f32(m64.initial_cov),
        observation_noise=f32(m64.observation_noise),
    )
    t = np.linspace(0.0, 10.0, 21)
    y = np.linspace(1.0, 4.0, 21)[:, None]
    ll64 = nonlinear_log_likelihood(m64, t, y)
    ll32 = nonlinear_log_likelihood(m32, t.astype(np.float32), y.astype(np.float32))
    assert ll32.dtype == jnp.float32
    np.testing.assert_allclose(ll32, ll64, rtol=1e-5)
