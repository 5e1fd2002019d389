"""NonlinearSDEDistribution: log_prob/gradients, -inf for invalid parameters, sampling,
and NUTS recovering the parameters of simulated logistic-growth data (slow)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

from kalmanad.distributions import NonlinearSDEDistribution
from kalmanad.nonlinear import NonlinearSDE, nonlinear_log_likelihood, simulate_nonlinear


def logistic_drift(x, u, t, p):
    return p["r"] * x * (1.0 - x / p["K"])


def multiplicative(x, t, p):
    return p["sigma"] * x[:, None]


def identity(x, u, p):
    return x


def logistic_sde(r, sigma, noise=0.04, K=10.0):
    return NonlinearSDE(
        drift=logistic_drift,
        diffusion=multiplicative,
        observation=identity,
        observation_noise=jnp.reshape(noise, (1, 1)),
        initial_mean=[1.0],
        initial_cov=[[0.05]],
        params={"r": r, "K": K, "sigma": sigma},
        max_dt=0.1,
    )


def numpyro_model(times, y=None):
    r = numpyro.sample("r", dist.LogNormal(0.0, 0.5))
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.3))
    numpyro.sample("y", NonlinearSDEDistribution(logistic_sde(r, sigma), times), obs=y)


TIMES = np.linspace(0.0, 12.0, 49)


def test_log_prob_matches_the_filter_and_gradients_are_finite():
    model = logistic_sde(1.0, 0.1)
    y = simulate_nonlinear(model, TIMES, jax.random.key(0)).observations
    d = NonlinearSDEDistribution(model, TIMES)
    assert d.batch_shape == () and d.event_shape == (49, 1)
    np.testing.assert_allclose(d.log_prob(y), nonlinear_log_likelihood(model, TIMES, y))
    np.testing.assert_allclose(jnp.sum(d.pointwise_log_prob(y)), d.log_prob(y), rtol=1e-12)

    def lp(theta):
        r, sigma, noise = theta
        return NonlinearSDEDistribution(logistic_sde(r, sigma, noise), TIMES).log_prob(y)

    value, grad = jax.value_and_grad(lp)(jnp.array([1.0, 0.1, 0.04]))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # invalid parameter values: -inf with finite gradients (no exception inside a model)
    for bad in ([1.0, 0.1, -0.04], [1.0, jnp.nan, 0.04]):
        with numpyro.handlers.seed(rng_seed=0):
            value, grad = jax.value_and_grad(lp)(jnp.array(bad))
        assert value == -jnp.inf
        assert np.all(np.isfinite(grad))
    draws = d.sample(jax.random.key(1), (3,))
    assert draws.shape == (3, 49, 1) and np.all(np.isfinite(draws))


def test_the_numpyro_model_runs_and_rejects_invalid_starts():
    y = simulate_nonlinear(logistic_sde(1.0, 0.1), TIMES, jax.random.key(0)).observations
    tr = numpyro.handlers.trace(numpyro.handlers.seed(numpyro_model, 0)).get_trace(TIMES, y)
    assert np.isfinite(tr["y"]["fn"].log_prob(y))
    with pytest.raises(TypeError, match="NonlinearSDE"):
        NonlinearSDEDistribution("not a model", TIMES)
    with pytest.raises(ValueError, match="method must be one of"):
        NonlinearSDEDistribution(logistic_sde(1.0, 0.1), TIMES, method="auto")


@pytest.mark.slow
def test_nuts_recovers_logistic_growth_parameters():
    truth = {"r": 0.8, "sigma": 0.15}
    times = np.linspace(0.0, 15.0, 61)
    y = simulate_nonlinear(
        logistic_sde(truth["r"], truth["sigma"]), times, jax.random.key(3), max_dt=0.005
    ).observations
    mcmc = MCMC(NUTS(numpyro_model), num_warmup=300, num_samples=400, progress_bar=False)
    mcmc.run(jax.random.key(4), times, y)
    draws = mcmc.get_samples()
    for name, value in truth.items():
        lo, hi = np.quantile(draws[name], [0.01, 0.99])
        assert lo < value < hi, (name, value, lo, hi)
