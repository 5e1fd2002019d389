"""Simulation-based calibration (Talts et al. 2018) of kalmanad's likelihood under NUTS.

    python benchmarks/sbc.py --models ou ctvar3 panel --replicates 2000 --batch 250

Each replicate draws parameters from the prior and data from the model (kalmanad's exact
simulation), runs NUTS on the posterior and records the rank of each true parameter
among ``--draws`` (L) thinned posterior draws. For a calibrated sampler and likelihood
the ranks are uniform on 0..L; each parameter's ranks are binned into ``--bins`` bins
and tested with a chi-square test at level ``--alpha``.

Batched sampling. The replicates run ``--batch`` at a time in one compiled program:
NumPyro's functional NUTS (``numpyro.infer.hmc.hmc(potential_fn_gen=...)``, the kernel
``MCMC(chain_method="vectorized")`` vmaps) with the model's potential built by
``numpyro.infer.util.initialize_model(dynamic_args=True)``, so the potential is the
model's priors plus kalmanad's ``LinearSDEDistribution`` log-likelihood, with the data
``y`` a vmapped argument. Per replicate: a valid start from NumPyro's
``find_valid_initial_params`` (uniform in [-2, 2] on the unconstrained scale, the
``MCMC`` default), ``--warmup`` steps of NumPyro's warm-up (dual-averaging step size and
windowed diagonal mass matrix, each replicate its own), then ``L * --thin`` steps kept
every ``--thin``-th. A replicate's key is ``fold_in(seed, replicate)``, so its result
does not depend on the batch size. Under ``vmap`` a NUTS step costs the deepest tree in
the batch; what the batch buys is one dispatch of the Kalman filter's scan for all
replicates instead of one each. That pays most where one replicate's likelihood is
cheap (the one-state OU models); for ``ctvar3`` the matrix exponentials of its two-state
drift dominate and a batch costs about as much per replicate as one fit.
``--time-limit S`` starts no batch after S seconds of sampling, so an expensive model
reports the first replicates that fitted in that time, with the power of that count.

SBC needs nearly independent draws (autocorrelated draws give ∪-shaped rank histograms
with a calibrated posterior): the script records each replicate's bulk ESS of the L
kept draws per parameter and reports the smallest and the 1% quantile.

Models:

* ``ou``: Ornstein-Uhlenbeck process measured with noise (rate, stationary sd, noise sd),
  T = 40 irregular times.
* ``ctvar3``: a two-state CT-VAR (two auto-effects, two cross-effects, two diffusion sds)
  measured by three indicators (y1 = x1, y2 = x2, y3 = λ x1 + x2, one noise sd),
  T = 60; prior draws with an unstable drift are excluded (so the stationary start
  exists), which is the prior the model's -inf likelihood there also implies.
* ``panel``: 8 subjects, each an OU process around its own mean μ_i ~ N(μ, τ²)
  (non-centred), shared rate, sd and noise, T = 25 times per subject; the ranks of the
  population parameters (μ, τ, rate, sd, noise).

Power. The script also states the power of this design to detect a posterior whose
scale is off by 10% (draws from N(m, (1.1 s)²) or N(m, (0.9 s)²) where the exact
posterior is N(m, s²)), found by simulating the rank statistic itself under that
Gaussian model of the error: ``--power-sims`` sets of as many ranks as replicates ran, each
tested as above; the power is the fraction rejected (and at a scale of 1.0 it must be
close to ``--alpha``).

``--check N`` instead fits the first N replicates of each model both batched and with
``MCMC.run`` (one replicate at a time, same data and settings) and prints the rank
histograms, the largest difference of posterior means in posterior sds and the wall
time per replicate of each.

Writes ``benchmarks/results/sbc_<model>.json`` and ``.md``: per parameter the bin counts,
the p-value and the ESS, the settings, the wall time, the power and the package
versions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("ou", "ctvar3", "panel")


# ------------------------------------------------------------------- rank statistics


def rank_bins(ranks, n_draws: int, bins: int) -> np.ndarray:
    """Counts of ranks in 0..n_draws over ``bins`` equal bins ((n_draws + 1) % bins == 0)."""
    ranks = np.asarray(ranks)
    if (n_draws + 1) % bins:
        raise ValueError(f"draws + 1 = {n_draws + 1} is not a multiple of bins = {bins}")
    if ranks.size and (ranks.min() < 0 or ranks.max() > n_draws):
        raise ValueError(f"ranks must lie in 0..{n_draws}, got {ranks.min()}..{ranks.max()}")
    return np.bincount(ranks * bins // (n_draws + 1), minlength=bins)


def chisquare_pvalue(counts) -> float:
    return float(scipy.stats.chisquare(counts).pvalue)


def ranks_of(truth, draws) -> np.ndarray:
    """Rank of each truth among its draws: ``truth`` (R,), ``draws`` (R, L) -> (R,) in 0..L.

    The rank is #{l : draws[r, l] < truth[r]}, uniform on 0..L when the truth is a draw
    from the same distribution as the L independent draws.
    """
    return np.sum(np.asarray(draws) < np.asarray(truth)[:, None], axis=1)


def bulk_ess(draws) -> np.ndarray:
    """Bulk effective sample size of each row of ``draws`` (R, L) -> (R,) (one chain each)."""
    from numpyro.diagnostics import effective_sample_size

    return np.asarray(effective_sample_size(np.asarray(draws).T[None]))


def power(
    scale: float,
    replicates: int,
    n_draws: int,
    bins: int,
    alpha: float,
    sims: int = 2000,
    seed: int = 0,
) -> float:
    """Fraction of SBC runs whose chi-square test rejects at ``alpha`` when the posterior
    draws have ``scale`` times the exact posterior's sd (Gaussian posterior).

    The truth is θ ~ N(0, 1) (the exact posterior, standardised) and the draws
    N(0, scale²); the rank, the number of the ``n_draws`` independent draws below θ, is
    then Binomial(n_draws, Φ(θ / scale)) given θ, and is drawn as such.
    """
    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(sims):
        theta = rng.standard_normal(replicates)
        ranks = rng.binomial(n_draws, scipy.stats.norm.cdf(theta / scale))
        rejected += chisquare_pvalue(rank_bins(ranks, n_draws, bins)) < alpha
    return rejected / sims


# ------------------------------------------------------------------------- models


def models() -> dict:
    """The SBC models: name -> (NumPyro model ``fn(times, y=None)``, ranked site names)."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    from kalmanad import LinearSDE
    from kalmanad.distributions import LinearSDEDistribution

    def ou(times, y=None):
        theta = numpyro.sample("theta", dist.LogNormal(0.0, 0.5))
        sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 0.5))
        noise = numpyro.sample("noise", dist.LogNormal(-1.0, 0.3))
        m = LinearSDE(
            drift=-theta * jnp.eye(1),
            diffusion=2 * theta * sigma**2 * jnp.eye(1),
            observation=jnp.eye(1),
            observation_noise=noise**2 * jnp.eye(1),
        )
        return numpyro.sample("y", LinearSDEDistribution(m, times), obs=y)

    def ctvar3(times, y=None):
        a1 = numpyro.sample("auto1", dist.LogNormal(0.0, 0.3))
        a2 = numpyro.sample("auto2", dist.LogNormal(0.0, 0.3))
        c12 = numpyro.sample("cross12", dist.Normal(0.0, 0.3))
        c21 = numpyro.sample("cross21", dist.Normal(0.0, 0.3))
        s1 = numpyro.sample("sigma1", dist.LogNormal(0.0, 0.3))
        s2 = numpyro.sample("sigma2", dist.LogNormal(0.0, 0.3))
        lam = numpyro.sample("loading", dist.Normal(0.5, 0.3))
        noise = numpyro.sample("noise", dist.LogNormal(-1.0, 0.3))
        drift = jnp.array([[-a1, c12], [c21, -a2]])
        h = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).at[2, 0].set(lam)
        m = LinearSDE(
            drift=drift,
            diffusion=jnp.diag(jnp.array([s1, s2]) ** 2),
            observation=h,
            observation_noise=noise**2 * jnp.eye(3),
        )
        return numpyro.sample("y", LinearSDEDistribution(m, times), obs=y)

    def panel(times, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        tau = numpyro.sample("tau", dist.LogNormal(-0.5, 0.4))
        theta = numpyro.sample("theta", dist.LogNormal(0.0, 0.4))
        sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 0.3))
        noise = numpyro.sample("noise", dist.LogNormal(-1.0, 0.3))
        with numpyro.plate("subjects", times.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))

        def one(mean):
            return LinearSDE(
                drift=-theta * jnp.eye(1),
                diffusion=2 * theta * sigma**2 * jnp.eye(1),
                observation=jnp.eye(1),
                observation_noise=noise**2 * jnp.eye(1),
                observation_intercept=mean[None],
            )

        m = jax.vmap(one)(mu + tau * z)
        return numpyro.sample("y", LinearSDEDistribution(m, times).to_event(1), obs=y)

    return {
        "ou": (ou, ("theta", "sigma", "noise")),
        "ctvar3": (
            ctvar3,
            ("auto1", "auto2", "cross12", "cross21", "sigma1", "sigma2", "loading", "noise"),
        ),
        "panel": (panel, ("mu", "tau", "theta", "sigma", "noise")),
    }


