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
# # Sunspots: a noise-driven damped oscillator on irregular times
#
# The number of sunspots rises and falls with the solar cycle, about 11 years long but
# irregular in length and amplitude. A simple physical model of such a quasi-periodic
# signal is a **damped harmonic oscillator driven by white noise** (a "stochastically
# driven simple harmonic oscillator", SHO): without noise it would ring down at its
# natural frequency $\omega$; the noise keeps re-exciting it, so the phase and
# amplitude wander.
#
# $$
# \ddot x + \frac{\omega}{Q}\,\dot x + \omega^2 x = \text{white noise},\qquad
# y_k = \mu + x(t_k) + e_k .
# $$
#
# $Q$ is the quality factor (how many cycles the oscillation stays coherent; damping
# ratio $1/2Q$), $\sigma$ the stationary standard deviation of $x$. As a linear SDE the
# state is (position, velocity), and the covariance of $x$ is the SHO kernel of
# celerite/tinygp, so this is also a Gaussian process, evaluated in $O(T)$. The zoo
# model `sho` is this model; `carma` is the more flexible CARMA(2,1).
#
# To show what the continuous-time model does with gaps, we keep a random half of the
# yearly means (1700–2008), fit the model to those with NUTS, **smooth** the state
# through the gaps (and check the held-out years against the band), and **forecast**.
# (Sunspot numbers are non-negative and skewed; a Gaussian model on the raw scale is the
# simple choice of the celerite and tinygp tutorials, not the best one.)

# %%
import os
import time

import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np
import statsmodels.api as sm

import kalmanad
from kalmanad.inference import forecast_draws, sde_draws, smoothed_states
from kalmanad.plots import mixture_band, plot_forecast, plot_states

jax.config.update("jax_enable_x64", True)

QUICK = os.environ.get("KALMANAD_EXAMPLES_QUICK") == "1"
plt.rcParams["figure.dpi"] = 72
SEED = 1
print("quick mode" if QUICK else "full mode")

data = sm.datasets.sunspots.load_pandas().data
all_years = data["YEAR"].to_numpy(float)
all_y = data["SUNACTIVITY"].to_numpy(float)[:, None]
rng = np.random.default_rng(SEED)
observed = np.sort(rng.choice(len(all_years), size=len(all_years) // 2, replace=False))
held_out = np.setdiff1d(np.arange(len(all_years)), observed)
years, y = all_years[observed], all_y[observed]
gaps = np.diff(years)
print(f"{len(years)} of {len(all_years)} years observed; gaps 1-{gaps.max():.0f} years")

fig, ax = plt.subplots(figsize=(9, 2.6))
ax.plot(all_years, all_y[:, 0], color="0.8", lw=1, label="all years")
ax.plot(years, y[:, 0], "o", ms=2.5, color="k", label="observed (random half)")
ax.set_xlabel("year")
ax.set_ylabel("sunspot number")
ax.legend(frameon=False, fontsize="small")
fig.tight_layout()

# %% [markdown]
# ## The model and its posterior
#
# The spec lists each parameter with its prior; `[derived]` quantities such as the
# period $2\pi/\omega$ are recorded at every draw.

# %%
spec = kalmanad.load_model("sho")
print(spec.describe())

settings = (
    dict(num_warmup=150, num_samples=150, num_chains=1)
    if QUICK
    else dict(num_warmup=500, num_samples=500, num_chains=2)
)
start = time.perf_counter()
idata = kalmanad.fit_nuts(
    spec, years, y, seed=SEED, progress_bar=False, pointwise=False, **settings
)
print(f"\nNUTS {settings}: {time.perf_counter() - start:.1f} s (compilation included)")
names = ["omega", "quality", "sigma", "mu", "noise", "period"]
print(az.summary(idata, var_names=names, round_to=2, kind="stats"))

# %% [markdown]
# The period is close to the solar cycle's 11 years; $Q$ of a few means the cycle stays
# in phase for only a few periods, which is why sunspot cycles are so hard to predict
# far ahead.
#
# ## Smoothing through the gaps
#
# To get the state in the years we left out, put them back as **missing** observations
# (NaN): the filter skips the update there, and the Rauch–Tung–Striebel smoother fills
# them in from both sides. The band pools the posterior draws. The held-out years
# (red crosses) were never seen by the fit; about 90% of them should fall inside the
# 90% band of the smoothed signal plus measurement noise.

# %%
y_gappy = np.full_like(all_y, np.nan)
y_gappy[observed] = y
post = az.extract(idata)  # (draws,) per parameter, chains stacked
keep = np.linspace(0, post.sizes["sample"] - 1, 100).astype(int)
draws = {k: np.asarray(post[k].values[keep]) for k in spec.parameters}
means, covs = smoothed_states(spec, draws, all_years, y_gappy)
sde = sde_draws(spec, draws, all_years, y_gappy)["y"].model  # fields with a draw axis
fig = plot_states(
    all_years,
    means,
    covs,
    y=y_gappy,
    observation=sde.observation,
    intercept=sde.observation_intercept,
    noise=sde.observation_noise,
    names=["sunspot number"],
    title="Smoothed through the gaps: 90% predictive band",
)
ax = fig.axes[0]
ax.plot(all_years[held_out], all_y[held_out, 0], "x", ms=4, color="C3", label="held out")
ax.legend(fontsize="small", frameon=False, ncol=4)
ax.set_xlabel("year")
signal = means[..., 0] + np.asarray(sde.observation_intercept)[:, None, 0]
sd = np.sqrt(covs[..., 0, 0] + np.asarray(sde.observation_noise)[:, None, 0, 0])
_, lo, hi = mixture_band(signal, sd, 0.9)
inside = np.mean((all_y[held_out, 0] >= lo[held_out]) & (all_y[held_out, 0] <= hi[held_out]))
print(f"held-out years inside the 90% predictive band: {inside:.0%}")

# %% [markdown]
# ## Forecast
#
# `forecast_draws` propagates the last filtered state of each posterior draw to future
# years; the predictive band widens as the oscillator loses its phase.

# %%
new_years = np.arange(years[-1] + 1, years[-1] + 31)
fc = forecast_draws(spec, idata, years, y, new_years, max_draws=100)
recent = years >= 1950
fig = plot_forecast(
    years[recent],
    y[recent],
    new_years,
    fc.observation_mean,
    fc.observation_cov,
    names=["sunspot number"],
    title="Forecast with a 90% predictive band",
)
fig.axes[0].set_xlabel("year")
