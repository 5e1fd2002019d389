"""NUTS effective samples per second: kalmanad's distribution against tinygp's.

    python benchmarks/bench_nuts.py            # 500 warm-up / 500 draws, 3 seeds
    python benchmarks/bench_nuts.py --quick    # 200 / 200, 1 seed

Two models on 300 irregular observation times (exponential gaps, fixed seeds), each
written twice as a NumPyro model with the *same* priors, data and seeds:

OU   dx = θ(μ - x)dt + √(2θ)σ dW, y = x + e:   theta ~ LogNormal(0, 1), mu ~ Normal(0, 5),
     sigma ~ HalfNormal(2), noise ~ HalfNormal(1) (the priors of models/ou.toml).
     kalmanad: ``LinearSDEDistribution`` of the LinearSDE; tinygp:
     ``GaussianProcess(quasisep.Exp(scale=1/θ, sigma=σ), t, diag=noise², mean=μ)``.
SHO  tinygp's SHO kernel (ω, Q, σ) + mean μ + white noise: omega ~ LogNormal(0, 1),
     quality ~ LogNormal(0, 1), sigma ~ HalfNormal(2), mu ~ Normal(0, 5),
     noise ~ HalfNormal(1). kalmanad: the SHO state-space form as a LinearSDE;
     tinygp: ``GaussianProcess(quasisep.SHO(ω, Q, σ), t, diag=noise², mean=μ)``.

A third contender for each model is the dynestyx peer: dynestyx (NumPyro for dynamical
systems) needs Python ≥ 3.12 and is not installable here, so it is its closest
equivalent (``_common.dynestyx_loglik``, labelled "dynestyx-equivalent"): the same
priors, the log-likelihood by a per-step Van Loan ``jax.scipy.linalg.expm`` and
cuthbert's parallel square-root Kalman filter, added with ``numpyro.factor``.

kalmanad and tinygp use ``.numpyro_dist()``-style observation sites, and before sampling the two
potential energies (priors + log-likelihood) are checked to agree to 1e-8 at the
initial point.

Protocol. NumPyro's NUTS kernel (``numpyro.infer.hmc.hmc``, algo="NUTS", defaults:
diagonal mass matrix, target acceptance 0.8, tree depth ≤ 10), driven by our own loop
so that compilation is timed apart from running: one jitted ``init_kernel`` (initial
step-size search), one jitted chunk of K NUTS transitions (``lax.scan``) and one jitted
single transition, compiled ahead of time and timed as *compile*. Then per seed: init,
warm-up (num_warmup transitions, adapting step size and mass matrix) and sampling
(num_samples transitions), each timed with ``block_until_ready``. Transitions run K per
call while the previous call predicts K of them to take under CHUNK_MAX_S, else one per
call, so a fast sampler pays no per-call overhead and a slow one stops within about one
transition of the --budget. Both contenders start
from the same initial point (``init_to_uniform`` with the same key) and use the same
keys; seeds are interleaved between the contenders.

Metric: min over parameters of the bulk ESS (``arviz.ess``) of the draws, divided by
the sampling time (after warm-up and compilation). Also reported: ESS per second of
warm-up + sampling, leapfrog steps per draw, gradient evaluations per second, and
divergences. Target (issue #4): kalmanad's ESS/s ≥ 1.5 × tinygp's. CPU numbers are
relative: compare the ratios.

Outputs: tables on stdout and ``benchmarks/results/bench_nuts[_quick].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200/200 transitions, one seed")
    p.add_argument("--num-warmup", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="independent runs per contender")
    p.add_argument("--points", type=int, default=300, help="observations per data set")
    p.add_argument("--models", nargs="+", default=["ou", "sho"], choices=["ou", "sho"])
    p.add_argument(
        "--contenders",
        nargs="+",
        default=None,
        help="subset of contenders (default all: kalmanad kalmanad-par tinygp dynestyx-eq)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=600.0,
        help="seconds of warm-up + sampling per contender run; a run past it is stopped "
        "and reported as such (the dynestyx-equivalent SHO sampler needs far longer on CPU)",
    )
    p.add_argument("--workers", type=int, default=2, help="threads compiling in parallel")
    p.add_argument("--compile-cache", default=None, help="persistent JAX compilation cache dir")
    p.add_argument("--platform", default=None, help="JAX platform (default: JAX's choice)")
    return p.parse_args()


ARGS = _parse()
if ARGS.platform:
    os.environ["JAX_PLATFORMS"] = ARGS.platform

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the benchmark's choice; the library never sets it

import arviz as az  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer.hmc import hmc  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinygp  # noqa: E402
from _common import (  # noqa: E402
    DYNESTYX_LABEL,
    compile_all,
    dynestyx_loglik,
    dynestyx_version,
    enable_compile_cache,
    machine_info,
    markdown_table,
    max_rel_diff,
    ou_linear_sde,
    sho_linear_sde,
    text_table,
    write_results,
)
from tinygp.kernels import quasisep  # noqa: E402

import kalmanad  # noqa: E402
from kalmanad.distributions import LinearSDEDistribution  # noqa: E402

TARGET = 1.5
CHUNK = 20  # NUTS transitions per compiled call (the --budget is checked between calls)
# A chunk is used only while the last call predicts it to take at most this long; slower
# transitions go one per call, so the --budget is overrun by at most about one transition
# (a chunk of 20 of the dynestyx-equivalent SHO sampler's early warm-up transitions once
# ran 25 minutes inside one call). Fast samplers run in chunks: no per-call overhead.
CHUNK_MAX_S = 1.0
DATA_SEED = {"ou": 11, "sho": 12}
# Simulation settings: truth and mean gap between observation times.
TRUTH = {
    "ou": ({"theta": 0.5, "mu": 2.0, "sigma": 1.0, "noise": 0.3}, 0.5),
    "sho": ({"omega": 1.5, "quality": 2.5, "sigma": 1.0, "mu": 0.5, "noise": 0.3}, 0.3),
}


# ---------------------------------------------------------------------------- models


def ou_priors():
    theta = numpyro.sample("theta", dist.LogNormal(0.0, 1.0))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    return theta, mu, sigma, noise


def sho_priors():
    omega = numpyro.sample("omega", dist.LogNormal(0.0, 1.0))
    quality = numpyro.sample("quality", dist.LogNormal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    return omega, quality, sigma, mu, noise


def ou_kalmanad(times, y, method="sequential"):
    theta, mu, sigma, noise = ou_priors()
    sde = ou_linear_sde(theta, mu, sigma, noise)
    numpyro.sample("y", LinearSDEDistribution(sde, times, method=method), obs=y[:, None])


def ou_tinygp(times, y):
    theta, mu, sigma, noise = ou_priors()
    kernel = quasisep.Exp(scale=1.0 / theta, sigma=sigma)
    gp = tinygp.GaussianProcess(kernel, jnp.asarray(times), diag=noise**2, mean=mu)
    numpyro.sample("y", gp.numpyro_dist(), obs=y)


def sho_kalmanad(times, y, method="sequential"):
    omega, quality, sigma, mu, noise = sho_priors()
    sde = sho_linear_sde(omega, quality, sigma, noise, mu)
    numpyro.sample("y", LinearSDEDistribution(sde, times, method=method), obs=y[:, None])


def sho_tinygp(times, y):
    omega, quality, sigma, mu, noise = sho_priors()
    kernel = quasisep.SHO(omega=omega, quality=quality, sigma=sigma)
    gp = tinygp.GaussianProcess(kernel, jnp.asarray(times), diag=noise**2, mean=mu)
    numpyro.sample("y", gp.numpyro_dist(), obs=y)


def ou_dynestyx(times, y):
    theta, mu, sigma, noise = ou_priors()
    sde = ou_linear_sde(theta, mu, sigma, noise)
    numpyro.factor("y", dynestyx_loglik(sde, times, y[:, None]))


def sho_dynestyx(times, y):
    omega, quality, sigma, mu, noise = sho_priors()
    sde = sho_linear_sde(omega, quality, sigma, noise, mu)
    numpyro.factor("y", dynestyx_loglik(sde, times, y[:, None]))


def _with_method(model, method):
    def with_method(times, y):
        return model(times, y, method=method)

    return with_method


DYNESTYX = "dynestyx-eq"  # DYNESTYX_LABEL; short for the tables

# "kalmanad" is the default (sequential) filter; "kalmanad-par" the parallel-in-time one,
# whose gradient has no sequential loop (XLA:CPU runs the reverse pass of a scan with a
# large per-iteration overhead, jax-ml/jax#40150).
MODELS = {
    "ou": {
        "kalmanad": ou_kalmanad,
        "kalmanad-par": _with_method(ou_kalmanad, "parallel"),
        "tinygp": ou_tinygp,
        DYNESTYX: ou_dynestyx,
    },
    "sho": {
        "kalmanad": sho_kalmanad,
        "kalmanad-par": _with_method(sho_kalmanad, "parallel"),
        "tinygp": sho_tinygp,
        DYNESTYX: sho_dynestyx,
    },
}


def make_data(name: str, n: int):
    truth, gap = TRUTH[name]
    rng = np.random.default_rng(DATA_SEED[name])
    times = np.concatenate([[0.0], np.cumsum(rng.exponential(gap, n - 1))])
    sde = ou_linear_sde(**truth) if name == "ou" else sho_linear_sde(**truth)
    y = kalmanad.simulate(sde, times, jax.random.key(DATA_SEED[name])).observations
    return times, np.asarray(y)[:, 0]


# ---------------------------------------------------------------------------- sampler


class Sampler:
    """NUTS on one NumPyro model with a compiled init and compiled chunks of transitions."""

    def __init__(self, model, times, y, num_warmup):
        self.model, self.args, self.num_warmup = model, (times, y), num_warmup
        # One (compiled) evaluation to build the potential; later starting points are drawn
        # directly (init_to_uniform's rule), since each initialize_model call recompiles.
        params, potential, postprocess, _ = initialize_model(
            jax.random.key(0), model, model_args=self.args
        )
        self.potential = potential
        self.constrain = jax.jit(jax.vmap(postprocess))
        self.shapes = {k: (v.shape, v.dtype) for k, v in params.z.items()}
        init_kernel, sample_kernel = hmc(potential, algo="NUTS")

        def init(z, key):
            return init_kernel(z, num_warmup=num_warmup, rng_key=key)

        def transitions(length):
            def run(state):
                def body(s, _):
                    s = sample_kernel(s)
                    return s, (s.z, s.num_steps, s.diverging)

                return jax.lax.scan(body, state, None, length=length)

            return run

        self.init_fn, self.chunk_fn, self.step_fn = init, transitions(CHUNK), transitions(1)

    def initial_point(self, seed):
        """init_to_uniform: every unconstrained coordinate uniform in (-2, 2); the same
        for every contender with the same parameter names."""
        keys = jax.random.split(jax.random.key(seed), len(self.shapes))
        return {
            k: jax.random.uniform(kk, shape, dtype, minval=-2.0, maxval=2.0)
            for kk, (k, (shape, dtype)) in zip(keys, sorted(self.shapes.items()), strict=True)
        }

    def jobs(self, name):
        """Functions to compile ahead of time (the chunks need an example state)."""
        example = (self.initial_point(0), jax.random.key(0))
        state = jax.eval_shape(self.init_fn, *example)
        return {
            (name, "init"): (self.init_fn, example),
            (name, "chunk"): (self.chunk_fn, (state,)),
            (name, "step"): (self.step_fn, (state,)),
        }

    def run(self, exe, seed, num_samples, budget=float("inf")):
        """Init, warm-up and sampling from one seed; ``exe`` holds the compiled "init",
        "chunk" (CHUNK transitions) and "step" (one transition) functions."""
        z0 = self.initial_point(seed)
        key = jax.random.key(1000 + seed)
        t0 = time.perf_counter()
        state = jax.block_until_ready(exe["init"](z0, key))
        t1 = time.perf_counter()
        total = self.num_warmup + num_samples
        done, per_transition = 0, None

        def advance(state, n, outputs):
            """n transitions; their (z, num_steps, diverging) appended to outputs.
            Returns (state, the stop record or None)."""
            nonlocal done, per_transition
            end = done + n
            while done < end:
                chunked = (
                    end - done >= CHUNK
                    and per_transition is not None
                    and per_transition * CHUNK <= CHUNK_MAX_S
                )
                length = CHUNK if chunked else 1
                t = time.perf_counter()
                state, out = exe["chunk" if chunked else "step"](state)
                jax.block_until_ready(state)
                per_transition = (time.perf_counter() - t) / length
                outputs.append(out)
                done += length
                if time.perf_counter() - t1 > budget and done < total:
                    return state, {
                        "seed": seed,
                        "stopped": f"over the {budget:.0f} s budget after {done} of "
                        f"{total} transitions ({time.perf_counter() - t1:.0f} s)",
                    }
            return state, None

        state, stopped = advance(state, self.num_warmup, [])
        if stopped is not None:
            return stopped
        t2 = time.perf_counter()
        outputs = []
        state, stopped = advance(state, num_samples, outputs)
        if stopped is not None:
            return stopped
        zs, steps, divs = zip(*outputs, strict=True)
        jax.block_until_ready((state, zs))
        t3 = time.perf_counter()
        z = jax.tree.map(lambda *x: jnp.concatenate(x), *zs)
        draws = self.constrain(z)
        ess = az.ess(az.convert_to_dataset({k: np.asarray(v)[None] for k, v in draws.items()}))
        ess = {k: float(ess[k].values) for k in draws}
        n_steps = int(np.sum(np.concatenate([np.asarray(s) for s in steps])))
        return {
            "seed": seed,
            "init_s": t1 - t0,
            "warmup_s": t2 - t1,
            "sampling_s": t3 - t2,
            "ess": ess,
            "min_ess": min(ess.values()),
            "min_ess_param": min(ess, key=ess.get),
            "ess_per_s": min(ess.values()) / (t3 - t2),
            "ess_per_s_incl_warmup": min(ess.values()) / (t3 - t1),
            "leapfrog_per_draw": n_steps / num_samples,
            "grad_evals_per_s": n_steps / (t3 - t2),
            "divergences": int(np.sum(np.concatenate([np.asarray(d) for d in divs]))),
            "posterior_mean": {k: float(np.mean(v)) for k, v in draws.items()},
            "step_size": float(state.adapt_state.step_size),
        }


def check_same_density(samplers, exe):
    """Both potentials (priors + likelihood) and their gradients agree at the first
    starting point (read off the compiled init, which evaluates them there)."""
    states = {
        k: exe[(k, "init")](s.initial_point(0), jax.random.key(0)) for k, s in samplers.items()
    }
    values = {k: float(st.potential_energy) for k, st in states.items()}
    ref = states["tinygp"]
    diff = 0.0
    for k, st in states.items():
        if k == "tinygp":
            continue
        d = max_rel_diff((st.potential_energy, st.z_grad), (ref.potential_energy, ref.z_grad))
        if set(samplers[k].shapes) != set(samplers["tinygp"].shapes) or not d <= 1e-8:
            raise AssertionError(f"potential energies differ: {values} ({k}: relative {d:.3g})")
        diff = max(diff, d)
    return values, diff


# ------------------------------------------------------------------------------- main


def main():
    quick = ARGS.quick
    enable_compile_cache(ARGS.compile_cache)
    num_warmup = ARGS.num_warmup or (200 if quick else 500)
    num_samples = ARGS.num_samples or (200 if quick else 500)
    seeds = list(range(ARGS.seeds or (1 if quick else 3)))
    info = machine_info(
        "float64",
        quick,
        numpyro=numpyro.__version__,
        tinygp=tinygp.__version__,
        arviz=az.__version__,
        kalmanad=kalmanad.__version__,
        **dynestyx_version(),
    )
    print(
        f"kalmanad NUTS benchmark | jax {info['jax']} | numpyro {numpyro.__version__} | "
        f"backend {info['backend']} | {info['cpu_count']} cpus | float64 | load "
        f"{info['load_average_at_start']} | {info['date_utc']}"
    )
    print(
        f"{ARGS.points} irregular points; NUTS {num_warmup} warm-up + {num_samples} draws, "
        f"1 chain, seeds {seeds}; ESS = min over parameters of arviz bulk ESS",
        flush=True,
    )
    t_start = time.perf_counter()
    runs, summary, checks = [], [], {}
    for name in ARGS.models:
        times, y = make_data(name, ARGS.points)
        t0 = time.perf_counter()
        samplers = {
            k: Sampler(m, times, jnp.asarray(y), num_warmup)
            for k, m in MODELS[name].items()
            if ARGS.contenders is None or k in ARGS.contenders or k == "tinygp"
        }
        setup_s = time.perf_counter() - t0
        jobs = {}
        for k, s in samplers.items():
            jobs.update(s.jobs(k))
        t0 = time.perf_counter()
        exe, compile_s = compile_all(jobs, ARGS.workers)
        print(
            f"  {name}: set-up {setup_s:.0f} s, compiled {len(exe)} functions in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        values, diff = check_same_density(samplers, exe)
        checks[name] = {
            "potential_at_init": values,
            "relative_difference_value_and_grad": diff,
            "setup_s (initialize_model)": setup_s,
        }
        per = {k: [] for k in samplers}
        for i, seed in enumerate(seeds):
            order = list(samplers) if i % 2 == 0 else list(samplers)[::-1]
            for k in order:
                mine = {what: exe[(k, what)] for what in ("init", "chunk", "step")}
                r = samplers[k].run(mine, seed, num_samples, ARGS.budget)
                r.update(model=name, contender=k)
                runs.append(r)
                if "stopped" in r:
                    print(f"    {name} {k:<12} seed {seed}: stopped, {r['stopped']}", flush=True)
                    continue
                per[k].append(r)
                print(
                    f"    {name} {k:<12} seed {seed}: min ESS {r['min_ess']:.0f} "
                    f"({r['min_ess_param']}), sampling {r['sampling_s']:.1f} s, "
                    f"ESS/s {r['ess_per_s']:.1f}",
                    flush=True,
                )
        compile_sum = {k: sum(compile_s[(k, w)] for w in ("init", "chunk", "step")) for k in per}
        for k, rs in per.items():
            if not rs:  # every run stopped: reported as such, no numbers
                nan = float("nan")
                summary.append(
                    {
                        "model": name,
                        "contender": k,
                        "compile_s": compile_sum[k],
                        "stopped": [r["stopped"] for r in runs if r.get("contender") == k],
                        **dict.fromkeys(
                            (
                                "warmup_s",
                                "sampling_s",
                                "min_ess",
                                "ess_per_s",
                                "ess_per_s_incl_warmup",
                                "leapfrog_per_draw",
                                "grad_evals_per_s",
                            ),
                            nan,
                        ),
                        "divergences": 0,
                        "seeds": 0,
                    }
                )
                continue
            summary.append(
                {
                    "model": name,
                    "contender": k,
                    "compile_s": compile_sum[k],
                    "warmup_s": statistics.median(r["warmup_s"] for r in rs),
                    "sampling_s": statistics.median(r["sampling_s"] for r in rs),
                    "min_ess": statistics.median(r["min_ess"] for r in rs),
                    "ess_per_s": statistics.median(r["ess_per_s"] for r in rs),
                    "ess_per_s_incl_warmup": statistics.median(
                        r["ess_per_s_incl_warmup"] for r in rs
                    ),
                    "leapfrog_per_draw": statistics.median(r["leapfrog_per_draw"] for r in rs),
                    "grad_evals_per_s": statistics.median(r["grad_evals_per_s"] for r in rs),
                    "divergences": sum(r["divergences"] for r in rs),
                    "seeds": len(rs),
                }
            )
        ref = next(s for s in summary if s["model"] == name and s["contender"] == "tinygp")
        for s in summary:
            if s["model"] == name:
                s["ess_per_s_ratio_vs_tinygp"] = s["ess_per_s"] / ref["ess_per_s"]
                s["ess_per_s_incl_warmup_ratio_vs_tinygp"] = (
                    s["ess_per_s_incl_warmup"] / ref["ess_per_s_incl_warmup"]
                )
                s["grad_evals_per_s_ratio_vs_tinygp"] = (
                    s["grad_evals_per_s"] / ref["grad_evals_per_s"]
                )
        peer = next(
            (
                s
                for s in summary
                if s["model"] == name and s["contender"] == DYNESTYX and "stopped" not in s
            ),
            None,
        )
        for s in summary:
            if s["model"] == name:
                s["ess_per_s_ratio_vs_dynestyx"] = (
                    None if peer is None else s["ess_per_s"] / peer["ess_per_s"]
                )
    elapsed = time.perf_counter() - t_start

    head = [
        "model",
        "contender",
        "compile s",
        "warm-up s",
        "sampling s",
        "min ESS",
        "ESS/s",
        "÷ tinygp",
        "÷ dynestyx",
        "ESS/s (w+s)",
        "÷ tinygp",
        "leapfrog/draw",
        "grad/s",
        "÷ tinygp",
        "div",
    ]
    body = [
        [
            s["model"],
            s["contender"],
            f"{s['compile_s']:.0f}",
            f"{s['warmup_s']:.2f}",
            f"{s['sampling_s']:.2f}",
            f"{s['min_ess']:.0f}",
            f"{s['ess_per_s']:.1f}",
            f"{s['ess_per_s_ratio_vs_tinygp']:.2f}",
            "—"
            if s["ess_per_s_ratio_vs_dynestyx"] is None
            else f"{s['ess_per_s_ratio_vs_dynestyx']:.2f}",
            f"{s['ess_per_s_incl_warmup']:.1f}",
            f"{s['ess_per_s_incl_warmup_ratio_vs_tinygp']:.2f}",
            f"{s['leapfrog_per_draw']:.1f}",
            f"{s['grad_evals_per_s']:.0f}",
            f"{s['grad_evals_per_s_ratio_vs_tinygp']:.2f}",
            s["divergences"],
        ]
        for s in summary
    ]
    targets = []
    for s in summary:
        if s["contender"].startswith("kalmanad"):
            targets.append(
                {
                    "target": f"{s['model']}: {s['contender']} ESS/s ≥ {TARGET} × tinygp",
                    "measured": s["ess_per_s_ratio_vs_tinygp"],
                    "met": bool(s["ess_per_s_ratio_vs_tinygp"] >= TARGET),
                }
            )
    tg_lines = [
        f"{t['target']}: {t['measured']:.2f} — {'met' if t['met'] else 'NOT met'}" for t in targets
    ]
    stopped_lines = [
        f"{s['model']} {s['contender']}: {s['stopped'][0]}" for s in summary if "stopped" in s
    ]
    print(
        f"\nmedians over {len(seeds)} seed(s); ÷ tinygp / ÷ dynestyx: contender ÷ peer "
        f"(> 1: contender better); {DYNESTYX} = {DYNESTYX_LABEL}"
    )
    print(text_table(head, body))
    print("\ntargets (measured in this run):")
    for line in tg_lines:
        print("  " + line)
    if stopped_lines:
        print("\nstopped (no numbers):")
        for line in stopped_lines:
            print("  " + line)
    print(f"\ntotal {elapsed:.0f} s")

    md = [
        f"# bench_nuts{' (quick)' if quick else ''}",
        "",
        f"jax {info['jax']}, numpyro {numpyro.__version__}, tinygp {tinygp.__version__}, "
        f"backend {info['backend']}, {info['cpu_count']} CPUs, float64, load average at start "
        f"{info['load_average_at_start']}, {info['date_utc']}. {ARGS.points} irregular points, "
        f"NUTS {num_warmup} warm-up + {num_samples} draws, 1 chain, medians over "
        f"{len(seeds)} seed(s). ESS/s = min bulk ESS ÷ sampling time (compilation and "
        "warm-up excluded); (w+s): ÷ warm-up + sampling time. "
        f"{DYNESTYX} = {DYNESTYX_LABEL}"
        + ("." if info.get("dynestyx") else " (dynestyx itself not installed here)."),
        "",
        markdown_table(head, body),
        "",
        "## targets",
        "",
    ] + [f"- {line}" for line in tg_lines]
    if stopped_lines:
        md += ["", "## stopped (no numbers)", ""] + [f"- {line}" for line in stopped_lines]
    payload = {
        "benchmark": "NUTS effective samples per second, kalmanad vs tinygp",
        "machine": info,
        "settings": {
            "points": ARGS.points,
            "num_warmup": num_warmup,
            "num_samples": num_samples,
            "seeds": seeds,
            "chunk": CHUNK,
            "chunk_max_s": CHUNK_MAX_S,
            "models": ARGS.models,
            "truth": {k: v[0] for k, v in TRUTH.items()},
            "mean_gap": {k: v[1] for k, v in TRUTH.items()},
            "compile_workers": ARGS.workers,
            "compile_cache": ARGS.compile_cache,
            "budget_s": ARGS.budget,
            "contenders": ARGS.contenders,
        },
        "density_checks": checks,
        "summary": summary,
        "runs": runs,
        "targets": targets,
        "elapsed_s": elapsed,
    }
    stem = "bench_nuts_quick" if quick else "bench_nuts"
    paths = write_results(stem, payload, "\n".join(md))
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
