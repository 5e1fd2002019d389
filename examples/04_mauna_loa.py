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
# # Mauna Loa CO₂: a trend and a seasonal cycle as one linear SDE
#
# The weekly CO₂ concentration measured at Mauna Loa since 1958 (the Keeling curve;
# `statsmodels.datasets.co2`, 1958–2001, in ppm) rises steadily, with a seasonal cycle
# from the growth and decay of northern-hemisphere vegetation. Some weeks are missing.
#
# We build the model from continuous-time components, stacked into one state vector:
#
# * **a local linear trend**: a level driven by a slowly wandering slope,
#   $d\,\ell = s\,dt + \sigma_\ell\,dW_1$, $d s = \sigma_s\,dW_2$ (for $\sigma_\ell = 0$
#   the smoothed level is a cubic smoothing spline);
# * **a seasonal cycle**: two lightly damped, noise-driven oscillators (stochastic
#   resonators) at one and two cycles per year,
#   $\ddot x_k + \frac{\omega_k}{Q_k}\dot x_k + \omega_k^2 x_k = $ white noise with
#   $\omega_k = 2\pi k$ per year. A large quality factor $Q_k$ makes a nearly periodic
#   cycle whose amplitude and shape can drift slowly over the decades; the second
#   harmonic gives the cycle its asymmetric shape.
#
# The observation is the sum, $y = \ell + x_1 + x_2 + e$. The state has six entries
# (level, slope, and position and velocity of each oscillator); the drift is block
# diagonal. The trend has no stationary distribution, so the filter starts from an
# exact diffuse prior. Weeks without a measurement are NaN: the filter skips them, and
# their times never enter the model.
#
# With 2284 weekly observations, the maximum a posteriori estimate (L-BFGS on the exact
# gradient, `kalmanad.fit_map`) with its Laplace approximation is the practical fit;
# the draws of the Laplace approximation carry the parameter uncertainty into the
# decomposition and the forecast. Where the Hessian at the mode is not positive
# definite (the surface is very flat in some direction; this happens on the full weekly
# record), `fit_map` warns and returns no draws, and the plots below show the state
# uncertainty at the MAP alone.

# %%
import os
import time

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
import statsmodels.api as sm

import kalmanad
from kalmanad.distributions import LinearSDEDistribution
from kalmanad.inference import forecast_draws, smoothed_states
from kalmanad.plots import plot_forecast, plot_states

jax.config.update("jax_enable_x64", True)

QUICK = os.environ.get("KALMANAD_EXAMPLES_QUICK") == "1"
plt.rcParams["figure.dpi"] = 72
SEED = 0
print("quick mode" if QUICK else "full mode")

co2 = sm.datasets.co2.load_pandas().data["co2"]
if QUICK:  # monthly means of the last 20 years: a smaller problem, same model
    co2 = co2[co2.index >= "1982-01-01"].resample("MS").mean()
dates = co2.index
times = (dates.year + (dates.day_of_year - 1) / 365.25).to_numpy(float)  # decimal years
y = co2.to_numpy(float)[:, None]
print(f"{len(times)} observations, {times[0]:.2f}-{times[-1]:.2f}, {np.isnan(y).sum()} missing")

# %% [markdown]
# ## The model
#
# A NumPyro model function: priors in ppm and years, the block-diagonal drift, and the
# diffusion of each oscillator scaled so that $\sigma_k$ is its stationary standard
# deviation (the SHO parameterisation of the zoo's `sho` model).


# %%
def co2_sde(sigma_level, sigma_slope, amp, quality, noise):
    """Trend + two seasonal resonators as one LinearSDE (6 states, 1 channel)."""
    trend_drift = jnp.array([[0.0, 1.0], [0.0, 0.0]])
    trend_diffusion = jnp.diag(jnp.stack([sigma_level**2, sigma_slope**2]))
    blocks_a, blocks_q = [trend_drift], [trend_diffusion]
    for k in range(2):
        omega = 2 * jnp.pi * (k + 1)  # one and two cycles per year
        blocks_a.append(jnp.array([[0.0, 1.0], [-(omega**2), -omega / quality[k]]]))
        rate = 2 * omega**3 * amp[k] ** 2 / quality[k]  # stationary sd of x_k = amp[k]
        blocks_q.append(jnp.diag(jnp.stack([0.0, rate])))
    return kalmanad.LinearSDE(
        drift=jax.scipy.linalg.block_diag(*blocks_a),
        diffusion=jax.scipy.linalg.block_diag(*blocks_q),
        observation=jnp.array([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]]),
        observation_noise=noise**2 * jnp.eye(1),
        initial_state="diffuse",
    )


