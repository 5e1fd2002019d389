"""Scale: a 1000-subject panel, long series, gradient memory, float32, sharding (issue 6).

    python benchmarks/bench_scale.py            # everything, T up to 10⁶, NUTS 500 + 500
    python benchmarks/bench_scale.py --quick    # CI size: T up to 10⁴, NUTS 10 + 10
    python benchmarks/bench_scale.py --parts panel sharded   # a subset

The panel is a fixed-effects continuous-time VAR with 3 latent processes, each observed
with noise (H = I, intercepts μ, noise sd ν): drift A (3×3, stable truth with cross
effects), diffusion diag(σ²), a stationary start; 1000 subjects × 50 observations at
irregular times (exponential gaps, mean 0.5, a fixed seed per subject), simulated
exactly by ``kalmanad.simulate``. The parts:

panel     log-likelihood + gradient (w.r.t. A, σ, μ, ν) of the whole panel for the three
          kalmanad filters and the dynestyx peer (the same model, vmapped over
          subjects); the values and gradients are checked to agree (≤ 1e-8 relative)
          before timing. Target (issue 6, CPU): < 0.2 s.
nuts      NumPyro NUTS on the panel (``LinearSDEDistribution`` in a ``numpyro.plate`` over
          subjects; priors of models/ctvar.toml), one chain from ``init_to_median``:
          wall time of warm-up (including compilation) + sampling, min bulk ESS, ESS/s.
          Target (full run only: 500 warm-up + 500 draws): < 10 minutes on 2 cores;
          ``--quick`` runs a few transitions and reports the time per transition and
          a projection (labelled as such, not a measurement of the target).
sweep     one 3-latent series of T = 10²…10⁶ (``--quick``: ≤ 10⁴): sequential vs
          parallel filter, log-likelihood and log-likelihood + gradient.
memory    the gradient's memory for long T with and without ``checkpoint=k``
          (k ≈ √T and k = 100) for the sequential and sqrt filters, read
          deterministically from XLA's buffer assignment
          (``jax.jit(f).lower(...).compile().memory_analysis()``: temp + output bytes),
          for the whole log-likelihood and for the filter alone on a precomputed
          discrete model; reported in units of T·n² floats (O(T·n²) is the bound).
precision float32 against float64 log-likelihoods of one series (T = 10⁴; --quick
          10³) for the sqrt, parallel and sequential filters.
sharded   ``kalmanad.scale.sharded_log_likelihood`` over 4 CPU devices
          (``XLA_FLAGS=--xla_force_host_platform_device_count=4``, in a subprocess since
          the flag must precede ``import jax``) against the single-device panel
          log-likelihood: per-subject values and the gradient of their sum must agree
          (≤ 1e-12 relative), and both are timed.

The dynestyx peer: ``import dynestyx`` when it is installed; otherwise (dynestyx needs
Python ≥ 3.12) its closest equivalent, labelled as such: a per-step Van Loan
discretisation by ``jax.scipy.linalg.expm`` under JAX's AD and cuthbert's parallel
square-root Kalman filter (``_common.dynestyx_loglik``).

Every part runs on JAX's default device (``jax.devices()``: a GPU when there is one,
recorded in the JSON; nothing requires one). Timing protocol of ``_common``:
compiled ahead of time, warmed up, ``block_until_ready``, contenders interleaved,
median of samples. Outputs: tables on stdout, ``benchmarks/results/bench_scale[_quick]
.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

PARTS = ("panel", "nuts", "sweep", "memory", "precision", "sharded")


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI size (see the module docstring)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--subjects", type=int, default=1000)
    p.add_argument("--obs", type=int, default=50, help="observations per subject")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="T values of the sweep")
    p.add_argument(
        "--sequential-max",
        type=int,
        default=None,
        help="largest T at which the sweep runs the sequential filter (on a GPU each of its "
        "steps is a few kernel launches: 10⁶ steps take minutes a call); above it, only "
        "the parallel filter is timed",
    )
    p.add_argument(
        "--precision-T", type=int, default=None, help="T of the float32 part (quick 10³, full 10⁴)"
    )
    p.add_argument("--memory-sizes", type=int, nargs="+", default=None, help="T for memory")
    p.add_argument(
        "--peer-subjects",
        type=int,
        default=None,
        help="subjects of the sub-panel on which the dynestyx peer is timed (default 20: larger "
        "batches of the peer's expm can stall jaxlib's LAPACK ParallelBatchMap on 2 cores)",
    )
    p.add_argument("--num-warmup", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument(
        "--nuts-method",
        default="sequential",
        choices=["sequential", "sqrt", "parallel", "auto"],
        help="filter inside NUTS; auto: the fastest panel value_and_grad of this run's "
        "panel part (sequential when the panel part did not run)",
    )
    p.add_argument(
        "--mass",
        default="dense",
        choices=["dense", "diag"],
        help="NUTS mass matrix (dense: the 18 parameters' posterior correlations, between "
        "drift entries above all, are adapted too, which takes fewer leapfrog steps a draw "
        "and gives a larger min ESS than diag on this panel)",
    )
    p.add_argument(
        "--init",
        default="map",
        choices=["median", "map"],
        help="NUTS start, as fit_nuts(init=...): a Laplace draw around kalmanad.fit_map's mode "
        "with its Laplace covariance as the initial inverse mass matrix (the MAP is timed "
        "with the run), or the prior median (init_to_median), whose early warm-up can be "
        "very long on this panel",
    )
    p.add_argument("--devices", type=int, default=4, help="host devices of the sharded part")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--workers", type=int, default=2, help="threads compiling in parallel")
    p.add_argument("--compile-cache", default=None, help="persistent JAX compilation cache dir")
    p.add_argument("--platform", default=None, help="JAX platform (default: JAX's choice)")
    p.add_argument("--seed", type=int, default=20261122)
    p.add_argument("--sharded-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


ARGS = _parse()
if ARGS.platform:
    os.environ["JAX_PLATFORMS"] = ARGS.platform

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the benchmark's choice; the library never sets it

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DYNESTYX_LABEL,
    call,
    compile_all,
    cpu_target_note,
    dynestyx_loglik,
    dynestyx_version,
    enable_compile_cache,
    format_ms,
    machine_info,
    markdown_table,
    max_rel_diff,
    on_cpu,
    text_table,
    time_interleaved_samples,
    write_results,
)

import kalmanad  # noqa: E402

N = 3  # latent processes = manifest variables
TRUTH = {
    "drift": np.array([[-0.8, 0.3, 0.0], [-0.4, -0.5, 0.2], [0.1, 0.0, -0.6]]),
    "sigma": np.array([0.8, 0.6, 0.5]),
    "mu": np.array([1.0, 0.0, -1.0]),
    "noise": np.array([0.3, 0.3, 0.3]),
}
MEAN_GAP = 0.5
PANEL_TARGET_S = 0.2
NUTS_TARGET_S = 600.0
SHARD_TOL = 1e-12
PEER_TOL = 1e-8
METHODS = ("sequential", "sqrt", "parallel")


# ------------------------------------------------------------------------------ model


def ctvar_sde(p):
    """The 3-latent CT-VAR as a LinearSDE; ``p`` a dict of drift, sigma, mu, noise."""
    dtype = jnp.asarray(p["drift"]).dtype
    return kalmanad.LinearSDE(
        drift=jnp.asarray(p["drift"]),
        diffusion=jnp.diag(jnp.asarray(p["sigma"]) ** 2),
        observation=jnp.eye(N, dtype=dtype),
        observation_noise=jnp.diag(jnp.asarray(p["noise"]) ** 2),
        observation_intercept=jnp.asarray(p["mu"]),
    )


def truth(dtype=np.float64):
    return {k: jnp.asarray(v, dtype) for k, v in TRUTH.items()}


def irregular_times(shape, seed):
    """(…, T) times from 0 with exponential gaps (distinct steps with probability 1)."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(MEAN_GAP, (*shape[:-1], shape[-1] - 1))
    return np.concatenate([np.zeros((*shape[:-1], 1)), np.cumsum(gaps, axis=-1)], axis=-1)


