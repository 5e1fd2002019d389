"""kalmanad against Stan (rstan): what a user runs, first fit and warm ESS per second.

    python benchmarks/bench_vs_stan.py --setup        # only install Debian's rstan (root)
    python benchmarks/bench_vs_stan.py --quick        # 200 + 200 draws, shorter series
    python benchmarks/bench_vs_stan.py                # 500 warm-up + 1000 draws, 2 chains
    python benchmarks/bench_vs_stan.py --cases ou panel

Cases (data simulated once here with fixed seeds, written to an R dump file for Stan;
the same priors, warm-up, draws and chains on both sides):

ou      OU process, T = 400 irregular times (exponential gaps, mean 0.5), 4 parameters
        (theta, mu, sigma, noise; the priors of models/ou.toml). Stan: the scalar
        Kalman filter in closed form (``peers/stan/ou_scalar.stan``) and the general
        continuous-discrete filter (``ou_ctkf.stan``).
sho     tinygp's SHO (omega, quality, sigma) + mean + noise, T = 1000 (mean gap 0.3),
        5 parameters (``sho.stan``; stationary covariance diag(1, ω²) in closed form).
ctvar   CT-VAR, 2 latents with cross effects, 3 indicators (one free loading), one
        zero-order-hold input, T = 200, 15 parameters (``ctvar.stan``).
panel   hierarchical panel, 30 subjects x 25 irregular observations, 2 latents observed
        with noise, subject random continuous intercepts (non-centred), stationary start
        per subject; 72 parameters (``panel.stan``).

The Stan programs are written as ctsem writes its filter: ``matrix_exp`` of the drift,
the step's process-noise covariance from the stationary covariance (Q_d = P∞ − A_d P∞
A_dᵀ; P∞ by a Kronecker-sum Lyapunov solve), ``target +=`` the Gaussian prediction-error
decomposition (``peers/stan/ctkf_functions.stan``).

What is timed, kalmanad: what a user writes. ``numpyro.infer.MCMC(NUTS(model)).run``
with ``kalmanad.distributions.LinearSDEDistribution`` (ou, sho, ctvar, and the panel
written as a NumPyro model with a plate and a vmapped ``kalmanad.LinearSDE``);
``kalmanad.fit_nuts`` on a spec (``peers/panel_cint.toml``) and the ``kalmanad fit``
command for the panel. The first call includes compilation; every result is blocked on
(``jax.block_until_ready``). MCMC runs its chains with NumPyro's default
``chain_method="parallel"`` on ``numpyro.set_host_device_count(chains)`` CPU devices
(NumPyro's documented way to run chains in parallel on CPU); ``fit_nuts`` and the
command use their default ``"vectorized"``. No persistent compilation cache (the
command's is pointed at a fresh folder for its first fit, and reused for its second).

What is timed, Stan: ``Rscript peers/run_stan.R``: ``stan_model`` (compile) and
``sampling`` (chains in parallel processes, ``cores = chains``) each timed with
``system.time``; first fit = compile + first sampling, warm = a second ``sampling`` of
the compiled model (new seed).

Metrics. First fit: wall seconds to the first posterior (kalmanad: the first
``MCMC.run`` / ``fit_nuts`` call / whole ``kalmanad fit`` process; Stan: compile +
sampling). Warm: min over parameters of the bulk ESS (``arviz.ess``, the same function
on both sides' draws) divided by the wall time of the whole second run (warm-up +
draws). Ratios are kalmanad ÷ Stan (first fit: < 1 is faster; ESS/s: > 1 is faster).
Agreement: every parameter's posterior mean on both sides, |Δmean| in pooled posterior
sds. Issue 19's targets: warm ESS/s ≥ 1.5× Stan on ou, sho, ctvar and ≥ 2× on panel;
first fit ≤ 0.15× Stan's.

Outputs: tables on stdout, ``benchmarks/results/bench_vs_stan[_quick].json`` and
``.md``; Stan's logs and draws in ``benchmarks/results/logs/vs_stan/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("ou", "sho", "ctvar", "panel")


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 + 200 draws, shorter series")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--num-warmup", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument(
        "--chains", type=int, default=2, help="chains on both sides (2: one per core here)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stan", action="store_true", help="kalmanad only (no R peer)")
    p.add_argument("--no-cli", action="store_true", help="skip the `kalmanad fit` command")
    p.add_argument("--stan-timeout", type=float, default=3600.0, help="seconds per Rscript")
    p.add_argument(
        "--setup",
        action="store_true",
        help="only install the R peer (r-cran-rstan, apt-get, root) where missing, then exit",
    )
    p.add_argument(
        "--no-setup", action="store_true", help="never install: skip the peer where it is missing"
    )
    return p.parse_args()


ARGS = _parse()
import numpyro  # noqa: E402

# NumPyro's documented way to run chains in parallel on CPU: before JAX starts.
numpyro.set_host_device_count(ARGS.chains)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    machine_info,
    markdown_table,
    ou_linear_sde,
    sho_linear_sde,
    text_table,
    write_results,
)
from _rpeers import (  # noqa: E402
    PEERS,
    compare_means,
    ensure_r,
    min_ess,
    read_draws,
    read_name_values,
    run_rscript,
    stan_columns,
    write_rdump,
)

import kalmanad  # noqa: E402
from kalmanad.distributions import LinearSDEDistribution  # noqa: E402

LOGS = RESULTS_DIR / "logs" / "vs_stan"
WARM_TARGET = {"ou": 1.5, "sho": 1.5, "ctvar": 1.5, "panel": 2.0}
FIRST_TARGET = 0.15

# ------------------------------------------------------------------------------ models


def ou_model(times, y=None):
    theta = numpyro.sample("theta", dist.LogNormal(0.0, 1.0))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    sde = ou_linear_sde(theta, mu, sigma, noise)
    numpyro.sample("y", LinearSDEDistribution(sde, times), obs=y)


def sho_model(times, y=None):
    omega = numpyro.sample("omega", dist.LogNormal(0.0, 1.0))
    quality = numpyro.sample("quality", dist.LogNormal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    sde = sho_linear_sde(omega, quality, sigma, noise, mu)
    numpyro.sample("y", LinearSDEDistribution(sde, times), obs=y)


def _drift(auto1, auto2, cross12, cross21):
    return jnp.stack([jnp.stack([-auto1, cross12]), jnp.stack([cross21, -auto2])])


def ctvar_sde(p):
    lam = p["lam"]
    one, zero = jnp.ones_like(lam), jnp.zeros_like(lam)
    h = jnp.stack([jnp.stack([one, zero]), jnp.stack([zero, one]), jnp.stack([lam, zero])])
    return kalmanad.LinearSDE(
        drift=_drift(p["auto1"], p["auto2"], p["cross12"], p["cross21"]),
        diffusion=jnp.diag(jnp.stack([p["sigma1"], p["sigma2"]]) ** 2),
        observation=h,
        observation_noise=jnp.diag(jnp.stack([p["noise1"], p["noise2"], p["noise3"]]) ** 2),
        observation_intercept=p["intercept"],
        input_effect=p["b"][:, None],
    )


def ctvar_model(times, y=None, inputs=None):
    p = {
        "auto1": numpyro.sample("auto1", dist.LogNormal(-0.5, 0.75)),
        "auto2": numpyro.sample("auto2", dist.LogNormal(-0.5, 0.75)),
        "cross12": numpyro.sample("cross12", dist.Normal(0.0, 0.5)),
        "cross21": numpyro.sample("cross21", dist.Normal(0.0, 0.5)),
        "sigma1": numpyro.sample("sigma1", dist.HalfNormal(1.0)),
        "sigma2": numpyro.sample("sigma2", dist.HalfNormal(1.0)),
        "lam": numpyro.sample("lam", dist.Normal(0.0, 1.0)),
        "intercept": numpyro.sample("intercept", dist.Normal(0.0, 3.0).expand([3]).to_event(1)),
        "noise1": numpyro.sample("noise1", dist.HalfNormal(0.5)),
        "noise2": numpyro.sample("noise2", dist.HalfNormal(0.5)),
        "noise3": numpyro.sample("noise3", dist.HalfNormal(0.5)),
        "b": numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1)),
    }
    numpyro.sample("y", LinearSDEDistribution(ctvar_sde(p), times, inputs), obs=y)


def panel_sde(p, c):
    """One subject's model: continuous intercept c (2,), stationary start."""
    return kalmanad.LinearSDE(
        drift=_drift(p["auto1"], p["auto2"], p["cross12"], p["cross21"]),
        diffusion=jnp.diag(jnp.stack([p["sigma1"], p["sigma2"]]) ** 2),
        observation=jnp.eye(2, dtype=c.dtype),
        observation_noise=jnp.diag(jnp.stack([p["noise1"], p["noise2"]]) ** 2),
        drift_intercept=c,
    )


