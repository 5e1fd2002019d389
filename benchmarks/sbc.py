"""Simulation-based calibration (Talts et al. 2018) of kalmanad's likelihood under NUTS.

    python benchmarks/sbc.py --model ou --replicates 200
    python benchmarks/sbc.py --model ctvar3 --replicates 200
    python benchmarks/sbc.py --model panel --replicates 200

Each replicate draws parameters from the prior and data from the model (kalmanad's exact
simulation), runs NUTS (one compiled sampler for all replicates: the data are a traced
argument) and records the rank of each true parameter among ``--draws`` thinned
posterior draws. For a calibrated sampler and likelihood the ranks are uniform on
0..draws; each parameter's ranks are binned into ``--bins`` bins and tested with a
chi-square test at level ``--alpha``.

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
Gaussian model of the error: ``--power-sims`` sets of ``--replicates`` ranks, each
tested as above; the power is the fraction rejected (and at a scale of 1.0 it must be
close to ``--alpha``).

Writes ``benchmarks/results/sbc_<model>.json`` and ``.md``: per parameter the bin counts
and the p-value, the settings, the power and the package versions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------- rank statistics


def rank_bins(ranks, n_draws: int, bins: int) -> np.ndarray:
    """Counts of ranks in 0..n_draws over ``bins`` equal bins ((n_draws + 1) % bins == 0)."""
    ranks = np.asarray(ranks)
    if (n_draws + 1) % bins:
        raise ValueError(f"draws + 1 = {n_draws + 1} is not a multiple of bins = {bins}")
    return np.bincount(ranks * bins // (n_draws + 1), minlength=bins)


def chisquare_pvalue(counts) -> float:
    return float(scipy.stats.chisquare(counts).pvalue)


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
    N(0, scale²); the rank is the number of draws below θ.
    """
    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(sims):
        theta = rng.standard_normal(replicates)
        draws = scale * rng.standard_normal((replicates, n_draws))
        ranks = np.sum(draws < theta[:, None], axis=1)
        rejected += chisquare_pvalue(rank_bins(ranks, n_draws, bins)) < alpha
    return rejected / sims


# ------------------------------------------------------------------------- models


def _models():
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


def _times(model: str, rng) -> np.ndarray:
    if model == "ou":
        return np.cumsum(rng.exponential(0.5, 40))
    if model == "ctvar3":
        return np.cumsum(rng.exponential(0.5, 60))
    return np.cumsum(rng.exponential(0.5, (8, 25)), axis=-1)


def _stable(draw: dict) -> bool:
    a = np.array([[-draw["auto1"], draw["cross12"]], [draw["cross21"], -draw["auto2"]]])
    return bool(np.all(np.linalg.eigvals(a).real < 0))


def run_sbc(model: str, replicates: int, n_draws: int, thin: int, warmup: int, seed: int):
    """Ranks (replicates, params) of the true values among ``n_draws`` thinned draws."""
    import jax
    from numpyro.infer import MCMC, NUTS, Predictive

    fn, names = _models()[model]
    rng = np.random.default_rng(seed)
    times = _times(model, rng)
    mcmc = MCMC(
        NUTS(fn),
        num_warmup=warmup,
        num_samples=n_draws * thin,
        thinning=thin,
        progress_bar=False,
        jit_model_args=True,
    )
    prior = Predictive(fn, num_samples=1)
    ranks, divergences = [], 0
    key = jax.random.PRNGKey(seed)
    while len(ranks) < replicates:
        key, k_prior, k_run = jax.random.split(key, 3)
        sim = {k: np.asarray(v[0]) for k, v in prior(k_prior, times).items()}
        if model == "ctvar3" and not _stable(sim):
            continue  # outside the prior's support (see the module docstring)
        if not np.all(np.isfinite(sim["y"])):
            continue
        mcmc.run(k_run, times, y=sim["y"], extra_fields=("diverging",))
        post = mcmc.get_samples()
        divergences += int(np.sum(mcmc.get_extra_fields()["diverging"]))
        ranks.append([int(np.sum(np.asarray(post[k]) < sim[k])) for k in names])
    return names, np.asarray(ranks), divergences


def _versions() -> dict:
    import jax
    import numpyro

    return {"jax": jax.__version__, "numpyro": numpyro.__version__, "numpy": np.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["ou", "ctvar3", "panel"], default="ou")
    p.add_argument("--replicates", type=int, default=2000)
    p.add_argument("--draws", type=int, default=99, help="thinned posterior draws per fit")
    p.add_argument("--thin", type=int, default=5)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--bins", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.01, help="level of each chi-square test")
    p.add_argument("--power-sims", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if (args.draws + 1) % args.bins:
        p.error(f"--draws + 1 must be a multiple of --bins, got {args.draws} and {args.bins}")

    import jax

    jax.config.update("jax_enable_x64", True)  # this program's own setting

    start = time.perf_counter()
    names, ranks, divergences = run_sbc(
        args.model, args.replicates, args.draws, args.thin, args.warmup, args.seed
    )
    elapsed = time.perf_counter() - start
    rows = []
    for j, name in enumerate(names):
        counts = rank_bins(ranks[:, j], args.draws, args.bins)
        rows.append({"parameter": name, "counts": counts.tolist(), "p": chisquare_pvalue(counts)})
    design = (args.replicates, args.draws, args.bins, args.alpha)
    pw = {str(s): power(s, *design, sims=args.power_sims) for s in (0.9, 1.0, 1.1)}
    family = 1 - (1 - args.alpha) ** len(names)
    payload = {
        "model": args.model,
        "replicates": args.replicates,
        "draws": args.draws,
        "thin": args.thin,
        "warmup": args.warmup,
        "bins": args.bins,
        "alpha": args.alpha,
        "seed": args.seed,
        "divergences": divergences,
        "elapsed_s": elapsed,
        "versions": _versions(),
        "parameters": rows,
        "power_scale_error": pw,
        "ranks": ranks.tolist(),
    }
    lines = [
        f"# SBC: {args.model}",
        "",
        f"`python benchmarks/sbc.py --model {args.model} --replicates {args.replicates}` "
        f"({args.draws} thinned draws (thin {args.thin}) after {args.warmup} warm-up "
        f"steps per replicate, {args.bins} bins, chi-square test at α = {args.alpha} per "
        f"parameter; {elapsed:.0f} s; {divergences} divergent transitions in all; "
        f"jax {payload['versions']['jax']}, numpyro {payload['versions']['numpyro']}).",
        "",
        "| parameter | rank counts per bin | p-value |",
        "|---|---|---|",
        *(f"| {r['parameter']} | {' '.join(map(str, r['counts']))} | {r['p']:.3g} |" for r in rows),
        "",
        f"Power of this design (simulated, {args.power_sims} sets, Gaussian posterior): a "
        f"posterior sd 10% too small is detected in {pw['0.9']:.0%} and 10% too large in "
        f"{pw['1.1']:.0%} of SBC runs per parameter; a calibrated one is rejected in "
        f"{pw['1.0']:.1%} (nominal {args.alpha:.0%}; for {len(names)} parameters at least "
        f"one in {family:.0%}).",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"sbc_{args.model}"
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    worst = min(r["p"] for r in rows)
    return 0 if worst >= args.alpha or math.isnan(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