def times_for(model: str, rng) -> np.ndarray:
    """The observation times of ``model``'s design: (T,), or (subjects, T) for the panel."""
    if model == "ou":
        return np.cumsum(rng.exponential(0.5, 40))
    if model == "ctvar3":
        return np.cumsum(rng.exponential(0.5, 60))
    return np.cumsum(rng.exponential(0.5, (8, 25)), axis=-1)


def _stable(draws: dict) -> np.ndarray:
    """Which ctvar3 prior draws have a stable drift (every eigenvalue's real part < 0)."""
    a = np.stack(
        [
            np.stack([-draws["auto1"], draws["cross12"]], -1),
            np.stack([draws["cross21"], -draws["auto2"]], -1),
        ],
        -2,
    )
    return np.all(np.linalg.eigvals(a).real < 0, axis=-1)


def prior_draws(model: str, fn, times, replicates: int, seed: int) -> dict:
    """``replicates`` draws of the parameters and data from the prior predictive.

    Draws outside the model's support (ctvar3: an unstable drift) or with non-finite data
    are dropped and more are drawn, in order, until there are ``replicates``. Returns
    site -> array with leading axis ``replicates``.
    """
    import jax
    from numpyro.infer import Predictive

    kept: dict = {}
    have, round_ = 0, 0
    while have < replicates:
        n = max(2 * (replicates - have), 64)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), round_)
        sims = {k: np.asarray(v) for k, v in Predictive(fn, num_samples=n)(key, times).items()}
        ok = np.all(np.isfinite(sims["y"].reshape(n, -1)), axis=1)
        if model == "ctvar3":
            ok &= _stable(sims)
        for k, v in sims.items():
            kept.setdefault(k, []).append(v[ok])
        have += int(ok.sum())
        round_ += 1
    return {k: np.concatenate(v)[:replicates] for k, v in kept.items()}