def panel_model(times, y=None):
    """A user's own NumPyro model: a plate over subjects and a vmapped LinearSDE."""
    p = {
        "auto1": numpyro.sample("auto1", dist.LogNormal(-0.5, 0.75)),
        "auto2": numpyro.sample("auto2", dist.LogNormal(-0.5, 0.75)),
        "cross12": numpyro.sample("cross12", dist.Normal(0.0, 0.5)),
        "cross21": numpyro.sample("cross21", dist.Normal(0.0, 0.5)),
        "sigma1": numpyro.sample("sigma1", dist.HalfNormal(1.0)),
        "sigma2": numpyro.sample("sigma2", dist.HalfNormal(1.0)),
        "cint1": numpyro.sample("cint1", dist.Normal(0.0, 1.0)),
        "cint2": numpyro.sample("cint2", dist.Normal(0.0, 1.0)),
        "noise1": numpyro.sample("noise1", dist.HalfNormal(0.5)),
        "noise2": numpyro.sample("noise2", dist.HalfNormal(0.5)),
    }
    sd = jnp.stack(
        [
            numpyro.sample("cint1_sd", dist.HalfNormal(1.0)),
            numpyro.sample("cint2_sd", dist.HalfNormal(1.0)),
        ]
    )
    n_sub = times.shape[0]
    with numpyro.plate("subjects", n_sub):
        z = numpyro.sample("re_z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        c = jnp.stack([p["cint1"], p["cint2"]]) + sd * z  # (S, 2), non-centred
        sdes = jax.vmap(lambda ci: panel_sde(p, ci))(c)
        numpyro.sample("y", LinearSDEDistribution(sdes, times), obs=y)


# -------------------------------------------------------------------------------- data

TRUTH = {
    "ou": {"theta": 0.5, "mu": 2.0, "sigma": 1.0, "noise": 0.3},
    "sho": {"omega": 1.5, "quality": 2.5, "sigma": 1.0, "mu": 0.5, "noise": 0.3},
    "ctvar": {
        "auto1": 0.8,
        "auto2": 0.5,
        "cross12": 0.3,
        "cross21": -0.4,
        "sigma1": 0.8,
        "sigma2": 0.6,
        "lam": 0.7,
        "intercept": np.array([1.0, -1.0, 0.5]),
        "noise1": 0.2,
        "noise2": 0.2,
        "noise3": 0.3,
        "b": np.array([0.5, -0.3]),
    },
    "panel": {
        "auto1": 0.8,
        "auto2": 0.5,
        "cross12": 0.2,
        "cross21": -0.3,
        "sigma1": 0.6,
        "sigma2": 0.6,
        "cint1": 0.5,
        "cint2": -0.3,
        "noise1": 0.3,
        "noise2": 0.3,
        "cint1_sd": 0.4,
        "cint2_sd": 0.4,
    },
}
SEEDS = {"ou": 191, "sho": 192, "ctvar": 193, "panel": 194}
MEAN_GAP = {"ou": 0.5, "sho": 0.3, "ctvar": 0.5, "panel": 0.6}


def sizes(quick: bool) -> dict:
    """Series lengths: the issue's, halved (panel: half the subjects) in --quick."""
    full = {"ou": 400, "sho": 1000, "ctvar": 200, "panel": (30, 25)}
    if not quick:
        return full
    return {"ou": 200, "sho": 500, "ctvar": 100, "panel": (15, 25)}


def _times(rng, shape, gap):
    steps = rng.exponential(gap, size=shape)
    steps[..., 0] = 0.0
    return np.round(np.cumsum(steps, axis=-1), 6)


def simulate_case(case: str, quick: bool) -> dict:
    """The case's data (numpy), simulated exactly by ``kalmanad.simulate``."""
    rng = np.random.default_rng(SEEDS[case])
    key = jax.random.PRNGKey(SEEDS[case])
    size = sizes(quick)[case]
    tr = {k: jnp.asarray(v) for k, v in TRUTH[case].items()}
    if case == "ou":
        t = _times(rng, size, MEAN_GAP[case])
        sim = kalmanad.simulate(ou_linear_sde(**tr), t, key)
        return {"times": t, "y": np.asarray(sim.observations)}
    if case == "sho":
        t = _times(rng, size, MEAN_GAP[case])
        sde = sho_linear_sde(tr["omega"], tr["quality"], tr["sigma"], tr["noise"], tr["mu"])
        sim = kalmanad.simulate(sde, t, key)
        return {"times": t, "y": np.asarray(sim.observations)}
    if case == "ctvar":
        t = _times(rng, size, MEAN_GAP[case])
        u = rng.normal(size=(size, 1))
        sim = kalmanad.simulate(ctvar_sde(tr), t, key, inputs=u)
        return {"times": t, "y": np.asarray(sim.observations), "inputs": u}
    n_sub, n_obs = size
    t = _times(rng, (n_sub, n_obs), MEAN_GAP[case])
    z = rng.normal(size=(n_sub, 2))
    c = (
        np.array([TRUTH[case]["cint1"], TRUTH[case]["cint2"]])
        + np.array([TRUTH[case]["cint1_sd"], TRUTH[case]["cint2_sd"]]) * z
    )
    sdes = jax.vmap(lambda ci: panel_sde(tr, ci))(jnp.asarray(c))
    sim = kalmanad.simulate(sdes, t, key)
    return {"times": t, "y": np.asarray(sim.observations), "re_z_truth": z}


def stan_data(case: str, data: dict) -> dict:
    t, y = data["times"], data["y"]
    if case in ("ou", "sho"):
        return {"T": int(t.size), "t": t, "y": y[:, 0]}
    if case == "ctvar":
        return {"T": int(t.size), "t": t, "Y": y, "u": data["inputs"][:, 0]}
    s, n = t.shape
    return {"S": int(s), "T": int(n), "t": t, "Y": y.reshape(s * n, 2)}


STAN_PROGRAMS = {
    "ou": ("ou_scalar.stan", "ou_ctkf.stan"),
    "sho": ("sho.stan",),
    "ctvar": ("ctvar.stan",),
    "panel": ("panel.stan",),
}
MODELS = {"ou": ou_model, "sho": sho_model, "ctvar": ctvar_model, "panel": panel_model}


# ------------------------------------------------------------------------- contenders


def _sampled_sites(case: str) -> list[str]:
    return [k for k in TRUTH[case]] + (["re_z"] if case == "panel" else [])


def run_mcmc(case: str, data: dict, settings: dict) -> dict:
    """``MCMC(NUTS(model)).run`` twice: the first (compile included) and a warm rerun."""
    model = MODELS[case]
    kw = {"y": data["y"]}
    if "inputs" in data:
        kw["inputs"] = data["inputs"]
    mcmc = MCMC(
        NUTS(model),
        num_warmup=settings["num_warmup"],
        num_samples=settings["num_samples"],
        num_chains=settings["chains"],
        progress_bar=False,
    )
    out = {"contender": "kalmanad MCMC(NUTS).run", "chain_method": mcmc.chain_method}
    for label, seed in (("first", settings["seed"]), ("warm", settings["seed"] + 1)):
        t0 = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(seed), data["times"], extra_fields=("diverging",), **kw)
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        out[f"{label}_s"] = time.perf_counter() - t0
        out[f"{label}_divergences"] = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    out["columns"] = stan_columns(
        {k: np.asarray(v) for k, v in samples.items()}, _sampled_sites(case)
    )
    return out


