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
# # The Nile: a continuous-time local level model, checked against statsmodels
#
# The annual flow of the Nile at Aswan, 1871–1970 (in $10^8\,\mathrm{m}^3$), is the
# textbook data set of state-space modelling (Durbin & Koopman, *Time Series Analysis
# by State Space Methods*): the flow drops around 1899, when the first Aswan dam was
# built, and otherwise wanders around a slowly moving level. The **local level model**
# describes it as a level that moves as a random walk, observed with noise. In
# continuous time the level is a Brownian motion:
#
# $$
# d\,\text{level} = \sigma_\text{level}\, dW, \qquad
# \text{volume}_k = \text{level}(t_k) + e_k,\quad e_k \sim N(0, \text{noise}^2).
# $$
#
# Over one year the level moves by $N(0, \sigma_\text{level}^2)$, so on an annual grid
# this is *exactly* the discrete local level model of statsmodels'
# `UnobservedComponents(..., "llevel")`, with $\sigma^2_\text{level}$ = `sigma2.level`
# and $\text{noise}^2$ = `sigma2.irregular`. The random walk has no stationary
# distribution: both libraries start from an exact diffuse prior.
#
# So the two libraries must agree to rounding on the log-likelihood at any parameter
# value, and therefore on the maximum-likelihood estimates. This notebook shows that
# they do, then adds what the continuous-time model offers: irregular observation
# times and a Bayesian posterior with NUTS.

# %%
import os
import time

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import scipy.optimize
import statsmodels.api as sm

import kalmanad
from kalmanad.inference import smoothed_states
from kalmanad.plots import plot_states

jax.config.update("jax_enable_x64", True)

QUICK = os.environ.get("KALMANAD_EXAMPLES_QUICK") == "1"
plt.rcParams["figure.dpi"] = 72
SEED = 0
print("quick mode" if QUICK else "full mode")

nile = sm.datasets.nile.load_pandas().data
years = nile["year"].to_numpy(float)
volume = nile["volume"].to_numpy(float)
y = volume[:, None]  # (T, 1): one manifest variable
print(f"{len(years)} years, {years[0]:.0f}-{years[-1]:.0f}")

# %% [markdown]
# ## statsmodels' maximum-likelihood fit

# %%
sm_model = sm.tsa.UnobservedComponents(volume, "llevel", use_exact_diffuse=True)
sm_fit = sm_model.fit(disp=False)
s2_noise, s2_level = sm_fit.params  # sigma2.irregular, sigma2.level
print(sm_fit.summary().tables[1])
print(f"statsmodels log-likelihood at its MLE: {sm_fit.llf:.6f}")

# %% [markdown]
# ## The same model in kalmanad
#
# The zoo's `local_level` spec is this model (`kalmanad.load_model("local_level")`);
# `spec.build` turns parameter values into a `LinearSDE`. At statsmodels' estimates our
# exact log-likelihood should be statsmodels' to rounding:

# %%
spec = kalmanad.load_model("local_level")
print(spec.describe())
at_sm = spec.build({"sigma_level": np.sqrt(s2_level), "noise": np.sqrt(s2_noise)})
ll_ours = float(kalmanad.log_likelihood(at_sm, years, y))
print(f"\nkalmanad log-likelihood at statsmodels' MLE: {ll_ours:.6f}")
print(f"statsmodels:                                 {sm_fit.llf:.6f}")
print(f"difference: {ll_ours - sm_fit.llf:.1e}")

# %% [markdown]
# Our own maximum-likelihood estimate: L-BFGS on the exact gradient (`jax.grad` of
# the log-likelihood), over the log standard deviations.


# %%
def negative_ll(log_sd):
    sde = spec.build({"sigma_level": jnp.exp(log_sd[0]), "noise": jnp.exp(log_sd[1])})
    return -kalmanad.log_likelihood(sde, years, y)


value_and_grad = jax.jit(jax.value_and_grad(negative_ll))
opt = scipy.optimize.minimize(
    lambda x: tuple(np.asarray(v, float) for v in value_and_grad(x)),
    x0=np.log([50.0, 100.0]),
    jac=True,
    method="L-BFGS-B",
)
sd_level, sd_noise = np.exp(opt.x)
print(f"{'':22s} {'statsmodels':>12s} {'kalmanad':>12s}")
print(f"{'sigma2.level':22s} {s2_level:12.2f} {sd_level**2:12.2f}")
print(f"{'sigma2.irregular':22s} {s2_noise:12.2f} {sd_noise**2:12.2f}")
print(f"{'max log-likelihood':22s} {sm_fit.llf:12.6f} {-opt.fun:12.6f}")

