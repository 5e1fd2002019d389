# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: an Ornstein–Uhlenbeck process on irregular times
#
# The Ornstein–Uhlenbeck (OU) process is the simplest continuous-time model of a
# quantity that is pulled back towards a long-run mean and kicked by noise:
#
# $$
# dx = \theta(\mu - x)\,dt + \sqrt{2\theta}\,\sigma\,dW, \qquad
# y_k = x(t_k) + e_k,\quad e_k \sim N(0, \text{noise}^2).
# $$
#
# $\theta$ is the mean-reversion rate ($1/\theta$ the correlation time), $\mu$ the
# long-run mean, $\sigma$ the stationary standard deviation of $x$. Observations come
# at **irregular times**: a discrete-time AR(1) would need equally spaced data, but the
# continuous-time model has an exact transition over any gap $\Delta$,
# $x(t+\Delta) \mid x(t) \sim N\big(\mu + e^{-\theta\Delta}(x(t) - \mu),\;
# \sigma^2(1 - e^{-2\theta\Delta})\big)$. kalmanad computes these transitions for any
# linear SDE (matrix exponentials, Van Loan's method) and runs the Kalman filter over
# them, which gives the exact log-likelihood and its gradient, so NumPyro's NUTS can
# sample the posterior of $(\theta, \mu, \sigma, \text{noise})$.
#
# This notebook simulates data, writes the model as a ten-line NumPyro function, samples
# it with NUTS, checks the fit with a posterior predictive check, and forecasts.
#
# Set `KALMANAD_EXAMPLES_QUICK=1` for a quick run with fewer draws (used by the tests).

# %%
import os
import time

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import Predictive

import kalmanad
from kalmanad.distributions import LinearSDEDistribution
from kalmanad.inference import forecast_draws
from kalmanad.plots import plot_forecast, plot_posterior_predictive

jax.config.update("jax_enable_x64", True)  # Kalman filters want double precision

QUICK = os.environ.get("KALMANAD_EXAMPLES_QUICK") == "1"
plt.rcParams["figure.dpi"] = 72
SEED = 0
print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## Simulated data
#
# A `kalmanad.LinearSDE` holds the continuous-time matrices: the drift $A$, the
# diffusion *rate* $GG^\top$, the observation matrix $H$, the measurement-noise
# covariance $R$, and intercepts. Without an initial state the process starts from its
# stationary distribution. `kalmanad.simulate` draws exactly from the model at the given
# times (no Euler error). The gaps are exponential with mean 0.5.

# %%
truth = {"theta": 0.5, "mu": 2.0, "sigma": 1.0, "noise": 0.3}


def ou_sde(theta, mu, sigma, noise):
    """The OU model as a LinearSDE (1 state, 1 channel)."""
    return kalmanad.LinearSDE(
        drift=-theta * jnp.eye(1),
        drift_intercept=theta * mu * jnp.ones(1),
        diffusion=2 * theta * sigma**2 * jnp.eye(1),  # the rate G Gᵀ
        observation=jnp.eye(1),
        observation_noise=noise**2 * jnp.eye(1),
    )


rng = np.random.default_rng(SEED)
T = 120 if QUICK else 200
times = np.cumsum(rng.exponential(0.5, size=T))
# jax.jit compiles the simulation once instead of running it op by op
sim = jax.jit(kalmanad.simulate)(ou_sde(**truth), times, jax.random.PRNGKey(SEED))
y = np.asarray(sim.observations)  # (T, 1)
print(
    f"{T} observations over {times[-1]:.1f} time units; gaps from "
    f"{np.diff(times).min():.3f} to {np.diff(times).max():.2f}"
)

fig, ax = plt.subplots(figsize=(8, 2.6))
ax.plot(times, np.asarray(sim.states)[:, 0], color="C0", lw=1, label="latent x(t)")
ax.plot(times, y[:, 0], "o", ms=3, color="k", label="observations")
ax.set_xlabel("time")
ax.legend(frameon=False)
fig.tight_layout()

# %% [markdown]
# The exact log-likelihood at any parameter value is one call, a JAX function that
# `jax.grad`, `jax.jit` and `jax.vmap` can transform (NUTS uses its gradient):

# %%
print("log-likelihood at the truth:", float(kalmanad.log_likelihood(ou_sde(**truth), times, y)))

# %% [markdown]
# ## The Bayesian model and NUTS
#
# The NumPyro model samples the parameters from their priors, builds the SDE and
# observes the data through `LinearSDEDistribution`, whose `log_prob` is the Kalman
# log-likelihood. `kalmanad.fit_nuts` runs NUTS and returns ArviZ `InferenceData`
# (with the pointwise log-likelihood, ready for `az.loo`). The same model is in the zoo
# as a TOML spec: `kalmanad.load_model("ou")`.


# %%
def model(times, y=None):
    theta = numpyro.sample("theta", dist.LogNormal(0.0, 1.0))  # mean-reversion rate
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))  # long-run mean
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))  # stationary sd
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))  # measurement sd
    numpyro.sample("y", LinearSDEDistribution(ou_sde(theta, mu, sigma, noise), times), obs=y)


settings = (
    dict(num_warmup=150, num_samples=150, num_chains=1)
    if QUICK
    else dict(num_warmup=500, num_samples=500, num_chains=2)
)
start = time.perf_counter()
idata = kalmanad.fit_nuts(
    model, times, y, seed=SEED, progress_bar=False, pointwise=False, **settings
)
print(f"NUTS {settings}: {time.perf_counter() - start:.1f} s (compilation included)")
summary = az.summary(idata, var_names=list(truth), round_to=3)
summary.insert(0, "truth", [truth[k] for k in summary.index])
print(summary.to_string())

# %%
axes = az.plot_trace(idata, var_names=list(truth), compact=True, figsize=(7, 4.8))
plt.tight_layout()

# %% [markdown]
# ## Posterior predictive check
#
# Replicated data sets drawn from the model at posterior draws should look like the
# observed one. `numpyro.infer.Predictive` simulates the `"y"` site (exactly, through
# the same discretisation the likelihood uses). About 90% of the observations should lie
# in the 90% band of the replicates, and their marginal distribution should match.

# %%
posterior = {k: v.values.reshape(-1) for k, v in idata.posterior[list(truth)].items()}
keep = np.linspace(0, len(posterior["theta"]) - 1, 100).astype(int)
posterior = {k: v[keep] for k, v in posterior.items()}
replicates = Predictive(model, posterior)(jax.random.PRNGKey(SEED + 1), times)["y"]
print("replicates:", replicates.shape)
fig = plot_posterior_predictive(times, y, replicates, names=["y"], title="Posterior predictive")

# %%
fig = plot_posterior_predictive(times, y, replicates, kind="density", names=["y"])

# %% [markdown]
# ## Forecast
#
# `forecast_draws` filters the data at each posterior draw and propagates the last
# filtered state to the future times. `plot_forecast` pools the draws into a band of
# the posterior mixture, so parameter uncertainty is included. (The smoother,
# `kalmanad.inference.smoothed_states`, is shown in the sunspots and CO₂ examples.)

# %%
new_times = times[-1] + np.linspace(0.25, 8.0, 32)
fc = forecast_draws(model, idata, times, y, new_times, max_draws=100)
tail = times > times[-1] - 20
fig = plot_forecast(
    times[tail],
    y[tail],
    new_times,
    fc.observation_mean,
    fc.observation_cov,
    names=["y"],
    title="Forecast with 90% predictive band",
)