PANEL_SPEC = PEERS / "panel_cint.toml"


def run_fit_nuts(case: str, data: dict, settings: dict) -> dict:
    """``kalmanad.fit_nuts`` on the zoo-style spec of the panel, twice."""
    spec = kalmanad.load_model(PANEL_SPEC)
    out = {"contender": "kalmanad.fit_nuts(spec)", "chain_method": "vectorized"}
    for label, seed in (("first", settings["seed"]), ("warm", settings["seed"] + 1)):
        t0 = time.perf_counter()
        idata = kalmanad.fit_nuts(
            spec,
            data["times"],
            data["y"],
            num_warmup=settings["num_warmup"],
            num_samples=settings["num_samples"],
            num_chains=settings["chains"],
            seed=seed,
            progress_bar=False,
        )
        out[f"{label}_s"] = time.perf_counter() - t0
        out[f"{label}_divergences"] = int(idata.sample_stats["diverging"].values.sum())
    post = {k: np.asarray(idata.posterior[k].values) for k in idata.posterior.data_vars}
    out["columns"] = stan_columns(post, _sampled_sites(case))
    return out


def run_cli(case: str, data: dict, settings: dict, work: Path) -> dict:
    """``kalmanad fit spec.toml data.csv`` as a subprocess, twice (fresh, then warm cache)."""
    import arviz as az

    t, y = data["times"], data["y"]
    csv = work / "panel.csv"
    with open(csv, "w") as fh:
        fh.write("id,time,y1,y2\n")
        for s in range(t.shape[0]):
            for k in range(t.shape[1]):
                row = (t[s, k], y[s, k, 0], y[s, k, 1])
                fh.write(f"{s + 1}," + ",".join(repr(float(v)) for v in row) + "\n")
    cache = work / "kalmanad_cache"
    env = dict(os.environ, KALMANAD_CACHE_DIR=str(cache))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = {"contender": "`kalmanad fit` (command)", "chain_method": "vectorized"}
    for label, seed in (("first", settings["seed"]), ("warm", settings["seed"] + 1)):
        res = work / f"cli_{label}"
        cmd = [
            sys.executable,
            "-m",
            "kalmanad.cli",
            "fit",
            str(PANEL_SPEC),
            str(csv),
            "--subject",
            "id",
            "--time",
            "time",
            "--warmup",
            str(settings["num_warmup"]),
            "--draws",
            str(settings["num_samples"]),
            "--chains",
            str(settings["chains"]),
            "--seed",
            str(seed),
            "--no-plot",
            "--no-progress",
            "--out",
            str(res),
        ]
        t0 = time.perf_counter()
        p = subprocess.run(
            cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent
        )
        out[f"{label}_s"] = time.perf_counter() - t0
        (LOGS / f"cli_{label}.log").write_text(p.stdout + p.stderr)
        if p.returncode != 0:
            raise RuntimeError(f"kalmanad fit exited {p.returncode}: {p.stderr[-500:]}")
        nc = next(res.glob("*_fit.nc"))
        idata = az.from_netcdf(str(nc))
        out[f"{label}_divergences"] = int(idata.sample_stats["diverging"].values.sum())
    post = {k: np.asarray(idata.posterior[k].values) for k in idata.posterior.data_vars}
    out["columns"] = stan_columns(post, _sampled_sites(case))
    return out