# %% [markdown]
# The log-likelihood surface is flat near its maximum, and statsmodels' optimiser stops
# a little short of it with its default tolerances; the exact gradient takes L-BFGS to
# the values of Durbin & Koopman (2012, §2.10): $\sigma^2_\text{level} = 1469.1$,
# $\sigma^2_\text{irregular} = 15099$.
#
# ## Irregular times
#
# Drop a random 30% of the years. statsmodels needs the annual grid and treats the
# dropped years as missing values (NaN); the continuous-time model simply gets the
# remaining observation times, with gaps of one to several years. The two are the same
# model, so the log-likelihoods agree again:

# %%
rng = np.random.default_rng(SEED)
kept = np.sort(rng.choice(len(years), size=int(0.7 * len(years)), replace=False))
kept[0] = 0  # both start in 1871
with_nan = np.full_like(volume, np.nan)
with_nan[kept] = volume[kept]
sm_gappy = sm.tsa.UnobservedComponents(with_nan, "llevel", use_exact_diffuse=True)
ll_sm_gappy = sm_gappy.loglike(sm_fit.params)
ll_ours_gappy = float(kalmanad.log_likelihood(at_sm, years[kept], y[kept]))
gaps = sorted(set(np.diff(years[kept]).astype(int).tolist()))
print(f"{len(kept)} of {len(years)} years kept; gaps of {gaps} years")
print(f"statsmodels (NaN on the annual grid): {ll_sm_gappy:.6f}")
print(f"kalmanad (irregular times):           {ll_ours_gappy:.6f}")

# %% [markdown]
# ## A Bayesian posterior with NUTS
#
# `fit_nuts` samples the spec's NumPyro model (priors `HalfNormal(100)` on
# $\sigma_\text{level}$ and `HalfNormal(200)` on the noise sd, weakly informative on the
# scale of the data). The posterior medians sit near the MLE; the intervals show how
# little 100 observations say about the split between level and noise variance.

# %%
settings = (
    dict(num_warmup=150, num_samples=150, num_chains=1)
    if QUICK
    else dict(num_warmup=500, num_samples=500, num_chains=2)
)
start = time.perf_counter()
idata = kalmanad.fit_nuts(
    spec, years, y, seed=SEED, progress_bar=False, pointwise=False, **settings
)
print(f"NUTS {settings}: {time.perf_counter() - start:.1f} s (compilation included)")
post = az.extract(idata)
print(f"{'':18s} {'stats MLE':>10s} {'our MLE':>10s} {'post. median':>13s} {'90% interval':>20s}")
for name, mle_sm, mle_ours in [
    ("sigma_level", np.sqrt(s2_level), sd_level),
    ("noise", np.sqrt(s2_noise), sd_noise),
]:
    draws = post[name].values
    lo, med, hi = np.quantile(draws, [0.05, 0.5, 0.95])
    print(f"{name:18s} {mle_sm:10.1f} {mle_ours:10.1f} {med:13.1f} {f'[{lo:.1f}, {hi:.1f}]':>20s}")

# %% [markdown]
# ## The smoothed level
#
# The Rauch–Tung–Striebel smoother at each posterior draw (pooled into a band that
# includes parameter uncertainty), with statsmodels' smoothed level at its MLE on top.
# The drop after the dam is clear; the level moves slowly otherwise.

# %%
means, covs = smoothed_states(spec, idata, years, y, max_draws=100)
fig = plot_states(
    years,
    means,
    covs,
    y=y,
    observation=np.eye(1),
    names=["volume (10⁸ m³)"],
    title="Nile: smoothed level (kalmanad posterior) and statsmodels' MLE smoother",
)
fig.axes[0].plot(years, sm_fit.smoothed_state[0], "--", color="C3", lw=1.2, label="statsmodels")
fig.axes[0].legend(fontsize="small", frameon=False)
fig.axes[0].set_xlabel("year")