def make_panel(subjects, obs, seed):
    times = irregular_times((subjects, obs), seed)
    sim = kalmanad.simulate(ctvar_sde(truth()), times, jax.random.key(seed))
    return times, np.asarray(sim.observations)


def make_series(T, seed):
    times = irregular_times((T,), seed + T)
    sim = kalmanad.simulate(ctvar_sde(truth()), times, jax.random.key(seed + T))
    return times, np.asarray(sim.observations)


def panel_loglik(times, method, **kw):
    def f(p, y):
        return jnp.sum(kalmanad.log_likelihood(ctvar_sde(p), times, y, method=method, **kw))

    return f


def peer_panel_loglik(times):
    t = jnp.asarray(times)

    def f(p, y):
        model = ctvar_sde(p)
        return jnp.sum(jax.vmap(lambda ti, yi: dynestyx_loglik(model, ti, yi))(t, y))

    return f


def _timing(repeats_quick=5, repeats_full=11):
    repeats = ARGS.repeats or (repeats_quick if ARGS.quick else repeats_full)
    return repeats, (8.0 if ARGS.quick else 30.0)


def _stats(samples):
    return {k: (float(np.median(v)), float(np.min(v)), len(v)) for k, v in samples.items()}


# ------------------------------------------------------------------------------ parts