def run_stan(case: str, program: str, data: dict, settings: dict) -> dict:
    d = LOGS / f"{case}_{Path(program).stem}"
    d.mkdir(parents=True, exist_ok=True)
    dump = d / "data.R"
    write_rdump(dump, stan_data(case, data))
    args = [
        PEERS / "run_stan.R",
        PEERS / "stan" / program,
        dump,
        d,
        settings["chains"],
        settings["num_warmup"],
        settings["num_samples"],
        settings["seed"],
    ]
    rc, wall, tail = run_rscript(args, timeout=ARGS.stan_timeout, log_path=d / "rscript.log")
    if rc != 0:
        raise RuntimeError(f"Rscript exited {rc}: {tail}")
    tm = read_name_values(d / "timing.csv")
    cols, _ = read_draws(d / "draws_warm.csv")
    return {
        "contender": f"Stan {program}",
        "first_s": tm["compile"] + tm["first_sampling"],
        "compile_s": tm["compile"],
        "first_sampling_s": tm["first_sampling"],
        "warm_s": tm["warm_sampling"],
        # inside Stan's sampler (slowest chain's warm-up + sampling), without rstan's
        # start-up of its parallel workers
        "warm_sampler_s": tm["warm_chain_total_max"],
        "rscript_wall_s": wall,
        "library_load_s": tm["library_load"],
        "first_divergences": int(tm["first_divergences"]),
        "warm_divergences": int(tm["warm_divergences"]),
        "columns": cols,
    }


