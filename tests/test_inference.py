"""Inference workflow: NUTS recovers parameters, MAP + Laplace, derived quantities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.linalg

import kalmanad
from kalmanad import LinearSDE
from kalmanad.distributions import LinearSDEDistribution
from kalmanad.inference import discrete_time_effects, fit_map, fit_nuts, smoothed_states


def ou_model(times, y=None, inputs=None):
    theta = numpyro.sample("theta", dist.LogNormal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    m = LinearSDE(
        drift=-theta * jnp.eye(1),
        diffusion=2 * theta * sigma**2 * jnp.eye(1),
        observation=jnp.eye(1),
        observation_noise=noise**2 * jnp.eye(1),
    )
    numpyro.sample("y", LinearSDEDistribution(m, times), obs=y)


TRUTH = {"theta": 0.8, "sigma": 1.2, "noise": 0.3}


@pytest.fixture(scope="module")
def ou_data():
    rng = np.random.default_rng(11)
    times = np.cumsum(rng.exponential(0.4, 300))
    m = LinearSDE(
        [[-TRUTH["theta"]]],
        [[2 * TRUTH["theta"] * TRUTH["sigma"] ** 2]],
        [[1.0]],
        [[TRUTH["noise"] ** 2]],
    )
    y = np.asarray(kalmanad.simulate(m, times, jax.random.PRNGKey(5)).observations)
    return times, y


@pytest.mark.slow
def test_fit_nuts_recovers_ou_parameters(ou_data):
    times, y = ou_data
    idata = fit_nuts(
        ou_model,
        times,
        y,
        num_warmup=300,
        num_samples=300,
        num_chains=2,
        seed=1,
        progress_bar=False,
    )
    for k, v in TRUTH.items():
        draws = idata.posterior[k].values.reshape(-1)
        lo, hi = np.quantile(draws, [0.025, 0.975])
        assert lo < v < hi, (k, lo, hi, v)
    assert int(idata.sample_stats["diverging"].values.sum()) == 0
    ll = idata.log_likelihood["y"]
    assert ll.shape == (2, 300, 300)
    # The pointwise terms sum to the log-likelihood at each draw.
    draw = {k: jnp.asarray(idata.posterior[k].values[0, 0]) for k in TRUTH}
    m = LinearSDE(
        -draw["theta"] * jnp.eye(1),
        2 * draw["theta"] * draw["sigma"] ** 2 * jnp.eye(1),
        jnp.eye(1),
        draw["noise"] ** 2 * jnp.eye(1),
    )
    np.testing.assert_allclose(
        ll.values[0, 0].sum(), kalmanad.log_likelihood(m, times, y), rtol=1e-10
    )


@pytest.mark.slow
def test_fit_map_and_laplace(ou_data):
    times, y = ou_data
    res = fit_map(ou_model, times, y, seed=0, num_draws=500)
    assert res.success
    for k, v in TRUTH.items():
        draws = np.asarray(res.draws[k])
        lo, hi = np.quantile(draws, [0.005, 0.995])
        assert lo < v < hi, (k, lo, hi, v)
    assert res.cov.shape == (3, 3)
    assert np.all(np.linalg.eigvalsh(res.cov) > 0)


@pytest.mark.slow
def test_smoothed_states_from_map_draws(ou_data):
    times, y = ou_data
    res = fit_map(ou_model, times, y, seed=0, num_draws=20)
    means, covs = smoothed_states(ou_model, res, times, y)
    assert means.shape == (20, 300, 1)
    assert covs.shape == (20, 300, 1, 1)
    assert np.all(np.isfinite(means))


def test_discrete_time_effects_are_matrix_exponentials():
    rng = np.random.default_rng(0)
    drift = rng.standard_normal((5, 2, 2)) - 2 * np.eye(2)
    dts = np.array([0.0, 0.5, 1.0, 3.0])
    eff = discrete_time_effects(drift, dts)
    assert eff.shape == (5, 4, 2, 2)
    for d in range(5):
        for k, dt in enumerate(dts):
            np.testing.assert_allclose(
                eff[d, k], scipy.linalg.expm(drift[d] * dt), rtol=1e-12, atol=1e-14
            )


def test_laplace_hessian_by_gradient_differences_matches_exact():
    from kalmanad.inference import _hessian_by_gradient_differences

    def f(x):
        return jnp.sum(jnp.exp(0.3 * x) * x**2) + x[0] * jnp.sin(x[1]) + 0.5 * x[1] * x[2] ** 3

    x = jnp.array([0.4, -1.3, 2.0])
    h = _hessian_by_gradient_differences(jax.jit(jax.value_and_grad(f)), x)
    np.testing.assert_allclose(h, jax.hessian(f)(x), rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(h, h.T)


def test_fit_map_recovers_from_an_invalid_first_trial_step():
    """A 3-latent CT-VAR panel (5 subjects x 20 times): from the prior median, the first
    L-BFGS-B trial step makes the drift unstable (density -inf). L-BFGS-B then stopped
    at the start (mu = the prior median's) and reported success; the mode must be found:
    the observation intercepts within 0.5 of the truth (their posterior sd is ~0.15)."""
    n = 3
    off = [(i, j) for i in range(n) for j in range(n) if i != j]
    rows, cols = np.array([i for i, _ in off]), np.array([j for _, j in off])
    drift = np.array([[-0.8, 0.3, 0.0], [-0.4, -0.5, 0.2], [0.1, 0.0, -0.6]])
    mu = np.array([1.0, 0.0, -1.0])

    def sde(drift, sigma, mu, noise):
        return LinearSDE(
            drift=drift,
            diffusion=jnp.diag(sigma**2),
            observation=jnp.eye(n),
            observation_noise=jnp.diag(noise**2),
            observation_intercept=mu,
        )

    rng = np.random.default_rng(1)
    times = np.cumsum(rng.exponential(0.5, (5, 20)), axis=1)
    truth = sde(jnp.asarray(drift), jnp.array([0.8, 0.6, 0.5]), jnp.asarray(mu), 0.3 * jnp.ones(n))
    y = np.asarray(kalmanad.simulate(truth, times, jax.random.key(1)).observations)

    def model(times, y=None):
        auto = numpyro.sample("auto", dist.LogNormal(-0.5, 0.75).expand([n]).to_event(1))
        cross = numpyro.sample("cross", dist.Normal(0.0, 0.5).expand([len(off)]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0).expand([n]).to_event(1))
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0).expand([n]).to_event(1))
        noise = numpyro.sample("noise", dist.HalfNormal(0.5).expand([n]).to_event(1))
        a = jnp.diag(-auto).at[rows, cols].set(cross)
        with numpyro.plate("subjects", times.shape[0]):
            numpyro.sample("y", LinearSDEDistribution(sde(a, sigma, mu, noise), times), obs=y)

    res = fit_map(model, times, y, num_starts=1, num_draws=0)
    assert res.success
    np.testing.assert_allclose(res.params["mu"], mu, atol=0.5)
    assert np.all(np.linalg.eigvalsh(res.cov) > 0)