def part_panel(times, y):
    """(a) Panel log-likelihood + gradient: the kalmanad filters on the whole panel, and
    the dynestyx peer against kalmanad sequential on a sub-panel of the first
    ``--peer-subjects`` subjects (the peer's per-step ``expm`` under AD costs ~0.5 ms a
    step on 2 cores: the full panel would take minutes per call)."""
    theta = truth()
    yj = jnp.asarray(y)
    sub = ARGS.peer_subjects or 20
    methods = ("sequential", "parallel") if ARGS.quick else METHODS
    lls = {f"kalmanad {m}": panel_loglik(times, m) for m in methods}
    jobs = {k: (jax.value_and_grad(f), (theta, yj)) for k, f in lls.items()}
    ys = yj[:sub]
    jobs[f"kalmanad sequential, {sub} subjects"] = (
        jax.value_and_grad(panel_loglik(times[:sub], "sequential")),
        (theta, ys),
    )
    jobs[f"{DYNESTYX_LABEL}, {sub} subjects"] = (
        jax.value_and_grad(peer_panel_loglik(times[:sub])),
        (theta, ys),
    )
    if not ARGS.quick:
        jobs["kalmanad sequential (value)"] = (lls["kalmanad sequential"], (theta, yj))
        jobs["kalmanad parallel (value)"] = (lls["kalmanad parallel"], (theta, yj))
    t0 = time.perf_counter()
    exe, compile_s = compile_all(jobs, ARGS.workers)
    print(f"  panel: compiled {len(exe)} functions in {time.perf_counter() - t0:.0f} s", flush=True)
    out = {k: call(e, jobs[k][1]) for k, e in exe.items()}
    ref = out["kalmanad sequential"]
    ref_sub = out[f"kalmanad sequential, {sub} subjects"]
    diffs = {}
    for k, v in out.items():
        if k.endswith("(value)"):
            diffs[k] = max_rel_diff(v, ref[0])
        elif k.endswith(" subjects"):
            diffs[k] = max_rel_diff(v, ref_sub)
        else:
            diffs[k] = max_rel_diff(v, ref)
        if not diffs[k] <= PEER_TOL:
            raise AssertionError(
                f"panel: {k} disagrees with kalmanad sequential: relative {diffs[k]:.3g}"
            )
    repeats, max_s = _timing()
    samples = time_interleaved_samples(
        {k: (e, jobs[k][1]) for k, e in exe.items()}, repeats, 0.05, max_s
    )
    st = _stats(samples)
    peer = st[f"{DYNESTYX_LABEL}, {sub} subjects"][0]
    rows = []
    for k in exe:
        med, low, ns = st[k]
        rows.append(
            {
                "contender": k,
                "subjects": sub if k.endswith(" subjects") else int(times.shape[0]),
                "computes": "value" if k.endswith("(value)") else "value_and_grad",
                "median_s": med,
                "min_s": low,
                "samples": ns,
                "compile_s": compile_s[k],
                "ratio_vs_dynestyx": med / peer if k.endswith(" subjects") else None,
                "rel_diff_vs_kalmanad_sequential": diffs[k],
                "log_likelihood": float(out[k][0] if not k.endswith("(value)") else out[k]),
            }
        )
    targets = []
    cpu = on_cpu()
    for m in methods:
        r = next(r for r in rows if r["contender"] == f"kalmanad {m}")
        targets.append(
            {
                "target": f"panel {ARGS.subjects}×{ARGS.obs}, 3 latent: kalmanad {m} "
                f"log-likelihood + gradient < {PANEL_TARGET_S} s" + cpu_target_note(),
                "measured": r["median_s"],
                "unit": "s",
                "met": bool(r["median_s"] < PANEL_TARGET_S) if cpu else None,
            }
        )
    return rows, targets