# -------------------------------------------------------------------------------- main


def _fmt(x, digits=3):
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def main():
    quick = ARGS.quick
    settings = {
        "num_warmup": ARGS.num_warmup or (200 if quick else 500),
        "num_samples": ARGS.num_samples or (200 if quick else 1000),
        "chains": ARGS.chains,
        "seed": ARGS.seed,
        "sizes": sizes(quick),
    }
    LOGS.mkdir(parents=True, exist_ok=True)
    if ARGS.setup:
        ok, msg, versions = ensure_r(["rstan"], install=True)
        print(f"rstan {versions.get('rstan')}: {'ready' if ok else msg}")
        return 0 if ok else 1
    t_start = time.time()
    stan_ok, stan_msg, versions = (False, "--no-stan", {})
    if not ARGS.no_stan:
        stan_ok, stan_msg, versions = ensure_r(["rstan"], install=not ARGS.no_setup)
        if not stan_ok:
            print(f"SKIPPING the Stan peer: {stan_msg}", flush=True)
    info = machine_info("float64", quick, rstan=versions.get("rstan"), numpyro=numpyro.__version__)
    info["cpu_devices"] = len(jax.devices())
    print(f"machine load at start {info['load_average_at_start']}, settings {settings}", flush=True)

    results, errors = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in ARGS.cases:
            data = simulate_case(case, quick)
            runners = [("mcmc", run_mcmc, (case, data, settings))]
            if case == "panel":
                runners.append(("fit_nuts", run_fit_nuts, (case, data, settings)))
                if not ARGS.no_cli:
                    runners.append(("cli", run_cli, (case, data, settings, work)))
            if stan_ok:
                for prog in STAN_PROGRAMS[case]:
                    runners.append((prog, run_stan, (case, prog, data, settings)))
            for name, fn, fn_args in runners:
                print(f"[{case}] {name} ...", flush=True)
                load = os.getloadavg()
                try:
                    r = fn(*fn_args)
                except Exception as e:  # one contender failing does not stop the others
                    errors[f"{case}/{name}"] = f"{type(e).__name__}: {e}"
                    print(f"[{case}] {name} FAILED: {errors[f'{case}/{name}']}", flush=True)
                    continue
                r["case"] = case
                r["load_before"] = list(load)
                r["min_ess"], r["min_ess_param"] = min_ess(r["columns"])
                r["warm_ess_per_s"] = r["min_ess"] / r["warm_s"]
                if "warm_sampler_s" in r:
                    r["warm_sampler_ess_per_s"] = r["min_ess"] / r["warm_sampler_s"]
                print(
                    f"[{case}] {r['contender']}: first {r['first_s']:.1f} s, warm "
                    f"{r['warm_s']:.1f} s, min ESS {r['min_ess']:.0f} ({r['min_ess_param']}), "
                    f"{r['warm_ess_per_s']:.2f} ESS/s, load {load[0]:.2f}",
                    flush=True,
                )
                results.append(r)

    # ----------------------------------------------------------------- tables, ratios
    rows, ratio_rows, agree_rows, ratios, targets, agreement = [], [], [], [], [], []
    for case in ARGS.cases:
        at = [r for r in results if r["case"] == case]
        ours = [r for r in at if r["contender"].startswith(("kalmanad", "`kalmanad"))]
        peers = [r for r in at if r["contender"].startswith("Stan")]
        for r in at:
            rows.append(
                [
                    case,
                    r["contender"],
                    _fmt(r["first_s"]),
                    _fmt(r["warm_s"]),
                    f"{r['min_ess']:.0f}",
                    _fmt(r["warm_ess_per_s"]),
                    _fmt(r.get("warm_sampler_ess_per_s")),
                    f"{r['first_divergences']}/{r['warm_divergences']}",
                    f"{r['load_before'][0]:.2f}",
                ]
            )
        for o in ours:
            for p in peers:
                first = o["first_s"] / p["first_s"]
                warm = o["warm_ess_per_s"] / p["warm_ess_per_s"]
                ratios.append(
                    {
                        "case": case,
                        "contender": o["contender"],
                        "peer": p["contender"],
                        "first_fit_ratio": first,
                        "warm_ess_per_s_ratio": warm,
                    }
                )
                ratio_rows.append([case, o["contender"], p["contender"], _fmt(first), _fmt(warm)])
                cmp = compare_means(o["columns"], p["columns"])
                worst = max(cmp, key=lambda c: c["diff_in_sd"])
                agreement.append(
                    {"case": case, "contender": o["contender"], "peer": p["contender"], "rows": cmp}
                )
                agree_rows.append(
                    [
                        case,
                        o["contender"],
                        p["contender"],
                        len(cmp),
                        worst["parameter"],
                        f"{worst['diff_in_sd']:.2f}",
                    ]
                )
        best_peer = max(peers, key=lambda p: p["warm_ess_per_s"], default=None)
        for o in ours:
            if best_peer is None:
                continue
            w = o["warm_ess_per_s"] / best_peer["warm_ess_per_s"]
            f = o["first_s"] / best_peer["first_s"]
            targets.append(
                {
                    "target": f"{case}: {o['contender']} warm ESS/s ≥ {WARM_TARGET[case]}× "
                    f"{best_peer['contender']}",
                    "measured": w,
                    "met": bool(w >= WARM_TARGET[case]),
                }
            )
            targets.append(
                {
                    "target": f"{case}: {o['contender']} first fit ≤ {FIRST_TARGET}× "
                    f"{best_peer['contender']}",
                    "measured": f,
                    "met": bool(f <= FIRST_TARGET),
                }
            )

    head = [
        "case",
        "contender",
        "first fit s",
        "warm run s",
        "min ESS",
        "warm ESS/s",
        "Stan in-sampler ESS/s",
        "div 1st/warm",
        "load",
    ]
    rhead = ["case", "kalmanad", "Stan", "first fit (<1 faster)", "warm ESS/s (>1 faster)"]
    ahead = ["case", "kalmanad", "Stan", "parameters", "worst", "|Δmean|/sd"]
    print("\n" + text_table(head, rows))
    print("\nratios kalmanad ÷ Stan\n" + text_table(rhead, ratio_rows))
    print("\nposterior means\n" + text_table(ahead, agree_rows))
    for e, msg in errors.items():
        print(f"FAILED {e}: {msg}")
    load_end = list(os.getloadavg())
    name = "bench_vs_stan_quick" if quick else "bench_vs_stan"
    md = [
        f"# kalmanad vs Stan (rstan){' — quick' if quick else ''}",
        "",
        f"`python benchmarks/bench_vs_stan.py{' --quick' if quick else ''}`: "
        f"{settings['num_warmup']} warm-up + {settings['num_samples']} draws, "
        f"{settings['chains']} chains on both sides, series sizes {settings['sizes']}. "
        f"{info['cpu_count']} CPUs, load average at start {info['load_average_at_start']}, "
        f"at end {load_end}; rstan {versions.get('rstan')}, numpyro {numpyro.__version__}, "
        f"jax {jax.__version__}. First fit: wall time to the first posterior, compilation "
        "included. Warm: min bulk ESS (arviz) ÷ wall time of a second whole run (warm-up + "
        "draws) with the compiled model. Stan in-sampler: the same ESS ÷ the slowest chain's "
        "warm-up + sampling time from `get_elapsed_time` (without rstan's start-up of its "
        "parallel workers).",
        "",
        markdown_table(head, rows),
        "",
        "Ratios kalmanad ÷ Stan:",
        "",
        markdown_table(rhead, ratio_rows),
        "",
        "Posterior means agree (largest |Δmean| in pooled posterior sds over all sampled "
        "parameters):",
        "",
        markdown_table(ahead, agree_rows),
    ]
    if not stan_ok:
        md += ["", f"Stan peer skipped: {stan_msg}"]
    if errors:
        md += ["", "Failures:", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    for r in results:
        r.pop("columns", None)
    payload = {
        "benchmark": "bench_vs_stan",
        "machine": info,
        "settings": settings,
        "stan": {"available": stan_ok, "message": stan_msg},
        "load_average_at_end": load_end,
        "results": results,
        "ratios": ratios,
        "agreement": agreement,
        "targets": targets,
        "errors": errors,
        "elapsed_s": time.time() - t_start,
    }
    paths = write_results(name, payload, "\n".join(md))
    print(f"\nwrote {paths[0]} and {paths[1]}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