# ------------------------------------------------------------------ batched NUTS


def batched_nuts(
    fn,
    times,
    y_example,
    names,
    *,
    warmup: int,
    draws: int,
    thin: int,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
):
    """One jitted NUTS run for a batch of data sets of the model ``fn(times, y)``.

    Returns ``run(keys, ys)`` with ``keys`` (B, 2) PRNG keys and ``ys`` (B, *y.shape)
    data sets, giving a dict: each site in ``names`` -> (B, draws) kept draws
    (constrained), ``"divergences"`` (B,) divergent transitions after warm-up,
    ``"step_size"`` (B,) adapted step sizes, ``"accept_prob"`` (B,) mean acceptance
    probability after warm-up, ``"max_depth"`` (B,) kept steps whose tree reached
    ``max_tree_depth``, ``"valid_start"`` (B,) whether a finite start was found.

    Each replicate: a start from ``find_valid_initial_params`` (the ``MCMC`` default,
    uniform in [-2, 2] unconstrained), ``warmup`` steps of NumPyro's warm-up adaptation
    (step size and diagonal mass matrix, as ``NUTS`` sets it up), then
    ``draws * thin`` steps with every ``thin``-th kept. The potential is NumPyro's
    potential of ``fn``: minus the log prior of the unconstrained sites (with the
    transforms' Jacobians) minus the model's log-likelihood (kalmanad's
    ``LinearSDEDistribution``) at ``y``.
    """
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import find_valid_initial_params, initialize_model

    times = np.asarray(times)  # concrete: the step sizes are found once, untraced
    info = initialize_model(
        jax.random.PRNGKey(0), fn, model_args=(times, jnp.asarray(y_example)), dynamic_args=True
    )
    potential_gen, postprocess_gen = info.potential_fn, info.postprocess_fn
    prototype = info.param_info.z
    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")
    full_depth = 2**max_tree_depth - 1

    def one(key, y):
        args = (times, y)
        k_init, k_run = jax.random.split(key)
        (z0, _, _), valid = find_valid_initial_params(
            k_init, fn, model_args=args, prototype_params=prototype
        )
        state = init_kernel(
            z0,
            num_warmup=warmup,
            dense_mass=[],  # diagonal mass for every site, as NUTS(dense_mass=False) passes
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            model_args=args,
            rng_key=k_run,
        )

        def step(s):
            return sample_kernel(s, model_args=args)

        state = jax.lax.fori_loop(0, warmup, lambda i, s: step(s), state)
        zero = jnp.zeros((), jnp.int32)

        def thin_step(carry, _):
            s, div, deep, acc = carry
            s = step(s)
            return (
                s,
                div + s.diverging,
                deep + (s.num_steps >= full_depth),
                acc + s.accept_prob,
            ), None

        def keep(carry, _):
            carry, _ = jax.lax.scan(thin_step, carry, None, length=thin)
            return carry, carry[0].z

        init = (state, zero, zero, jnp.zeros_like(state.accept_prob))
        (state, div, deep, acc), zs = jax.lax.scan(keep, init, None, length=draws)
        constrained = jax.vmap(postprocess_gen(*args))(zs)
        out = {k: constrained[k] for k in names}
        out.update(
            divergences=div,
            max_depth=deep,
            accept_prob=acc / (draws * thin),
            step_size=state.adapt_state.step_size,
            valid_start=valid,
        )
        return out

    return jax.jit(jax.vmap(one))


