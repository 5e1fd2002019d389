"""Inference workflow: NUTS recovers parameters, MAP + Laplace, derived quantities."""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

import kalmanad
from kalmanad import LinearSDE
from kalmanad.distributions import LinearSDEDistribution
from kalmanad.inference import (
    _laplace_draws,
    _map_start,
    discrete_time_effects,
    fit_map,
    fit_nuts,
    smoothed_states,
)


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


@pytest.mark.slow
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


def test_fit_nuts_rejects_an_unknown_init(ou_data):
    times, y = ou_data
    with pytest.raises(ValueError, match="init must be 'median' or 'map'"):
        fit_nuts(ou_model, times, y, init="prior", progress_bar=False)


def test_map_start_gives_each_chain_its_own_laplace_draw(ou_data):
    times, y = ou_data
    found, init, inverse_mass = _map_start(
        ou_model, times, {"y": y}, num_chains=4, dense_mass=True, seed=3
    )
    mode = np.asarray(found.flat)
    starts = np.asarray(jax.vmap(lambda d: ravel_pytree(d)[0])(init))
    # The same mode as fit_map's from one start with the same seed.
    res = fit_map(ou_model, times, y, seed=3, num_starts=1, num_draws=0)
    np.testing.assert_allclose(mode, ravel_pytree(res.unconstrained)[0], rtol=1e-6, atol=1e-8)
    assert set(init) == {"theta", "sigma", "noise"} and init["theta"].shape == (4,)
    # Distinct chains, each a plausible draw of N(mode, H⁻¹): whitened by the Cholesky
    # factor of H, a draw is standard normal.
    assert len({tuple(s) for s in starts}) == 4
    z = (starts - mode) @ found.chol
    assert np.all(np.abs(z) < 5.0) and np.any(np.abs(z) > 0.05)
    for s in starts:
        assert np.isfinite(float(found.value_and_grad(jnp.asarray(s))[0]))
    # One chain: no chain axis (NumPyro's MCMC.run convention).
    _, one, diagonal = _map_start(ou_model, times, {"y": y}, num_chains=1, dense_mass=False, seed=3)
    assert np.shape(one["theta"]) == ()
    # The initial inverse mass matrix: H⁻¹, or its diagonal without a dense mass.
    np.testing.assert_array_equal(np.asarray(inverse_mass), found.cov)
    np.testing.assert_array_equal(np.asarray(diagonal), np.diag(found.cov))


def test_map_start_redraws_starts_where_the_density_is_invalid():
    # x ~ N(0, 1) cut at 0.5: the mode is 0 with unit Laplace variance, so about a third
    # of the Laplace draws fall where the density is zero (potential +inf).
    def cut_model(times, y=None):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("cut", jnp.where(x < 0.5, 0.0, -jnp.inf))

    found, init, _ = _map_start(
        cut_model, np.zeros(1), {"y": None}, num_chains=8, dense_mass=False, seed=0
    )
    np.testing.assert_allclose(np.asarray(found.flat), 0.0, atol=1e-6)
    candidates = _laplace_draws(found, 80, np.random.default_rng([0, 1]))
    assert np.sum(candidates[:8, 0] >= 0.5) > 0  # without the redraw a chain would start there
    x = np.asarray(init["x"])
    assert x.shape == (8,) and np.all(x < 0.5) and len(set(x.tolist())) == 8


@pytest.mark.parametrize("dense_mass", [pytest.param(False, marks=pytest.mark.slow), True])
def test_fit_nuts_from_the_map(ou_data, dense_mass):
    times, y = ou_data
    idata = fit_nuts(
        ou_model,
        times,
        y,
        init="map",
        dense_mass=dense_mass,
        num_warmup=150,
        num_samples=150,
        num_chains=2,
        seed=1,
        progress_bar=False,
        pointwise=False,
    )
    attrs = idata.posterior.attrs
    res = fit_map(ou_model, times, y, seed=1, num_starts=1, num_draws=0)
    assert attrs["init"] == "map" and attrs["map_success"] == 1
    np.testing.assert_allclose(attrs["map_log_density"], res.log_density, rtol=1e-8)
    assert attrs["sampling_time"] > 0
    stats = idata.sample_stats
    for name in ("diverging", "n_steps", "energy", "acceptance_rate", "lp", "step_size"):
        assert stats[name].shape == (2, 150), name
    assert int(stats["diverging"].values.sum()) == 0
    assert np.all(az.bfmi(idata) > 0.3)
    assert float(az.rhat(idata).to_array().max()) < 1.05
    for k, v in TRUTH.items():
        lo, hi = np.quantile(idata.posterior[k].values.reshape(-1), [0.005, 0.995])
        assert lo < v < hi, (k, lo, hi, v)
