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
# # A hierarchical panel study: continuous-time VAR with random effects
#
# Experience-sampling (diary) studies in psychology beep participants several times a
# day at random moments and ask how they feel — here two latent affect variables, $x_1$
# and $x_2$ (say, positive and negative affect), each measured with error. The
# questions are about **dynamics**: how fast does a person's affect return to their
# baseline after a perturbation (the *auto-effects*), and does one variable push the
# other (the *cross-effects*)? And how do people differ?
#
# Discrete-time VAR models answer these for one fixed interval between beeps, but the
# beeps are irregular (and nights are long), and a lagged effect over 30 minutes is not
# the same as over 3 hours. The continuous-time VAR (CT-VAR; Voelkle, Oud and ctsem)
# models the process itself,
#
# $$
# dx = A\,x\,dt + G\,dW, \qquad A = \begin{pmatrix}-\text{auto}_1 & \text{cross}_{12}\\
# \text{cross}_{21} & -\text{auto}_2\end{pmatrix}, \qquad
# y_k = \mu + x(t_k) + e_k,
# $$
#
# and the lagged effects over any interval follow: $e^{A\Delta t}$. Subjects differ:
# the zoo's `panel_ctvar` model gives each subject its own auto-effects and means
# (correlated, non-centred random effects on the log / identity scale, LKJ prior on
# their correlation), and lets age shift the auto-effect of $x_1$ and the mean of $y_1$.
#
# We simulate a study from known values, fit it with NUTS and show the signature plot
# of continuous-time modelling: the discrete-time auto- and cross-effects as functions
# of the time interval $\Delta t$.

# %%
import os
import time

import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np
from numpyro.infer import Predictive

import kalmanad
from kalmanad.inference import discrete_time_effects
from kalmanad.plots import plot_discrete_effects

jax.config.update("jax_enable_x64", True)

QUICK = os.environ.get("KALMANAD_EXAMPLES_QUICK") == "1"
plt.rcParams["figure.dpi"] = 72
SEED = 2
print("quick mode" if QUICK else "full mode")

spec = kalmanad.load_model("panel_ctvar")
print(spec.describe())

# %% [markdown]
# ## A simulated diary study
#
# Each subject is beeped five times a day at random moments of a 12-hour waking day
# (time in hours, so the night is a 12-hour gap), for several days. Age is
# standardised. The true values are the spec's `[data.truth]` table.

# %%
n_subjects, n_days = (8, 2) if QUICK else (12, 2)
rng = np.random.default_rng(SEED)
beeps = []
for _ in range(n_subjects):
    day = [24 * d + np.sort(rng.uniform(8, 20, size=5)) for d in range(n_days)]
    beeps.append(np.concatenate(day))
times = np.stack(beeps) - 8.0  # (S, T) hours since the first morning
age = rng.standard_normal(n_subjects)

truth = dict(spec.data.truth)
truth["re_corr_cholesky"] = np.linalg.cholesky(np.asarray(truth.pop("re_corr")))
fixed = {k: np.asarray(v)[None] for k, v in truth.items()}  # one "posterior draw"
simulate = Predictive(spec.numpyro_model, posterior_samples=fixed)
# jit: one compiled program instead of hundreds of small eager operations
sim = jax.jit(lambda key: simulate(key, times, covariates={"age": age}))(jax.random.PRNGKey(SEED))
y = np.asarray(sim["y"][0])  # (S, T, 2)
print(f"{n_subjects} subjects x {times.shape[1]} beeps; y {y.shape}")
print("subjects' auto-effect of x1:", np.round(np.asarray(sim["auto1_subject"][0]), 2))

fig, axes = plt.subplots(1, 3, figsize=(10, 2.6), sharey=True)
for ax, s in zip(axes, range(3), strict=True):
    ax.plot(times[s], y[s, :, 0], "o-", ms=3, lw=0.8, label="y1")
    ax.plot(times[s], y[s, :, 1], "s-", ms=3, lw=0.8, label="y2")
    ax.set_title(f"subject {s} (age {age[s]:+.1f} sd)", fontsize="small")
    ax.set_xlabel("hours")
axes[0].legend(frameon=False, fontsize="small")
fig.tight_layout()

# %% [markdown]
# ## NUTS on the hierarchical model
#
# The likelihood of all subjects is one batched Kalman filter (subjects on a plate).
# Hierarchical models need care: the random effects are non-centred and we raise the
# target acceptance rate a little. This is the slow part of the notebook: on a CPU
# every gradient runs the filter for every subject, and NUTS needs thousands of
# gradients; the settings here (one chain, a capped tree depth) keep it to minutes.
# Use more draws, two or more chains and check `r_hat` for real work (and a GPU, where
# the subjects run in parallel).

# %%
settings = (
    dict(num_warmup=20, num_samples=20, num_chains=1, max_tree_depth=3)
    if QUICK
    else dict(num_warmup=200, num_samples=200, num_chains=1, max_tree_depth=5)
)
start = time.perf_counter()
idata = kalmanad.fit_nuts(
    spec,
    times,
    y,
    seed=SEED,
    progress_bar=False,
    pointwise=False,
    target_accept_prob=0.9,
    covariates={"age": age},
    **settings,
)
print(f"NUTS {settings}: {time.perf_counter() - start:.1f} s (compilation included)")
names = ["auto1", "auto2", "cross12", "cross21", "auto1_sd", "mu1_sd", "age_on_auto1", "age_on_mu1"]
summary = az.summary(idata, var_names=names, round_to=2)
summary.insert(0, "truth", [truth[k] for k in summary.index])
print(summary[["truth", "mean", "sd", "hdi_3%", "hdi_97%", "r_hat"]].to_string())

# %% [markdown]
# With so few subjects and beeps (and a short single chain, to keep the notebook to
# minutes on a CPU) the intervals are wide; the random-effect standard deviations and
# the age effects are the hardest to pin down. A real study would have more of both.
#
# ## Discrete-time effects over the interval
#
# For each posterior draw of the population drift $A$, `discrete_time_effects`
# evaluates $e^{A\Delta t}$ on a grid of intervals; entry $(i, j)$ is the expected
# change in $x_i$ after $\Delta t$ hours per unit of $x_j$ now. The auto-effects decay
# from 1; a cross-effect starts at 0, peaks at some interval and fades — so a
# discrete-time study with a fixed beep interval would report a different
# "cross-lagged effect" for each design. The dotted lines are the true effects.

# %%
post = az.extract(idata)
population = {k: post[k].values for k in spec.parameters}
drift = np.asarray(spec.matrices(population)["drift"])  # (draws, 2, 2)
dts = np.linspace(0.0, 8.0, 60)
effects = discrete_time_effects(drift, dts)  # (draws, 60, 2, 2)
fig = plot_discrete_effects(dts, effects, names=["x1", "x2"])
ax = fig.axes[0]
true_effects = np.asarray(discrete_time_effects(spec.matrices(truth)["drift"], dts))
for idx, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    ax.plot(dts, true_effects[:, i, j], ":", color=f"C{idx}", lw=1.2)
ax.set_xlabel("time interval Δt (hours)")