def replicate_keys(seed: int, first: int, count: int):
    """PRNG keys (count, 2) of replicates first..first + count - 1: fold_in(seed, index)."""
    import jax

    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(first, first + count))


def run_batched(run, ys, seed: int, batch: int, log=None, time_limit=None):
    """Run the sampler ``run`` (from ``batched_nuts``) over data sets ``ys`` (R, ...) in
    batches of ``batch`` (the last padded with copies of its last data set, its extra
    results dropped). With ``time_limit`` (seconds), no batch starts once the sampling
    time has passed it, so fewer than R replicates may come back (the first ones, a
    choice that does not depend on their results). Returns (results with leading axis
    the replicates done, compile seconds, sampling seconds)."""
    import jax

    n = len(ys)
    b = min(batch, n)
    t0 = time.perf_counter()
    compiled = run.lower(replicate_keys(seed, 0, b), ys[:b]).compile()
    compile_s = time.perf_counter() - t0
    parts = []
    t0 = time.perf_counter()
    for first in range(0, n, b):
        chunk = ys[first : first + b]
        pad = b - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        out = jax.device_get(compiled(replicate_keys(seed, first, b), chunk))
        parts.append({k: np.asarray(v)[: b - pad] for k, v in out.items()})
        if log:
            log(f"  {first + b - pad}/{n} replicates, {time.perf_counter() - t0:.0f} s")
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    sample_s = time.perf_counter() - t0
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, compile_s, sample_s


