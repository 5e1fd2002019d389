"""LinearSDEDistribution: log_prob is the Kalman log-likelihood, sample simulates, plates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers

import kalmanad
from kalmanad import LinearSDE
from kalmanad.distributions import LinearSDEDistribution


def _model(theta=0.7, sigma=1.0, noise=0.2):
    return LinearSDE(
        drift=jnp.array([[-theta]]),
        diffusion=jnp.array([[2 * theta * sigma**2]]),
        observation=jnp.eye(1),
        observation_noise=jnp.array([[noise**2]]),
    )


def _data(seed=0, T=50):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.5, T))
    y = rng.standard_normal((T, 1))
    y[rng.random(T) < 0.1] = np.nan
    return t, y


def test_log_prob_equals_filter_log_likelihood():
    t, y = _data()
    model = _model()
    d = LinearSDEDistribution(model, t)
    assert d.event_shape == (50, 1)
    assert d.batch_shape == ()
    ref = kalmanad.kalman_filter(model, t, y)
    np.testing.assert_allclose(d.log_prob(y), ref.log_likelihood, rtol=1e-13)
    np.testing.assert_allclose(d.pointwise_log_prob(y), ref.pointwise_log_likelihood, rtol=1e-13)


@pytest.mark.parametrize("method", ["sqrt", pytest.param("parallel", marks=pytest.mark.slow)])
def test_methods_agree(method):
    t, y = _data(1)
    a = LinearSDEDistribution(_model(), t).log_prob(y)
    b = LinearSDEDistribution(_model(), t, method=method).log_prob(y)
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_sample_shapes_and_moments():
    t, _ = _data(2, T=6)
    d = LinearSDEDistribution(_model(sigma=1.5, noise=0.1), t)
    draws = d.sample(jax.random.PRNGKey(0), (4000,))
    assert draws.shape == (4000, 6, 1)
    np.testing.assert_allclose(draws.var(0)[:, 0], 1.5**2 + 0.01, rtol=0.1)
    # log_prob broadcasts over sample dims.
    assert d.log_prob(draws[:7]).shape == (7,)


def test_batched_model_in_a_plate():
    rng = np.random.default_rng(3)
    S, T = 3, 20
    times = np.sort(rng.uniform(0, 10, (S, T)), axis=1)
    y = rng.standard_normal((S, T, 1))
    thetas = jnp.array([0.3, 0.8, 1.5])
    models = jax.vmap(lambda th: _model(theta=th))(thetas)
    d = LinearSDEDistribution(models, times)
    assert d.batch_shape == (S,)
    lp = d.log_prob(y)
    for s in range(S):
        np.testing.assert_allclose(
            lp[s], kalmanad.log_likelihood(_model(theta=thetas[s]), times[s], y[s]), rtol=1e-12
        )

    def numpyro_model():
        with numpyro.plate("subjects", S):
            numpyro.sample("y", LinearSDEDistribution(models, times), obs=y)

    tr = handlers.trace(numpyro_model).get_trace()
    np.testing.assert_allclose(tr["y"]["fn"].log_prob(y).sum(), lp.sum(), rtol=1e-13)


@pytest.mark.slow
def test_nuts_style_gradient_with_invalid_region_is_finite():
    t, y = _data(4)

    def model():
        theta = numpyro.sample("theta", dist.Normal(0.5, 1.0))  # can go negative
        m = LinearSDE(jnp.array([[-theta]]), jnp.eye(1), jnp.eye(1), 0.1 * jnp.eye(1))
        numpyro.sample("y", LinearSDEDistribution(m, t), obs=y)

    from numpyro.infer.util import log_density

    def lp(theta):
        return log_density(model, (), {}, {"theta": theta})[0]

    v, g = jax.value_and_grad(lp)(-0.5)  # drift +0.5: unstable, stationary start invalid
    assert v == -jnp.inf and jnp.isfinite(g)
    v, g = jax.value_and_grad(lp)(0.5)
    assert jnp.isfinite(v) and jnp.isfinite(g)


def test_bad_value_shape_raises():
    t, y = _data()
    d = LinearSDEDistribution(_model(), t)
    with pytest.raises(ValueError, match="value must have shape"):
        d.log_prob(y[:, [0, 0]])
    with pytest.raises(TypeError, match="LinearSDE"):
        LinearSDEDistribution("ou", t)
