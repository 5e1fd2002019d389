"""A user's own NumPyro model, built from ``LinearSDE`` and ``LinearSDEDistribution``,
through every NumPyro tool: samplers, initialisation strategies, SVI guides,
``Predictive``, ``log_likelihood`` (into ArviZ's LOO) and the effect handlers.

The priors put about half their mass on unstable drifts, where a stationary start is
undefined: NumPyro's eager initial trace then meets concrete invalid values, which must
give a ``-inf`` log-density (and another start), never an exception.
"""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import HMC, MCMC, NUTS, SVI, Predictive, Trace_ELBO, autoguide
from numpyro.infer import initialization as init
from numpyro.infer.util import initialize_model, log_density

import kalmanad
from kalmanad import LinearSDE
from kalmanad.distributions import LinearSDEDistribution
from kalmanad.inference import pointwise_log_likelihood

# ---------------------------------------------------------------------------- models


def ou_model(times, y=None):
    """OU process; P(a > 0) = 1/2 under the prior, an unstable drift."""
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    r = numpyro.sample("r", dist.HalfNormal(0.5))
    sde = LinearSDE(
        drift=jnp.reshape(a, (1, 1)),
        diffusion=jnp.reshape(s**2, (1, 1)),
        observation=jnp.eye(1),
        observation_noise=jnp.reshape(r**2, (1, 1)),
    )
    numpyro.sample("y", LinearSDEDistribution(sde, times), obs=y)


def _drift_2x2():
    diag = numpyro.sample("drift_diag", dist.Normal(-0.2, 1.0).expand([2]).to_event(1))
    cross = numpyro.sample("drift_cross", dist.Normal(0.0, 0.5).expand([2]).to_event(1))
    return jnp.array([[diag[0], cross[0]], [cross[1], diag[1]]])


def ctvar_model(times, y=None, inputs=None):
    """CT-VAR: 2 latents, 3 indicators (one free loading), one input on the drift."""
    drift = _drift_2x2()
    sd = numpyro.sample("sd", dist.HalfNormal(1.0).expand([2]).to_event(1))
    loading = numpyro.sample("loading", dist.Normal(1.0, 0.5))
    effect = numpyro.sample("input_effect", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    noise = numpyro.sample("noise_sd", dist.HalfNormal(0.5).expand([3]).to_event(1))
    observation = jnp.array([[1.0, 0.0], [loading, 0.0], [0.0, 1.0]])
    sde = LinearSDE(
        drift=drift,
        diffusion=jnp.diag(sd**2),
        observation=observation,
        observation_noise=jnp.diag(noise**2),
        input_effect=effect[:, None],
    )
    numpyro.sample("y", LinearSDEDistribution(sde, times, inputs), obs=y)


N_SUBJECTS = 12


def panel_model(times, y=None, subject_mask=True):
    """Hierarchical panel: shared 2x2 drift, subject intercepts (non-centred), plate + vmap.

    ``subject_mask``: (S,) booleans; the observations of the False subjects are masked.
    """
    drift = _drift_2x2()
    sd = numpyro.sample("sd", dist.HalfNormal(1.0).expand([2]).to_event(1))
    noise = numpyro.sample("noise_sd", dist.HalfNormal(0.5))
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0).expand([2]).to_event(1))
    with numpyro.plate("subject", times.shape[0]):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

        def subject(intercept):
            return LinearSDE(
                drift=drift,
                diffusion=jnp.diag(sd**2),
                observation=jnp.eye(2),
                observation_noise=noise**2 * jnp.eye(2),
                drift_intercept=intercept,
            )

        sde = jax.vmap(subject)(mu + tau * z)
        with handlers.mask(mask=subject_mask):
            numpyro.sample("y", LinearSDEDistribution(sde, times), obs=y)


# ------------------------------------------------------------------------------ data
OU_TRUTH = {"a": -0.6, "s": 1.0, "r": 0.3}
CTVAR_TRUTH = {
    "drift": np.array([[-0.8, 0.3], [0.0, -0.5]]),
    "sd": np.array([0.8, 0.6]),
    "loading": 0.7,
    "input_effect": np.array([1.0, -0.5]),
    "noise_sd": np.array([0.2, 0.2, 0.2]),
}
PANEL_TRUTH = {
    "drift": np.array([[-0.7, 0.2], [-0.1, -0.5]]),
    "sd": np.array([0.7, 0.7]),
    "noise_sd": 0.2,
    "mu": np.array([0.5, -0.3]),
    "tau": np.array([0.4, 0.3]),
}