def run_unbatched(fn, times, ys, names, *, warmup, draws, thin, seed):
    """The same replicates one at a time with ``MCMC.run`` (NUTS, one compiled sampler,
    the data a traced argument): site -> (R, draws), and the seconds per replicate after
    the first (which compiles)."""
    import jax
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(
        NUTS(fn),
        num_warmup=warmup,
        num_samples=draws * thin,
        thinning=thin,
        progress_bar=False,
        jit_model_args=True,
    )
    out = {k: [] for k in names}
    keys = replicate_keys(seed, 0, len(ys))
    t0 = time.perf_counter()
    for r, y in enumerate(ys):
        if r == 1:
            t0 = time.perf_counter()
        mcmc.run(keys[r], times, y=y)
        post = mcmc.get_samples()
        for k in names:
            out[k].append(np.asarray(post[k]))
        jax.block_until_ready(post)
    per_rep = (time.perf_counter() - t0) / max(len(ys) - 1, 1)
    return {k: np.stack(v) for k, v in out.items()}, per_rep


# ------------------------------------------------------------------------- SBC run


def _design(model: str, seed: int, replicates: int):
    """(fn, names, times, prior draws) of ``model``'s SBC design at ``seed``."""
    fn, names = models()[model]
    times = times_for(model, np.random.default_rng(seed))
    return fn, names, times, prior_draws(model, fn, times, replicates, seed)


def run_sbc(
    model, replicates, *, batch, draws, thin, warmup, seed, log=None, time_limit=None, first=None
) -> dict:
    """SBC of ``model``: ranks, ESS and sampler diagnostics of ``replicates`` replicates,
    or of their first ``first``, or fewer if ``time_limit`` seconds of sampling ran out
    (see ``run_batched``). Given ``replicates`` and ``seed``, replicate r's data and key
    are fixed (not the batch size or the time), so ``first`` = the replicates a cut run
    did reproduces it."""
    fn, names, times, sims = _design(model, seed, replicates)
    if first is not None:
        sims = {k: v[:first] for k, v in sims.items()}
    run = batched_nuts(fn, times, sims["y"][0], names, warmup=warmup, draws=draws, thin=thin)
    out, compile_s, sample_s = run_batched(run, sims["y"], seed + 1, batch, log, time_limit)
    done = len(out["divergences"])
    return {
        "names": names,
        "requested": replicates,
        "ranks": np.stack([ranks_of(sims[k][:done], out[k]) for k in names], 1),
        "ess": np.stack([bulk_ess(out[k]) for k in names], 1),
        "diagnostics": out,
        "compile_s": compile_s,
        "sample_s": sample_s,
    }


def check(model, replicates, *, batch, draws, thin, warmup, seed, bins) -> dict:
    """The first ``replicates`` replicates batched and with ``MCMC.run``: rank histograms,
    the largest |difference of posterior means| / posterior sd per parameter and the
    seconds per replicate of each (compilation excluded)."""
    fn, names, times, sims = _design(model, seed, replicates)
    run = batched_nuts(fn, times, sims["y"][0], names, warmup=warmup, draws=draws, thin=thin)
    bat, _, sample_s = run_batched(run, sims["y"], seed + 1, batch)
    one, per_rep = run_unbatched(
        fn, times, sims["y"], names, warmup=warmup, draws=draws, thin=thin, seed=seed + 1
    )
    rows = {}
    for k in names:
        diff = np.abs(bat[k].mean(1) - one[k].mean(1)) / one[k].std(1)
        rows[k] = {
            "batched": rank_bins(ranks_of(sims[k], bat[k]), draws, bins).tolist(),
            "unbatched": rank_bins(ranks_of(sims[k], one[k]), draws, bins).tolist(),
            "max_mean_diff_sd": float(diff.max()),
            "median_mean_diff_sd": float(np.median(diff)),
        }
    return {
        "parameters": rows,
        "s_per_replicate_batched": sample_s / replicates,
        "s_per_replicate_unbatched": per_rep,
    }


# ------------------------------------------------------------------------ reporting


def _versions() -> dict:
    import jax
    import numpyro

    return {"jax": jax.__version__, "numpyro": numpyro.__version__, "numpy": np.__version__}