def model(times, y=None):
    sigma_level = numpyro.sample("sigma_level", dist.HalfNormal(1.0))  # ppm / sqrt(year)
    sigma_slope = numpyro.sample("sigma_slope", dist.HalfNormal(0.5))  # ppm / year^1.5
    amp = numpyro.sample("amp", dist.HalfNormal(5.0).expand([2]).to_event(1))  # ppm
    quality = numpyro.sample("quality", dist.LogNormal(jnp.log(30.0), 1.0).expand([2]).to_event(1))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))  # ppm
    sde = co2_sde(sigma_level, sigma_slope, amp, quality, noise)
    numpyro.sample("y", LinearSDEDistribution(sde, times), obs=y)


# %% [markdown]
# ## MAP with a Laplace approximation

# %%
start = time.perf_counter()
fit = kalmanad.fit_map(model, times, y, seed=SEED, num_starts=2, num_draws=200)
print(f"fit_map: {time.perf_counter() - start:.1f} s (compilation included), {fit.message}")
# fit.draws is None when the Hessian at the mode is not positive definite (then the
# smoother and the forecast below use the MAP point alone)
draws = {k: np.asarray(v) for k, v in (fit.draws or {}).items()}
print(f"{'parameter':14s} {'MAP':>9s} {'90% Laplace interval':>24s}")
for name, value in fit.params.items():
    for i, v in enumerate(np.atleast_1d(np.asarray(value))):
        label = name if np.ndim(value) == 0 else f"{name}[{i}]"
        interval = ""
        if name in draws:
            lo, hi = np.quantile(draws[name].reshape(len(draws[name]), -1)[:, i], [0.05, 0.95])
            interval = f"[{lo:.4f}, {hi:.4f}]"
        print(f"{label:14s} {v:9.4f} {interval:>24s}")

# %% [markdown]
# How to read the estimates: an oscillator with quality factor $Q$ keeps its phase and
# amplitude over about $Q/\pi$ cycles (its amplitude relaxes on a time scale of
# $2Q/\omega_k$ years), so a $Q$ of tens lets the shape of the seasonal cycle drift
# over a decade or so. `amp` is the standard deviation each oscillator would have in
# its stationary state. The slope of the trend wanders slowly (`sigma_slope`), and
# `noise` is the week-to-week scatter around the smooth curve.
#
# ## Decomposition
#
# The smoothed state, read through two observation rows: the trend (the level) and
# the seasonal cycle (the sum of the two oscillators' positions), with bands over the
# Laplace draws.

# %%
means, covs = smoothed_states(model, fit, times, y, max_draws=50)
components = np.array([[1.0, 0, 0, 0, 0, 0], [0, 0, 1.0, 0, 1.0, 0]])
fig, axes = plt.subplots(2, 1, figsize=(8, 5.2))  # separate time axes: zoom on the cycle
plot_states(
    times,
    means,
    covs,
    observation=components,
    names=["trend (ppm)", "seasonal (ppm)"],
    ax=axes,
    title="Mauna Loa CO₂: smoothed trend and seasonal cycle",
)
axes[0].plot(times, y[:, 0], ".", ms=1.5, color="k", alpha=0.5, label="data")
axes[0].legend(fontsize="small", frameon=False)
axes[1].set_xlim(times[-1] - 6, times[-1])
axes[1].set_xlabel("time (years); seasonal cycle: the last six years")
fig.tight_layout()

# %% [markdown]
# ## Forecast
#
# Ten years ahead: the band grows mostly through the uncertain slope.

# %%
step = 1 / 12 if QUICK else 1 / 52
new_times = times[-1] + np.arange(1, int(10 / step) + 1) * step
fc = forecast_draws(model, fit, times, y, new_times, max_draws=50)
recent = times >= times[-1] - 8
fig = plot_forecast(
    times[recent],
    y[recent],
    new_times,
    fc.observation_mean,
    fc.observation_cov,
    names=["CO₂ (ppm)"],
    title="Forecast with a 90% predictive band",
)