def _times(rng, shape, horizon):
    return np.sort(rng.uniform(0.0, horizon, shape), axis=-1)


def ou_data(T=150):
    rng = np.random.default_rng(0)
    times = _times(rng, T, 3.0 * T / 10)
    truth = LinearSDE(
        drift=[[OU_TRUTH["a"]]],
        diffusion=[[OU_TRUTH["s"] ** 2]],
        observation=[[1.0]],
        observation_noise=[[OU_TRUTH["r"] ** 2]],
    )
    y = kalmanad.simulate(truth, times, jax.random.PRNGKey(1)).observations
    return (times,), {"y": np.asarray(y)}


def ctvar_data(T=120):
    rng = np.random.default_rng(1)
    times = _times(rng, T, T / 4)
    inputs = (times > times[T // 2]).astype(float)[:, None]  # a step intervention
    t = CTVAR_TRUTH
    truth = LinearSDE(
        drift=t["drift"],
        diffusion=np.diag(t["sd"] ** 2),
        observation=[[1.0, 0.0], [t["loading"], 0.0], [0.0, 1.0]],
        observation_noise=np.diag(t["noise_sd"] ** 2),
        input_effect=t["input_effect"][:, None],
    )
    y = kalmanad.simulate(truth, times, jax.random.PRNGKey(2), inputs=inputs).observations
    y = np.array(y)
    y[rng.random(y.shape) < 0.05] = np.nan  # scattered missing values
    return (times,), {"y": y, "inputs": inputs}


def panel_data(S=N_SUBJECTS, T=25):
    rng = np.random.default_rng(2)
    times = _times(rng, (S, T), 12.0)
    t = PANEL_TRUTH
    intercepts = t["mu"] + t["tau"] * rng.standard_normal((S, 2))
    truth = jax.vmap(
        lambda c: LinearSDE(
            drift=t["drift"],
            diffusion=np.diag(t["sd"] ** 2),
            observation=np.eye(2),
            observation_noise=t["noise_sd"] ** 2 * np.eye(2),
            drift_intercept=c,
        )
    )(jnp.asarray(intercepts))
    y = kalmanad.simulate(truth, times, jax.random.PRNGKey(3)).observations
    return (times,), {"y": np.asarray(y)}


MODELS = {
    "ou": (ou_model, ou_data),
    "ctvar": (ctvar_model, ctvar_data),
    "panel": (panel_model, panel_data),
}


def _observed_sde(model, args, kwargs, key, substitute_fn=None):
    """The LinearSDEDistribution of the observed site in one eager run of ``model``."""
    seeded = handlers.seed(model, key)
    if substitute_fn is not None:
        seeded = handlers.substitute(seeded, substitute_fn=substitute_fn)
    fn = handlers.trace(seeded).get_trace(*args, **kwargs)["y"]["fn"]
    while not isinstance(fn, LinearSDEDistribution):
        fn = fn.base_dist
    return fn


# --------------------------------------------------------------- the invalid start


def test_eager_errors_outside_numpyro_are_unchanged():
    with pytest.raises(ValueError, match="stationary initial state needs a stable drift"):
        LinearSDE(drift=[[0.5]], diffusion=[[1.0]], observation=[[1.0]], observation_noise=[[1.0]])
    with pytest.raises(ValueError, match="observation_noise must be positive semi-definite"):
        LinearSDE(
            drift=[[-0.5]], diffusion=[[1.0]], observation=[[1.0]], observation_noise=[[-1.0]]
        )
    with pytest.raises(ValueError, match="diffusion must be finite"):
        LinearSDE(
            drift=[[-0.5]], diffusion=[[np.nan]], observation=[[1.0]], observation_noise=[[1.0]]
        )


@pytest.mark.parametrize(
    "fields",
    [
        {"drift": [[0.5]]},  # unstable, stationary start
        {"observation_noise": [[-1.0]]},  # indefinite
        {"diffusion": [[np.nan]]},  # not finite
    ],
    ids=["unstable", "indefinite", "nan"],
)
def test_invalid_values_inside_numpyro_give_minus_inf(fields):
    (times,), kw = ou_data(T=20)
    values = {"drift": [[-0.5]], "diffusion": [[1.0]], "observation": [[1.0]]}
    values["observation_noise"] = [[0.1]]
    values.update(fields)

    def model(y=None, validate_args=None):
        sde = LinearSDE(**values)
        numpyro.sample("y", LinearSDEDistribution(sde, times, validate_args=validate_args), obs=y)

    # An eager NumPyro run (what initialisation, Predictive and the handlers do).
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(y=kw["y"])
    assert tr["y"]["fn"].log_prob(kw["y"]) == -np.inf
    lp, _ = log_density(model, (), {"y": kw["y"]}, {})
    assert lp == -np.inf
    # An explicit validate_args=True asks for the named error instead.
    with pytest.raises(ValueError, match=r"must be|needs a stable drift"):
        handlers.trace(handlers.seed(model, 0)).get_trace(y=kw["y"], validate_args=True)
    # Prior predictive draws at invalid parameters are NaN, not a made-up series.
    draws = Predictive(model, num_samples=3)(jax.random.PRNGKey(0))["y"]
    assert draws.shape == (3, 20, 1) and np.all(np.isnan(draws))


def test_validate_args_names_the_subject_of_a_batched_model():
    (times,), kw = panel_data(S=3, T=5)
    drifts = jnp.array([[[-0.5]], [[0.4]], [[-0.5]]])  # subject 1 unstable
    sde = jax.vmap(
        lambda a: LinearSDE(
            drift=a, diffusion=jnp.eye(1), observation=jnp.eye(1), observation_noise=jnp.eye(1)
        )
    )(drifts)
    y = kw["y"][..., :1]
    d = LinearSDEDistribution(sde, times)
    lp = np.asarray(d.log_prob(y))
    assert np.isneginf(lp[1]) and np.all(np.isfinite(lp[[0, 2]]))
    with pytest.raises(ValueError, match=r"subject \(1,\).*needs a stable drift"):
        LinearSDEDistribution(sde, times, validate_args=True)


def test_gradient_is_finite_at_invalid_parameters():
    args, kw = ou_data(T=30)

    def log_joint(params):
        return log_density(ou_model, args, kw, params)[0]

    at = {"a": jnp.array(0.5), "s": jnp.array(1.0), "r": jnp.array(0.3)}
    value, grad = jax.value_and_grad(log_joint)(at)
    assert value == -np.inf
    assert all(np.isfinite(g) for g in jax.tree.leaves(grad))


def _unwrap(fn):
    while not isinstance(fn, LinearSDEDistribution):
        fn = fn.base_dist
    return fn


@pytest.mark.parametrize("name", ["ou", pytest.param("ctvar", marks=pytest.mark.slow), "panel"])
def test_initialisation_never_crashes(name):
    """NumPyro's default start (init_to_uniform) for 50 keys.

    The eager run of the model that NumPyro's initialisation begins with (where invalid
    concrete values would otherwise raise) never raises; its log-density is -inf exactly for
    the subjects whose start is invalid; and NumPyro moves on from an invalid start.
    """
    model, make_data = MODELS[name]
    args, kw = make_data()
    invalid_keys = []
    for k in range(50):
        key = jax.random.PRNGKey(k)
        start = handlers.substitute(handlers.seed(model, key), substitute_fn=init.init_to_uniform)
        site = handlers.trace(start).get_trace(*args, **kw)["y"]
        d = _unwrap(site["fn"])
        # The priors leave only the drift's stability in doubt: numpy's eigenvalues
        # are the reference (the subjects share the drift).
        drifts = np.asarray(d.model.drift).reshape(-1, *d.model.drift.shape[-2:])
        ok = np.array([np.linalg.eigvals(a).real.max() < 0 for a in drifts])
        ok = ok.reshape(d.batch_shape)
        lp = np.asarray(d.log_prob(site["value"]))
        np.testing.assert_array_equal(np.isneginf(lp), ~np.broadcast_to(ok, lp.shape))
        assert np.all(np.isfinite(lp[np.broadcast_to(ok, lp.shape)]))
        if not ok.all():
            invalid_keys.append(k)
    # The test meets the case it is about: about half the starts are invalid.
    assert 10 <= len(invalid_keys) <= 40, invalid_keys
    info = initialize_model(
        jax.random.PRNGKey(invalid_keys[0]), model, model_args=args, model_kwargs=kw
    )
    assert np.isfinite(info.param_info.potential_energy)


# ------------------------------------------------------------------------- samplers


def _ou_posterior_ok(samples):
    for k, v in OU_TRUTH.items():
        draws = np.asarray(samples[k]).reshape(-1)
        lo, hi = np.quantile(draws, [0.005, 0.995])
        assert lo < v < hi, (k, v, lo, hi)


def _run_ou(kernel, chain_method, num_chains=2):
    args, kw = ou_data()
    kwargs = {} if kernel is NUTS else {"num_steps": 8}
    mcmc = MCMC(
        kernel(ou_model, **kwargs),
        num_warmup=150,
        num_samples=150,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), *args, **kw)  # key 0 starts at an unstable drift
    return mcmc


@pytest.fixture(scope="module")
def ou_fit():
    return _run_ou(NUTS, "sequential")


def test_nuts_recovers_ou(ou_fit):
    samples = ou_fit.get_samples()
    assert samples["a"].shape == (300,)
    assert np.all(samples["a"] < 0)
    _ou_posterior_ok(samples)
    assert not np.any(ou_fit.get_extra_fields()["diverging"])


@pytest.mark.parametrize(
    ("kernel", "chain_method"),
    [
        (HMC, "vectorized"),
        pytest.param(NUTS, "vectorized", marks=pytest.mark.slow),
        pytest.param(HMC, "sequential", marks=pytest.mark.slow),
    ],
)
def test_samplers(kernel, chain_method):
    samples = _run_ou(kernel, chain_method).get_samples()
    assert samples["a"].shape == (300,)
    assert np.all(samples["a"] < 0)
    _ou_posterior_ok(samples)


def ou_rate_model(times, y=None):
    """OU with the drift -rate, rate > 0: every point of the prior's support is valid."""
    rate = numpyro.sample("rate", dist.LogNormal(np.log(0.5), 1.0))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    r = numpyro.sample("r", dist.HalfNormal(0.5))
    sde = LinearSDE(
        drift=-jnp.reshape(rate, (1, 1)),
        diffusion=jnp.reshape(s**2, (1, 1)),
        observation=jnp.eye(1),
        observation_noise=jnp.reshape(r**2, (1, 1)),
    )
    numpyro.sample("y", LinearSDEDistribution(sde, times), obs=y)


@pytest.mark.parametrize(
    "strategy",
    [init.init_to_uniform, init.init_to_sample, init.init_to_median],
    ids=["uniform", "sample", "median"],
)
def test_random_init_strategies_move_past_invalid_starts(strategy):
    args, kw = ou_data(T=60)
    mcmc = MCMC(
        NUTS(ou_model, init_strategy=strategy), num_warmup=60, num_samples=40, progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(2), *args, **kw)
    samples = mcmc.get_samples()
    assert np.all(np.isfinite(samples["a"])) and np.all(samples["a"] < 0)


@pytest.mark.parametrize(
    "strategy",
    [
        init.init_to_feasible,
        init.init_to_mean,
        init.init_to_value(values={"rate": 0.7, "s": 1.0, "r": 0.3}),
    ],
    ids=["feasible", "mean", "value"],
)
def test_fixed_init_strategies(strategy):
    args, kw = ou_data(T=60)
    mcmc = MCMC(
        NUTS(ou_rate_model, init_strategy=strategy),
        num_warmup=60,
        num_samples=40,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(2), *args, **kw)
    assert np.all(np.isfinite(mcmc.get_samples()["rate"]))


def test_fixed_invalid_start_is_numpyros_error():
    """A fixed start at an invalid value cannot move: NumPyro's own error, no kalmanad one."""
    args, kw = ou_data(T=30)
    start = init.init_to_value(values={"a": 0.7, "s": 1.0, "r": 0.3})
    mcmc = MCMC(NUTS(ou_model, init_strategy=start), num_warmup=5, num_samples=5)
    with pytest.raises(RuntimeError, match="Cannot find valid initial parameters"):
        mcmc.run(jax.random.PRNGKey(0), *args, **kw)


@pytest.mark.parametrize(
    "guide_cls",
    [
        autoguide.AutoNormal,
        autoguide.AutoDelta,
        autoguide.AutoMultivariateNormal,
        autoguide.AutoLaplaceApproximation,
    ],
)
def test_svi_guides(guide_cls):
    args, kw = ou_data()
    guide = guide_cls(ou_model)
    svi = SVI(ou_model, guide, numpyro.optim.Adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(7), 1500, *args, progress_bar=False, **kw)
    assert np.all(np.isfinite(np.asarray(result.losses[-100:])))
    median = guide.median(result.params)
    assert -1.2 < float(median["a"]) < -0.2
    assert 0.6 < float(median["s"]) < 1.5


# ---------------------------------------------- Predictive, log_likelihood, ArviZ LOO


def test_ou_log_likelihood_per_time_into_loo(ou_fit):
    (times,), kw = ou_data()
    samples = ou_fit.get_samples()
    per_series = numpyro.infer.log_likelihood(ou_model, samples, times, **kw)["y"]
    per_time = pointwise_log_likelihood(ou_model, samples, times, kw["y"])["y"]
    assert per_series.shape == (300,) and per_time.shape == (300, times.shape[0])
    np.testing.assert_allclose(per_time.sum(-1), per_series, rtol=1e-10)
    idata = az.from_dict(
        posterior={k: np.asarray(v) for k, v in ou_fit.get_samples(group_by_chain=True).items()},
        log_likelihood={"y": np.asarray(per_time).reshape(2, 150, -1)},
    )
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo) and loo.elpd_loo < 0