def summarise(model: str, res: dict, args, pw: dict) -> dict:
    """The JSON payload of one model's SBC result (``markdown`` renders it)."""
    names, diag = res["names"], res["diagnostics"]
    rows = []
    for j, name in enumerate(names):
        counts = rank_bins(res["ranks"][:, j], args.draws, args.bins)
        ess = res["ess"][:, j]
        rows.append(
            {
                "parameter": name,
                "counts": counts.tolist(),
                "p": chisquare_pvalue(counts),
                "ess_min": float(ess.min()),
                "ess_q01": float(np.quantile(ess, 0.01)),
                "ess_median": float(np.median(ess)),
            }
        )
    n = len(res["ranks"])
    return {
        "model": model,
        "replicates": n,
        "replicates_requested": res["requested"],
        "time_limit_s": args.time_limit,
        "batch": args.batch,
        "draws": args.draws,
        "thin": args.thin,
        "warmup": args.warmup,
        "bins": args.bins,
        "test": "chi-square on the rank counts per bin, per parameter",
        "alpha": args.alpha,
        "seed": args.seed,
        "divergences": int(diag["divergences"].sum()),
        "replicates_with_divergences": int((diag["divergences"] > 0).sum()),
        "max_tree_depth_hits": int(diag["max_depth"].sum()),
        "invalid_starts": int((~diag["valid_start"]).sum()),
        "step_size_range": [float(diag["step_size"].min()), float(diag["step_size"].max())],
        "mean_accept_prob": float(diag["accept_prob"].mean()),
        "compile_s": res["compile_s"],
        "sample_s": res["sample_s"],
        "wall_s": res["wall_s"],
        "s_per_replicate": res["sample_s"] / n,
        "load_average": res.get("load_average"),
        "versions": _versions(),
        "parameters": rows,
        "power_sims": args.power_sims,
        "power_scale_error": pw,
        "ranks": res["ranks"].tolist(),
    }


def markdown(r: dict) -> list[str]:
    """The markdown lines of an SBC result (the JSON payload of ``summarise``)."""
    n, asked, pw = r["replicates"], r["replicates_requested"], r["power_scale_error"]
    cmd = (
        f"python benchmarks/sbc.py --models {r['model']} --replicates {asked}"
        + (f" --first {n}" if n < asked else "")
        + f" --batch {r['batch']} --draws {r['draws']} --thin {r['thin']} "
        f"--warmup {r['warmup']} --bins {r['bins']} --alpha {r['alpha']} --seed {r['seed']}"
    )
    limit = r["time_limit_s"]
    cut = (
        f" (the first {n} of the {asked} drawn"
        + (f", as many as fitted in `--time-limit {limit:.0f}` s of sampling)" if limit else ")")
        if n < asked
        else ""
    )
    load = (
        f", load average {r['load_average']:.1f} at the start on a shared 2-core machine"
        if r.get("load_average") is not None
        else ""
    )
    family = 1 - (1 - r["alpha"]) ** len(r["parameters"])
    return [
        f"# SBC: {r['model']}",
        "",
        f"`{cmd}`: {n} replicates{cut}, each NUTS with {r['warmup']} warm-up steps and "
        f"{r['draws']} draws kept (one every {r['thin']} of {r['draws'] * r['thin']} steps); the "
        f"rank of each true value among the {r['draws']} draws in {r['bins']} bins, "
        f"chi-square test at α = {r['alpha']} per parameter. Wall time {r['wall_s']:.0f} s "
        f"({r['compile_s']:.0f} s compiling, {r['s_per_replicate']:.2f} s per replicate, "
        f"{r['batch']} replicates per batch, one CPU thread{load}); "
        f"{r['divergences']} divergent transitions after warm-up "
        f"(in {r['replicates_with_divergences']} replicates), "
        f"{r['max_tree_depth_hits']} kept steps at the maximum tree depth; "
        f"jax {r['versions']['jax']}, numpyro {r['versions']['numpyro']}.",
        "",
        "| parameter | rank counts per bin | p-value | min ESS | 1% ESS | median ESS |",
        "|---|---|---|---|---|---|",
        *(
            f"| {p['parameter']} | {' '.join(map(str, p['counts']))} | {p['p']:.3g} "
            f"| {p['ess_min']:.0f} | {p['ess_q01']:.0f} | {p['ess_median']:.0f} |"
            for p in r["parameters"]
        ),
        "",
        f"ESS: NumPyro's bulk effective sample size of a replicate's {r['draws']} kept "
        f"draws; the smallest, the 1% quantile and the median over the replicates. The "
        f"estimate exceeds {r['draws']} for anti-correlated draws and is negative where the "
        f"integrated autocorrelation time of so short a chain is estimated below zero "
        f"(strongly anti-correlated draws); it is not clipped.",
        "",
        f"Power of this design (simulated, {r['power_sims']} sets of {n} replicates, "
        f"Gaussian posterior): a posterior sd 10% too small is detected in {pw['0.9']:.0%} "
        f"and 10% too large in {pw['1.1']:.0%} of SBC runs per parameter; a calibrated one "
        f"is rejected in {pw['1.0']:.1%} (nominal {r['alpha']:.0%}; for "
        f"{len(r['parameters'])} parameters at least one in {family:.0%}).",
    ]