def part_nuts(times, y):
    """(b) NUTS on the panel, fixed-effects CT-VAR through LinearSDEDistribution."""
    import arviz as az
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS, init_to_median

    from kalmanad.distributions import LinearSDEDistribution
    from kalmanad.inference import _map_start

    num_warmup = ARGS.num_warmup or (10 if ARGS.quick else 500)
    num_samples = ARGS.num_samples or (10 if ARGS.quick else 500)
    method = ARGS.nuts_method
    off = [(i, j) for i in range(N) for j in range(N) if i != j]
    rows_idx, cols_idx = np.array([i for i, _ in off]), np.array([j for _, j in off])

    def model(times, y):
        auto = numpyro.sample("auto", dist.LogNormal(-0.5, 0.75).expand([N]).to_event(1))
        cross = numpyro.sample("cross", dist.Normal(0.0, 0.5).expand([len(off)]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0).expand([N]).to_event(1))
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0).expand([N]).to_event(1))
        noise = numpyro.sample("noise", dist.HalfNormal(0.5).expand([N]).to_event(1))
        drift = jnp.diag(-auto).at[rows_idx, cols_idx].set(cross)
        sde = ctvar_sde({"drift": drift, "sigma": sigma, "mu": mu, "noise": noise})
        with numpyro.plate("subjects", times.shape[0]):
            numpyro.sample("y", LinearSDEDistribution(sde, times, method=method), obs=y)

    yj = jnp.asarray(y)
    t_map = time.perf_counter()
    start, init_params = {"init_strategy": init_to_median(num_samples=15)}, None
    if ARGS.init == "map":
        # fit_nuts(init="map")'s own start: the chain begins at a Laplace draw around
        # fit_map's mode, with the Laplace covariance as the initial inverse mass matrix.
        _, init_params, inverse_mass_matrix = _map_start(
            model, times, {"y": y}, num_chains=1, dense_mass=ARGS.mass == "dense", seed=ARGS.seed
        )
        if inverse_mass_matrix is not None:
            start["inverse_mass_matrix"] = inverse_mass_matrix
    t_map = time.perf_counter() - t_map
    kernel = NUTS(model, dense_mass=ARGS.mass == "dense", **start)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=1,
        progress_bar=False,
    )
    key = jax.random.key(ARGS.seed)
    t0 = time.perf_counter()
    mcmc.warmup(key, times, yj, init_params=init_params)
    jax.block_until_ready(mcmc.post_warmup_state)
    t1 = time.perf_counter()
    mcmc.run(mcmc.post_warmup_state.rng_key, times, yj, extra_fields=("num_steps", "diverging"))
    samples = jax.block_until_ready(mcmc.get_samples())
    t2 = time.perf_counter()
    extra = mcmc.get_extra_fields()
    n_steps = int(np.sum(np.asarray(extra["num_steps"])))
    divergences = int(np.sum(np.asarray(extra["diverging"])))
    ess = az.ess(az.convert_to_dataset({k: np.asarray(v)[None] for k, v in samples.items()}))
    ess_flat = {
        f"{k}[{i}]": float(v)
        for k in samples
        for i, v in enumerate(np.atleast_1d(np.asarray(ess[k].values)))
    }
    min_ess = min(ess_flat.values())
    total = t2 - t0 + t_map
    row = {
        "method": method,
        "mass": ARGS.mass,
        "init": ARGS.init,
        "map_s": t_map,
        "subjects": int(times.shape[0]),
        "obs_per_subject": int(times.shape[1]),
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "warmup_incl_compile_s": t1 - t0,
        "sampling_s": t2 - t1,
        "total_s": total,
        "min_ess": min_ess,
        "min_ess_param": min(ess_flat, key=ess_flat.get),
        "ess_per_s": min_ess / (t2 - t1),
        "ess_per_s_incl_warmup_and_compile": min_ess / total,
        "leapfrog_per_draw": float(np.mean(np.asarray(extra["num_steps"]))),
        "grad_evals_per_s": n_steps / (t2 - t1),
        "divergences": divergences,
        "posterior_mean": {k: np.asarray(v).mean(0).tolist() for k, v in samples.items()},
        "truth": {
            "auto": (-np.diag(TRUTH["drift"])).tolist(),
            "cross": TRUTH["drift"][rows_idx, cols_idx].tolist(),
            **{k: TRUTH[k].tolist() for k in ("sigma", "mu", "noise")},
        },
    }
    full = num_warmup >= 500 and num_samples >= 500
    # Projection of the 500 + 500 wall time from the sampling-phase cost per transition
    # (warm-up transitions are usually longer early on): labelled, never a target result.
    row["projected_500_500_s"] = t_map + (t1 - t0) + (t2 - t1) / num_samples * (1000 - num_warmup)
    target = {
        "target": f"NUTS 500 warm-up + 500 draws on the {ARGS.subjects}×{ARGS.obs} panel "
        f"({method} filter, {ARGS.mass} mass, {ARGS.init} start) < "
        f"{NUTS_TARGET_S / 60:.0f} min on "
        f"{os.cpu_count()} cores" + cpu_target_note(),
        "measured": total if full else None,
        "projected_from_quick": None if full else row["projected_500_500_s"],
        "unit": "s",
        "met": bool(total < NUTS_TARGET_S) if full and on_cpu() else None,
    }
    print(
        f"  nuts: {num_warmup}+{num_samples} transitions in {total:.0f} s (warm-up incl. "
        f"compile {t1 - t0:.0f} s), min ESS {min_ess:.0f}, ESS/s {row['ess_per_s']:.2f}",
        flush=True,
    )
    return [row], [target]


def part_sweep(sizes):
    """(c) Sequential vs parallel over T, value and value_and_grad."""
    theta = truth()
    rows = []
    repeats, max_s = _timing(3, 7)
    for T in sizes:
        times, y = make_series(T, ARGS.seed)
        yj = jnp.asarray(y)
        jobs = {}
        with_seq = ARGS.sequential_max is None or T <= ARGS.sequential_max
        for m in ("sequential", "parallel") if with_seq else ("parallel",):
            f = panel_loglik(times, m)
            if not ARGS.quick:
                jobs[(m, "value")] = (f, (theta, yj))
            jobs[(m, "value_and_grad")] = (jax.value_and_grad(f), (theta, yj))
        t0 = time.perf_counter()
        exe, compile_s = compile_all(jobs, ARGS.workers)
        out = {k: call(e, jobs[k][1]) for k, e in exe.items()}
        diff = (
            max_rel_diff(out[("parallel", "value_and_grad")], out[("sequential", "value_and_grad")])
            if with_seq
            else None
        )
        if diff is not None and not diff <= 1e-8:
            raise AssertionError(f"sweep T={T}: parallel vs sequential relative {diff:.3g}")
        samples = time_interleaved_samples(
            {k: (e, jobs[k][1]) for k, e in exe.items()}, repeats, 0.05, max_s
        )
        st = _stats(samples)
        for what in ("value_and_grad",) if ARGS.quick else ("value", "value_and_grad"):
            seq = st[("sequential", what)][0] if with_seq else None
            par = st[("parallel", what)][0]
            rows.append(
                {
                    "T": T,
                    "computes": what,
                    "sequential_s": seq,
                    "parallel_s": par,
                    "parallel_over_sequential": par / seq if with_seq else None,
                    "sequential_us_per_step": seq / T * 1e6 if with_seq else None,
                    "parallel_us_per_step": par / T * 1e6,
                    "compile_s": {m: compile_s[(m, w)] for m, w in compile_s if w == what},
                    "rel_diff_parallel_vs_sequential": diff,
                }
            )
        print(
            f"  sweep T={T}: compiled+checked+timed in {time.perf_counter() - t0:.0f} s, "
            f"grad seq {format_ms(rows[-1]['sequential_s'])} ms, "
            f"par {format_ms(rows[-1]['parallel_s'])} ms",
            flush=True,
        )
        del exe, jobs, out
    return rows