def test_prior_predictive_is_nan_where_the_drift_is_unstable():
    (times,), _ = ou_data(T=40)
    prior = Predictive(ou_model, num_samples=200)(jax.random.PRNGKey(0), times)
    y, a = np.asarray(prior["y"]), np.asarray(prior["a"])
    assert y.shape == (200, 40, 1)
    assert 50 < np.sum(a > 0) < 150
    assert np.all(np.isnan(y[a > 0])) and np.all(np.isfinite(y[a < 0]))


@pytest.fixture(scope="module")
def panel_fit():
    args, kw = panel_data()
    mcmc = MCMC(
        NUTS(panel_model), num_warmup=200, num_samples=200, num_chains=2, progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(8), *args, **kw)
    return mcmc, args, kw


@pytest.mark.slow
def test_panel_posterior_recovers_truth(panel_fit):
    mcmc, _, _ = panel_fit
    samples = mcmc.get_samples()
    diag = np.asarray(samples["drift_diag"])
    truth = np.diag(PANEL_TRUTH["drift"])
    lo, hi = np.quantile(diag, [0.005, 0.995], axis=0)
    assert np.all((lo < truth) & (truth < hi)), (lo, hi, truth)
    lo, hi = np.quantile(np.asarray(samples["mu"]), [0.005, 0.995], axis=0)
    assert np.all((lo < PANEL_TRUTH["mu"]) & (PANEL_TRUTH["mu"] < hi))
    assert not np.any(mcmc.get_extra_fields()["diverging"])