def _write(stem: Path, payload: dict, lines: list[str]) -> None:
    """Write ``stem``.json and .md, each complete or not at all (temporary name, rename)."""
    for suffix, text in (
        (".json", json.dumps(payload, indent=1) + "\n"),
        (".md", "\n".join(lines) + "\n"),
    ):
        tmp = stem.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(stem.with_suffix(suffix))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", "--model", nargs="+", choices=MODELS, default=["ou"])
    p.add_argument("--replicates", type=int, default=2000)
    p.add_argument("--batch", type=int, default=250, help="replicates per compiled run")
    p.add_argument("--draws", type=int, default=99, help="thinned posterior draws per fit")
    p.add_argument("--thin", type=int, default=5)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--bins", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.01, help="level of each chi-square test")
    p.add_argument("--power-sims", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--check",
        type=int,
        default=0,
        metavar="N",
        help="compare N replicates batched and with MCMC.run; write nothing",
    )
    p.add_argument(
        "--first",
        type=int,
        default=None,
        metavar="N",
        help="fit only the first N of the --replicates drawn (reproduces a cut run)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="S",
        help="per model: start no batch after S seconds of sampling (fewer replicates)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if (args.draws + 1) % args.bins:
        p.error(f"--draws + 1 must be a multiple of --bins, got {args.draws} and {args.bins}")
    for name in ("replicates", "batch", "draws", "thin", "warmup"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.first is not None and not 1 <= args.first <= args.replicates:
        p.error(f"--first must lie in 1..--replicates ({args.replicates}), got {args.first}")

    import jax

    jax.config.update("jax_enable_x64", True)  # this program's own setting
    settings = {k: getattr(args, k) for k in ("batch", "draws", "thin", "warmup", "seed")}
    if args.check:
        for model in args.models:
            res = check(model, args.check, bins=args.bins, **settings)
            print(model, json.dumps(res, indent=1))
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    worst = 1.0
    for model in args.models:
        print(f"{model}: {args.replicates} replicates", flush=True)
        t0 = time.perf_counter()
        load = os.getloadavg()[0]
        res = run_sbc(
            model,
            args.replicates,
            log=lambda s: print(s, flush=True),
            time_limit=args.time_limit,
            first=args.first,
            **settings,
        )
        # The power of the design actually run (the replicates done).
        res["wall_s"] = time.perf_counter() - t0  # prior draws, compiling, sampling, ESS
        res["load_average"] = load
        design = (len(res["ranks"]), args.draws, args.bins, args.alpha)
        pw = {str(s): power(s, *design, sims=args.power_sims) for s in (0.9, 1.0, 1.1)}
        payload = summarise(model, res, args, pw)
        lines = markdown(payload)
        _write(args.out / f"sbc_{model}", payload, lines)
        print("\n".join(lines), flush=True)
        worst = min([worst, *(r["p"] for r in payload["parameters"])])
    return 0 if worst >= args.alpha or math.isnan(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