def _memory(fn, args):
    mem = jax.jit(fn).lower(*args).compile().memory_analysis()
    if mem is None:
        return None
    return {
        "temp_bytes": int(mem.temp_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "peak_bytes": int(mem.temp_size_in_bytes + mem.output_size_in_bytes),
    }


def _has_checkpoint():
    import inspect

    return "checkpoint" in inspect.signature(kalmanad.kalman_filter).parameters


def part_memory(sizes):
    """(d) Gradient memory with and without checkpoint=, from XLA's buffer assignment."""
    from kalmanad.discretize import discretize_model
    from kalmanad.filter import filter_ssm

    theta = truth()
    rows = []
    has_ckpt = _has_checkpoint()
    for T in sizes:
        times = irregular_times((T,), ARGS.seed + T)
        y = jax.ShapeDtypeStruct((T, N), jnp.float64)
        ssm = jax.eval_shape(lambda p, t=times: discretize_model(ctvar_sde(p), t), theta)
        unit = T * N * N * 8  # T·n² float64
        ks = [None] + (([] if ARGS.quick else [100]) + [math.isqrt(T)] if has_ckpt else [])
        for method in ("sequential", "sqrt"):
            for k in dict.fromkeys(ks):
                kw = {} if k is None else {"checkpoint": k}
                whole = jax.value_and_grad(panel_loglik(times, method, **kw))

                def filt(s, yy, method=method, kw=kw):
                    return filter_ssm(s, yy, method, **kw).log_likelihood

                t0 = time.perf_counter()
                scopes = [("log-likelihood (discretisation + filter)", whole, (theta, y))]
                if not ARGS.quick:
                    scopes.append(
                        ("filter alone (discrete model given)", jax.value_and_grad(filt), (ssm, y))
                    )
                for scope, fn, args in scopes:
                    mem = _memory(fn, args)
                    rows.append(
                        {
                            "T": T,
                            "method": method,
                            "checkpoint": k,
                            "scope": scope,
                            **(mem or {"peak_bytes": None}),
                            "peak_in_T_n2_floats": None
                            if mem is None
                            else mem["peak_bytes"] / unit,
                        }
                    )
                shown = " / ".join(f"{r['peak_in_T_n2_floats']:.1f}" for r in rows[-len(scopes) :])
                print(
                    f"  memory T={T} {method} checkpoint={k}: {shown} × T·n² floats "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    return rows, has_ckpt


def part_precision(T):
    """(e) float32 vs float64 log-likelihood of one series."""
    times, y = make_series(T, ARGS.seed)
    rows = []
    for m in ("sqrt", "parallel") if ARGS.quick else ("sqrt", "parallel", "sequential"):
        vals = {}
        for dt in (np.float64, np.float32):
            f = jax.jit(panel_loglik(times, m))  # float64 numpy times: exact steps
            v = call(f, (truth(dt), jnp.asarray(y, dt)))
            vals[np.dtype(dt).name] = (float(v), str(v.dtype))
        v64, v32 = vals["float64"][0], vals["float32"][0]
        rows.append(
            {
                "T": T,
                "method": m,
                "loglik_float64": v64,
                "loglik_float32": v32,
                "float32_result_dtype": vals["float32"][1],
                "finite_float32": bool(np.isfinite(v32)),
                "rel_diff": abs(v32 - v64) / abs(v64) if np.isfinite(v32) else None,
                "abs_diff_per_obs": abs(v32 - v64) / T if np.isfinite(v32) else None,
            }
        )
    return rows


def part_sharded():
    """(f) Run the sharded comparison in a subprocess with N host devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--sharded-worker",
        "--subjects",
        str(ARGS.subjects),
        "--obs",
        str(ARGS.obs),
        "--seed",
        str(ARGS.seed),
        "--devices",
        str(ARGS.devices),
    ] + (["--quick"] if ARGS.quick else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {"error": f"sharded worker exited {proc.returncode}: {tail}"}
    line = [s for s in proc.stdout.splitlines() if s.startswith("SHARDED_JSON ")][-1]
    out = json.loads(line[len("SHARDED_JSON ") :])
    out["subprocess_wall_s"] = time.perf_counter() - t0
    return out


def sharded_worker():
    """Inside the subprocess: single-device vs sharded panel value and gradient."""
    try:
        from kalmanad.scale import sharded_log_likelihood, subject_mesh
    except ImportError as e:
        print("SHARDED_JSON " + json.dumps({"error": f"kalmanad.scale unavailable: {e}"}))
        return
    times, y = make_panel(ARGS.subjects, ARGS.obs, ARGS.seed)
    theta, yj = truth(), jnp.asarray(y)
    mesh = subject_mesh()
    res = {
        "devices": [str(d) for d in jax.devices()],
        "mesh_shape": dict(mesh.shape),
    }
    for method in ("sequential",) if ARGS.quick else ("sequential", "parallel"):

        def single(p, yy, method=method):
            return kalmanad.log_likelihood(ctvar_sde(p), times, yy, method=method)

        def sharded(p, yy, method=method):
            return sharded_log_likelihood(ctvar_sde(p), times, yy, mesh=mesh, method=method)

        jobs = {
            "single-device": (single, (theta, yj)),
            "sharded": (sharded, (theta, yj)),
            "single-device grad": (
                jax.value_and_grad(lambda p, yy: jnp.sum(single(p, yy))),
                (theta, yj),
            ),
            "sharded grad": (
                jax.value_and_grad(lambda p, yy: jnp.sum(sharded(p, yy))),
                (theta, yj),
            ),
        }
        exe, compile_s = compile_all(jobs, 2)
        out = {k: call(e, jobs[k][1]) for k, e in exe.items()}
        d_val = max_rel_diff(out["sharded"], out["single-device"])
        d_grad = max_rel_diff(out["sharded grad"], out["single-device grad"])
        samples = time_interleaved_samples(
            {k: (e, jobs[k][1]) for k, e in exe.items()}, 3 if ARGS.quick else 7, 0.05, 10.0
        )
        st = _stats(samples)
        res[method] = {
            "per_subject_shape": list(np.shape(out["sharded"])),
            "rel_diff_values": d_val,
            "rel_diff_value_and_grad": d_grad,
            "bitwise_equal_values": bool(
                np.array_equal(np.asarray(out["sharded"]), np.asarray(out["single-device"]))
            ),
            "equal_within_tol": bool(d_val <= SHARD_TOL and d_grad <= SHARD_TOL),
            "median_s": {k: v[0] for k, v in st.items()},
            "compile_s": compile_s,
        }
    print("SHARDED_JSON " + json.dumps(res))


# ------------------------------------------------------------------------------- main


def _f(x, fmt="{:.2f}"):
    return "—" if x is None else fmt.format(x)


def main():
    quick = ARGS.quick
    enable_compile_cache(ARGS.compile_cache)
    parts = ARGS.parts
    sweep_sizes = ARGS.sizes or ([100, 1_000, 10_000] if quick else [10**k for k in range(2, 7)])
    mem_sizes = ARGS.memory_sizes or ([1_000, 100_000] if quick else [1_000, 100_000, 1_000_000])
    prec_T = ARGS.precision_T or (1_000 if quick else 10_000)
    info = machine_info(
        "float64",
        quick,
        kalmanad=kalmanad.__version__,
        devices=[str(d) for d in jax.devices()],
        xla_flags=os.environ.get("XLA_FLAGS"),
        **dynestyx_version(),
    )
    print(
        f"kalmanad scale benchmark | jax {info['jax']} | backend {info['backend']} "
        f"({info['device']}) | {info['cpu_count']} cpus | load "
        f"{info['load_average_at_start']} | {info['date_utc']} | parts {' '.join(parts)}",
        flush=True,
    )
    t_start = time.perf_counter()
    payload = {
        "benchmark": "scale: panel, NUTS, T sweep, gradient memory, float32, sharding",
        "machine": info,
        "settings": {
            "subjects": ARGS.subjects,
            "obs_per_subject": ARGS.obs,
            "latent": N,
            "truth": {k: v.tolist() for k, v in TRUTH.items()},
            "mean_gap": MEAN_GAP,
            "seed": ARGS.seed,
            "parts": parts,
            "sweep_sizes": sweep_sizes,
            "sweep_sequential_max": ARGS.sequential_max,
            "memory_sizes": mem_sizes,
            "precision_T": prec_T,
            "nuts_method": ARGS.nuts_method,
            "nuts_mass": ARGS.mass,
            "nuts_init": ARGS.init,
            "compile_workers": ARGS.workers,
            "statistic": "median seconds per call, block_until_ready after each call, "
            "contenders interleaved round-robin",
        },
        "targets": [],
        "errors": {},
    }
    md = [
        f"# bench_scale{' (quick)' if quick else ''}",
        "",
        f"jax {info['jax']}, backend {info['backend']} ({info['device']}), "
        f"{info['cpu_count']} CPUs, float64 unless stated, load average at start "
        f"{info['load_average_at_start']}, {info['date_utc']}. Panel: fixed-effects "
        f"3-latent CT-VAR, {ARGS.subjects} subjects × {ARGS.obs} irregular observations, "
        f"simulated (and sampled) with seed {ARGS.seed}. "
        f"Peer: {DYNESTYX_LABEL}"
        + ("" if info.get("dynestyx") else " (dynestyx itself not installed here)")
        + ".",
    ]

    def run(name, fn, *a):
        try:
            return fn(*a)
        except Exception as e:  # one failing part must not lose the others
            import traceback

            traceback.print_exc()
            payload["errors"][name] = f"{type(e).__name__}: {e}"
            return None

    def save(final=False):
        """Write the JSON and markdown so far (after every part: a time-out keeps them)."""
        elapsed = time.perf_counter() - t_start
        payload["elapsed_s"] = elapsed
        payload["complete"] = final
        tg_lines = []
        for t in payload["targets"]:
            status = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
            meas = "not measured" if t["measured"] is None else f"{t['measured']:.3g} {t['unit']}"
            if t.get("projected_from_quick") is not None:
                meas += (
                    f" (quick run; projection {t['projected_from_quick']:.0f} s, not a measurement)"
                )
            tg_lines.append(f"{t['target']}: {meas} — {status}")
        out = md + ["", "## targets", ""] + [f"- {line}" for line in tg_lines]
        if payload["errors"]:
            out += ["", "## errors", ""] + [
                f"- {k}: {e[:300]}" for k, e in payload["errors"].items()
            ]
        if not final:
            out += ["", "(incomplete: the run stopped before every part had finished)"]
        stem = "bench_scale_quick" if quick else "bench_scale"
        paths = write_results(stem, payload, "\n".join(out))
        if final:
            print("\ntargets (measured in this run):")
            for line in tg_lines:
                print("  " + line)
            for k, e in payload["errors"].items():
                print(f"  ERROR in {k}: {e[:300]}")
            print(f"\ntotal {elapsed:.0f} s")
            print(f"wrote {paths[0]} and {paths[1]}")

    panel = None
    if "panel" in parts or "nuts" in parts:
        panel = make_panel(ARGS.subjects, ARGS.obs, ARGS.seed)

    if "panel" in parts:
        res = run("panel", part_panel, *panel)
        if res:
            rows, tg = res
            payload["panel"] = rows
            payload["targets"] += tg
            head = [
                "contender",
                "computes",
                "median ms",
                "min ms",
                "÷ dynestyx",
                "rel diff",
                "compile s",
            ]
            body = [
                [
                    r["contender"],
                    r["computes"],
                    format_ms(r["median_s"]),
                    format_ms(r["min_s"]),
                    "—" if r["ratio_vs_dynestyx"] is None else f"{r['ratio_vs_dynestyx']:.2f}",
                    f"{r['rel_diff_vs_kalmanad_sequential']:.0e}",
                    f"{r['compile_s']:.0f}",
                ]
                for r in rows
            ]
            print("\n(a) panel log-likelihood (+ gradient)")
            print(text_table(head, body))
            md += ["", "## (a) panel log-likelihood + gradient", "", markdown_table(head, body)]

    save()
    if ARGS.nuts_method == "auto":
        timed = {
            r["contender"].removeprefix("kalmanad "): r["median_s"]
            for r in payload.get("panel", [])
            if r["computes"] == "value_and_grad"
            and r["contender"].removeprefix("kalmanad ") in METHODS
        }
        ARGS.nuts_method = min(timed, key=timed.get) if timed else "sequential"
        payload["settings"]["nuts_method"] = f"auto: {ARGS.nuts_method}"
        print(f"  nuts: the fastest panel filter in this run is {ARGS.nuts_method}", flush=True)
    if "nuts" in parts:
        res = run("nuts", part_nuts, *panel)
        if res:
            rows, tg = res
            payload["nuts"] = rows
            payload["targets"] += tg
            head = [
                "filter",
                "mass, start",
                "MAP s",
                "warm-up+draws",
                "warm-up incl. compile s",
                "sampling s",
                "total s",
                "min ESS",
                "ESS/s",
                "ESS/s (total)",
                "leapfrog/draw",
                "div",
            ]
            body = [
                [
                    r["method"],
                    f"{r.get('mass', 'diag')}, {r.get('init', 'median')}",
                    f"{r.get('map_s', 0.0):.0f}",
                    f"{r['num_warmup']}+{r['num_samples']}",
                    f"{r['warmup_incl_compile_s']:.0f}",
                    f"{r['sampling_s']:.1f}",
                    f"{r['total_s']:.0f}",
                    f"{r['min_ess']:.0f}",
                    f"{r['ess_per_s']:.2f}",
                    f"{r['ess_per_s_incl_warmup_and_compile']:.3f}",
                    f"{r['leapfrog_per_draw']:.1f}",
                    r["divergences"],
                ]
                for r in rows
            ]
            print("\n(b) NUTS on the panel")
            print(text_table(head, body))
            md += ["", "## (b) NUTS on the panel", "", markdown_table(head, body)]

    save()
    if "memory" in parts:
        res = run("memory", part_memory, mem_sizes)
        if res:
            rows, has_ckpt = res
            payload["memory"] = rows
            payload["checkpoint_available"] = has_ckpt
            head = ["T", "filter", "checkpoint", "scope", "temp+output MiB", "÷ (T·n² floats)"]
            body = [
                [
                    r["T"],
                    r["method"],
                    r["checkpoint"] or "none",
                    r["scope"],
                    _f(None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20, "{:.1f}"),
                    _f(r["peak_in_T_n2_floats"], "{:.1f}"),
                ]
                for r in rows
            ]
            # O(T·n²): the peak in units of T·n² floats must not grow with T (≥ 2 sizes).
            for method in ("sequential", "sqrt"):
                for k in dict.fromkeys(r["checkpoint"] for r in rows):
                    mine = sorted(
                        (
                            r
                            for r in rows
                            if r["method"] == method
                            and r["checkpoint"] == k
                            and r["scope"].startswith("log")
                            and r["peak_in_T_n2_floats"] is not None
                        ),
                        key=lambda r: r["T"],
                    )
                    if not mine:
                        continue
                    lo, hi = mine[0], mine[-1]
                    growth = hi["peak_in_T_n2_floats"] / lo["peak_in_T_n2_floats"]
                    payload["targets"].append(
                        {
                            "target": f"gradient memory O(T·n²), {method}, checkpoint={k}: "
                            f"peak ÷ (T·n² floats) at T={hi['T']} ≤ 1.5 × at T={lo['T']} "
                            f"(it is {hi['peak_in_T_n2_floats']:.1f} at T={hi['T']})",
                            "measured": growth if len(mine) > 1 else None,
                            "unit": "×",
                            "met": bool(growth <= 1.5) if len(mine) > 1 else None,
                        }
                    )
            note = (
                ""
                if has_ckpt
                else " kalmanad.kalman_filter has no checkpoint= argument in this checkout."
            )
            print("\n(d) gradient memory (XLA buffer assignment, deterministic)" + note)
            print(text_table(head, body))
            md += [
                "",
                "## (d) gradient memory, with and without `checkpoint=`",
                "",
                "temp + output bytes of the compiled value_and_grad "
                "(`compile().memory_analysis()`), in units of T·n² float64." + note,
                "",
                markdown_table(head, body),
            ]

    save()
    if "precision" in parts:
        rows = run("precision", part_precision, prec_T)
        if rows:
            payload["precision"] = rows
            head = ["filter", "T", "float64", "float32", "rel diff", "|Δ| per obs", "dtype"]
            body = [
                [
                    r["method"],
                    r["T"],
                    f"{r['loglik_float64']:.6f}",
                    f"{r['loglik_float32']:.6f}",
                    _f(r["rel_diff"], "{:.1e}"),
                    _f(r["abs_diff_per_obs"], "{:.1e}"),
                    r["float32_result_dtype"],
                ]
                for r in rows
            ]
            print("\n(e) float32 vs float64 log-likelihood")
            print(text_table(head, body))
            md += ["", "## (e) float32 vs float64 log-likelihood", "", markdown_table(head, body)]

    save()
    if "sharded" in parts:
        res = run("sharded", part_sharded)
        if res:
            payload["sharded"] = res
            if "error" in res:
                payload["errors"]["sharded"] = res["error"]
                print(f"\n(f) sharded: {res['error'][:500]}")
                md += ["", "## (f) sharded panel", "", f"not measured: {res['error'][:300]}"]
            else:
                head = [
                    "filter",
                    "single ms",
                    "sharded ms",
                    "single grad ms",
                    "sharded grad ms",
                    "rel diff values",
                    "rel diff v&g",
                    "bitwise equal",
                ]
                body = []
                for m in (m for m in ("sequential", "parallel") if m in res):
                    r = res[m]
                    t = r["median_s"]
                    body.append(
                        [
                            m,
                            format_ms(t["single-device"]),
                            format_ms(t["sharded"]),
                            format_ms(t["single-device grad"]),
                            format_ms(t["sharded grad"]),
                            f"{r['rel_diff_values']:.0e}",
                            f"{r['rel_diff_value_and_grad']:.0e}",
                            "yes" if r["bitwise_equal_values"] else "no",
                        ]
                    )
                    payload["targets"].append(
                        {
                            "target": f"sharded ({len(res['devices'])} CPU devices) = "
                            f"single-device panel log-likelihood and gradient, {m} "
                            f"(≤ {SHARD_TOL:g} relative)",
                            "measured": max(r["rel_diff_values"], r["rel_diff_value_and_grad"]),
                            "unit": "relative difference",
                            "met": r["equal_within_tol"],
                        }
                    )
                print(f"\n(f) sharded over {len(res['devices'])} host devices vs one device")
                print(text_table(head, body))
                md += [
                    "",
                    f"## (f) sharded over {len(res['devices'])} host CPU devices vs one",
                    "",
                    "Times on 2 physical cores: the host devices share them, so this checks "
                    "equality and overhead, not speed-up.",
                    "",
                    markdown_table(head, body),
                ]

    save()
    if "sweep" in parts:
        rows = run("sweep", part_sweep, sweep_sizes)
        if rows:
            payload["sweep"] = rows
            head = [
                "T",
                "computes",
                "sequential ms",
                "parallel ms",
                "par ÷ seq",
                "seq µs/step",
                "par µs/step",
            ]
            body = [
                [
                    r["T"],
                    r["computes"],
                    "—" if r["sequential_s"] is None else format_ms(r["sequential_s"]),
                    format_ms(r["parallel_s"]),
                    _f(r["parallel_over_sequential"]),
                    _f(r["sequential_us_per_step"]),
                    f"{r['parallel_us_per_step']:.2f}",
                ]
                for r in rows
            ]
            print(f"\n(c) sequential vs parallel filter, one 3-latent series ({info['device']})")
            print(text_table(head, body))
            md += [
                "",
                f"## (c) sequential vs parallel filter over T ({info['backend']})",
                "",
                markdown_table(head, body),
            ]

    save(final=True)
    if payload["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    if ARGS.sharded_worker:
        sharded_worker()
    else:
        main()