@pytest.mark.slow
def test_predictive_prior_and_posterior(panel_fit):
    mcmc, (times,), kw = panel_fit
    prior = Predictive(panel_model, num_samples=100)(jax.random.PRNGKey(0), times)
    y_prior = np.asarray(prior["y"])
    assert y_prior.shape == (100, N_SUBJECTS, times.shape[1], 2)
    # Draws whose prior drift is unstable are NaN; the others are finite.
    stable = np.array(
        [
            np.max(np.linalg.eigvals(np.array([[d[0], c[0]], [c[1], d[1]]])).real) < 0
            for d, c in zip(prior["drift_diag"], prior["drift_cross"], strict=True)
        ]
    )
    assert 0 < stable.sum() < 100
    assert np.all(np.isfinite(y_prior[stable])) and np.all(np.isnan(y_prior[~stable]))
    post = Predictive(panel_model, mcmc.get_samples())(jax.random.PRNGKey(1), times)
    y_post = np.asarray(post["y"])
    assert y_post.shape == (400, N_SUBJECTS, times.shape[1], 2)
    assert np.all(np.isfinite(y_post))
    # The posterior predictive mean of each subject follows its observed level.
    obs_mean = kw["y"].mean(axis=1)
    pred_mean = y_post.mean(axis=(0, 2))
    assert np.corrcoef(obs_mean.ravel(), pred_mean.ravel())[0, 1] > 0.8


@pytest.mark.slow
def test_log_likelihood_per_subject_and_per_time_into_loo(panel_fit):
    mcmc, (times,), kw = panel_fit
    samples = mcmc.get_samples(group_by_chain=False)
    per_subject = numpyro.infer.log_likelihood(panel_model, samples, times, **kw)["y"]
    assert per_subject.shape == (400, N_SUBJECTS)
    per_time = pointwise_log_likelihood(panel_model, samples, times, kw["y"])["y"]
    assert per_time.shape == (400, N_SUBJECTS, times.shape[1])
    # One-step-ahead densities add up to each subject's log-likelihood.
    np.testing.assert_allclose(per_time.sum(-1), per_subject, rtol=1e-10)

    idata = az.from_numpyro(mcmc)  # its log_likelihood group comes from NumPyro: per subject
    assert idata.log_likelihood["y"].shape == (2, 200, N_SUBJECTS)
    loo_subject = az.loo(idata)
    by_time = az.from_dict(
        posterior={k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()},
        log_likelihood={"y": np.asarray(per_time).reshape(2, 200, N_SUBJECTS, -1)},
    )
    loo_time = az.loo(by_time)
    for loo in (loo_subject, loo_time):
        assert np.isfinite(loo.elpd_loo)
    # The same total log predictive density, split two ways.
    np.testing.assert_allclose(loo_subject.elpd_loo, loo_time.elpd_loo, rtol=0.05)


# -------------------------------------------------------------------------- handlers


def test_handlers():
    (times,), kw = panel_data(S=4, T=10)
    params = {
        "drift_diag": jnp.array([-0.7, -0.5]),
        "drift_cross": jnp.array([0.2, -0.1]),
        "sd": jnp.array([0.7, 0.7]),
        "noise_sd": jnp.array(0.2),
        "mu": jnp.array([0.5, -0.3]),
        "tau": jnp.array([0.4, 0.3]),
        "z": jnp.zeros((4, 2)),
    }

    def y_log_prob(model, p=params):
        tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), p)).get_trace(
            times, y=kw["y"]
        )
        site = tr["y"]
        return site["fn"].log_prob(site["value"]), site

    full, _ = y_log_prob(panel_model)
    assert full.shape == (4,) and np.all(np.isfinite(full))

    # mask: a masked subject's term drops out of the joint density; mask=False
    # around the whole model leaves nothing.
    keep = np.array([True, False, True, True])
    joint = log_density(panel_model, (times,), {"y": kw["y"]}, params)[0]
    masked = log_density(panel_model, (times,), {"y": kw["y"], "subject_mask": keep}, params)[0]
    np.testing.assert_allclose(joint - masked, full[1], rtol=1e-10)
    nothing = log_density(handlers.mask(panel_model, mask=False), (times,), {"y": kw["y"]}, params)
    assert nothing[0] == 0.0

    # scale: the observation term is multiplied.
    scaled = log_density(handlers.scale(panel_model, 2.0), (times,), {"y": kw["y"]}, params)[0]
    np.testing.assert_allclose(scaled, 2.0 * joint, rtol=1e-10)

    # substitute / condition at an unstable drift: -inf with finite gradients, no raise.
    bad = dict(params, drift_diag=jnp.array([0.4, 0.3]))  # trace > 0: unstable
    value, grad = jax.value_and_grad(
        lambda p: log_density(panel_model, (times,), {"y": kw["y"]}, p)[0]
    )(bad)
    assert value == -np.inf
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
    conditioned = handlers.condition(panel_model, data={"drift_diag": bad["drift_diag"]})
    tr = handlers.trace(handlers.seed(conditioned, 0)).get_trace(times, y=kw["y"])
    assert tr["drift_diag"]["is_observed"]
    assert np.all(tr["y"]["fn"].log_prob(kw["y"]) == -np.inf)
    # condition on the data instead of passing y.
    cond_y = handlers.condition(panel_model, data={"y": kw["y"]})
    np.testing.assert_allclose(log_density(cond_y, (times,), {}, params)[0], joint, rtol=1e-12)

    # block: the observation site is hidden from an outer trace.
    blocked = handlers.block(panel_model, hide=["y"])
    tr = handlers.trace(handlers.substitute(handlers.seed(blocked, 0), params)).get_trace(
        times, y=kw["y"]
    )
    assert "y" not in tr and "drift_diag" in tr
