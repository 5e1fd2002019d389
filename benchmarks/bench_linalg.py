"""Benchmark of kalmanad.linalg's gradient rules against JAX's native AD.

    python benchmarks/bench_linalg.py            # full: n ∈ {2,4,8,16,32} × batch ∈ {1,512}
    python benchmarks/bench_linalg.py --quick    # (n, batch) ∈ {(4,1), (4,512), (16,1)}:
                                                 # the issue's target cases, fewer repeats

For every (n, batch) it times, after ``jit`` and a warm-up call, with
``block_until_ready`` after every call, the median over repeats of

* the primal ``f(x)`` and
* ``value_and_grad`` of ``sum(W * f(x))`` (W fixed random weights, all inputs
  differentiated),

and reports vg/primal (the cost of the gradient rule relative to its own primal) and
ours ÷ peer for both (below 1 means ours is faster). Contenders:

expm
  ours      ``kalmanad.linalg.expm`` (explicit Fréchet rules)
  jax       ``jax.scipy.linalg.expm`` differentiated by JAX (batched with vmap, as JAX
            does internally)
  block     the 2n block-matrix method: value and gradient read off one
            ``jax.scipy.linalg.expm([[Aᵀ, W], [0, Aᵀ]])`` (upper-right block = L(Aᵀ, W),
            the reverse rule); its primal is the plain n×n expm, timed once for both
gaussian_logpdf
  ours      ``kalmanad.linalg.gaussian_logpdf`` (fused closed-form rule)
  plain     ``jnp.linalg.cholesky`` + ``solve_triangular``, differentiated by JAX
solve_continuous_lyapunov
  ours      ``kalmanad.linalg.solve_continuous_lyapunov``
  kron      ``jnp.linalg.solve`` on the n²×n² Kronecker system, differentiated by JAX
            (skipped above a 128 MiB n⁴·batch stack: see _KRON_MAX_BYTES)

Inputs (fixed seed): expm — A = c·G/√n, G standard normal, c log-uniform in [0.1, 2]
per matrix (so a batch spans several Padé degrees); Lyapunov — A = G/√n − (r + ½)I with
r the spectral abscissa of G/√n (stable), Q = HHᵀ/n + I; Gaussian — S = HHᵀ/n + I, v
standard normal. Before timing, each pair's values and gradients are compared and the
largest relative difference is recorded.

Timings are CPU unless ``--platform`` says otherwise; CPU numbers are meaningful as
ratios measured in the same process. Contenders of one case are timed
interleaved (one sample of each in turn), so background load affects them alike.
Output: a table on stdout and JSON in ``benchmarks/results/`` (``bench_linalg.json``, or
``bench_linalg_quick.json`` with ``--quick``), with machine information.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

# Cap on the Kronecker peer's n² × n² stack (bytes); beyond it the case is skipped.
# At 16 × 512 (256 MiB) JAX's AD of the batched solve deadlocked on 2 cores with jaxlib
# 0.10.2: both intra-op threads waited in LAPACK's ParallelBatchMap (a batched trsm
# each), reproducibly; its primal alone took 4 s a call.
_KRON_MAX_BYTES = 128 << 20
# A function whose samples already total this many seconds needs no 3rd sample.
_SLOW_SECONDS = 2.0


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the target cases only, fewer repeats")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--platform", default="cpu", help="JAX platform (default: cpu)")
    p.add_argument("--repeats", type=int, default=None, help="timing samples per function")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="n values (× batches)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (× n)")
    p.add_argument("--only", nargs="*", default=None, choices=["expm", "gaussian", "lyapunov"])
    p.add_argument("--output", type=Path, default=None, help="JSON path")
    return p.parse_args()


ARGS = _parse()
os.environ.setdefault("JAX_PLATFORMS", ARGS.platform)

import jax  # noqa: E402

jax.config.update("jax_platforms", ARGS.platform)
if ARGS.dtype == "float64":
    jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.scipy.linalg as jsl  # noqa: E402

from kalmanad.linalg import (  # noqa: E402
    expm,
    gaussian_logpdf,
    solve_continuous_lyapunov,
)

DTYPE = np.dtype(ARGS.dtype)


# ----------------------------------------------------------------------------- inputs


def _expm_inputs(rng, n, batch):
    c = np.exp(rng.uniform(np.log(0.1), np.log(2.0), size=(batch, 1, 1)))
    a = c * rng.normal(size=(batch, n, n)) / math.sqrt(n)
    return (a.astype(DTYPE),)


def _gaussian_inputs(rng, n, batch):
    h = rng.normal(size=(batch, n, n))
    s = h @ np.swapaxes(h, -1, -2) / n + np.eye(n)
    v = rng.normal(size=(batch, n))
    return v.astype(DTYPE), s.astype(DTYPE)


def _lyapunov_inputs(rng, n, batch):
    g = rng.normal(size=(batch, n, n)) / math.sqrt(n)
    r = np.linalg.eigvals(g).real.max(axis=-1)
    a = g - (r + 0.5)[:, None, None] * np.eye(n)
    h = rng.normal(size=(batch, n, n))
    q = h @ np.swapaxes(h, -1, -2) / n + np.eye(n)
    return a.astype(DTYPE), q.astype(DTYPE)


# ------------------------------------------------------------------------- contenders


def _plain_gaussian_logpdf(v, s):
    """The obvious JAX implementation; JAX's AD differentiates it."""
    l = jnp.linalg.cholesky(s)
    w = jsl.solve_triangular(l, v[..., None], lower=True)[..., 0]
    m = s.shape[-1]
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(l, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * (m * math.log(2 * math.pi) + jnp.sum(w * w, axis=-1)) - half_logdet


def _kron_lyapunov_one(a, q):
    # Row-major vec: vec(A X) = (A ⊗ I) vec X, vec(X Aᵀ) = (I ⊗ A) vec X.
    n = a.shape[-1]
    eye = jnp.eye(n, dtype=a.dtype)
    k = jnp.kron(a, eye) + jnp.kron(eye, a)
    return jnp.linalg.solve(k, q.reshape(n * n)).reshape(n, n)


def _kron_lyapunov(a, q):
    return jax.vmap(_kron_lyapunov_one)(a, q)


def _value_and_grad(f):
    """``(*args, w) ↦ value_and_grad`` of ``sum(w * f(*args))`` w.r.t. every arg, jitted.

    ``w`` is an argument, not a closed-over constant, so XLA cannot constant-fold any
    part of the gradient at compile time.
    """

    def loss(*args_and_w):
        *args, w = args_and_w
        return jnp.sum(w * f(*args))

    def vg(*args_and_w):
        argnums = tuple(range(len(args_and_w) - 1))
        return jax.value_and_grad(loss, argnums=argnums)(*args_and_w)

    return jax.jit(vg)


@jax.jit
def _block_expm_value_and_grad(a, w):
    """2n block method: expm([[Aᵀ, W], [0, Aᵀ]]) = [[e^Aᵀ, L(Aᵀ, W)], [0, e^Aᵀ]].

    Returns (sum(W * e^A), (L(Aᵀ, W),)): the value and gradient of sum(W * e^A).
    """
    at = jnp.swapaxes(a, -1, -2)
    n = a.shape[-1]
    zero = jnp.zeros_like(a)
    big = jnp.concatenate(
        [jnp.concatenate([at, w], axis=-1), jnp.concatenate([zero, at], axis=-1)], axis=-2
    )
    f = jsl.expm(big)
    value = jnp.sum(w * jnp.swapaxes(f[..., :n, :n], -1, -2))
    return value, (f[..., :n, n:],)


_OURS_EXPM = jax.jit(expm)
_JAX_EXPM = jax.jit(jsl.expm)


def _contenders(case, n, batch, rng):
    """{name: (primal_fn, vg_fn, args, w) or None (skipped)}; "ours" first, then peers.

    ``primal_fn(*args)``; ``vg_fn(*args, w)``.
    """
    if case == "expm":
        args = _expm_inputs(rng, n, batch)
        w = jnp.asarray(rng.normal(size=args[0].shape).astype(DTYPE))
        return {
            "ours": (_OURS_EXPM, _value_and_grad(expm), args, w),
            "jax": (_JAX_EXPM, _value_and_grad(jsl.expm), args, w),
            "block": (_JAX_EXPM, _block_expm_value_and_grad, args, w),
        }
    if case == "gaussian":
        args = _gaussian_inputs(rng, n, batch)
        w = jnp.asarray(rng.normal(size=(batch,)).astype(DTYPE))
        return {
            "ours": (jax.jit(gaussian_logpdf), _value_and_grad(gaussian_logpdf), args, w),
            "plain": (
                jax.jit(_plain_gaussian_logpdf),
                _value_and_grad(_plain_gaussian_logpdf),
                args,
                w,
            ),
        }
    if case == "lyapunov":
        args = _lyapunov_inputs(rng, n, batch)
        w = jnp.asarray(rng.normal(size=args[0].shape).astype(DTYPE))
        out = {
            "ours": (
                jax.jit(solve_continuous_lyapunov),
                _value_and_grad(solve_continuous_lyapunov),
                args,
                w,
            )
        }
        if batch * n**4 * DTYPE.itemsize <= _KRON_MAX_BYTES:
            out["kron"] = (jax.jit(_kron_lyapunov), _value_and_grad(_kron_lyapunov), args, w)
        else:
            out["kron"] = None  # skipped: too much memory
        return out
    raise ValueError(case)


# ---------------------------------------------------------------------------- timing


def _call(fn, args):
    return jax.block_until_ready(fn(*args))


def _time_interleaved(fns, repeats, min_time, max_seconds):
    """Median and minimum seconds per call of each (warmed-up) function, and rounds run.

    A sample is the mean over enough back-to-back calls (each blocked on) to last
    ``min_time``. One sample of each function in turn per round, so drifting background
    load affects all contenders alike. Stops once ``max_seconds`` have passed and each
    function has 3 samples (or, if one call is very slow, samples totalling
    ``_SLOW_SECONDS``; the first, calibrating call counts when it is long enough).
    """
    number, samples = {}, {}
    t_start = time.perf_counter()
    for key, (fn, args) in fns.items():
        t0 = time.perf_counter()
        _call(fn, args)
        dt = time.perf_counter() - t0
        number[key] = max(1, min(1000, math.ceil(min_time / max(dt, 1e-7))))
        # A call that is long enough on its own is already a sample.
        samples[key] = [dt] if number[key] == 1 else []
    for _round in range(repeats):
        # Enough: past the time budget, with 3 samples of each function or, for a
        # function whose single call is very slow, samples totalling a few seconds.
        if time.perf_counter() - t_start > max_seconds and all(
            len(v) >= 3 or sum(v) >= _SLOW_SECONDS for v in samples.values()
        ):
            break
        for key, (fn, args) in fns.items():
            t0 = time.perf_counter()
            for _ in range(number[key]):
                _call(fn, args)
            samples[key].append((time.perf_counter() - t0) / number[key])
    medians = {k: statistics.median(v) for k, v in samples.items()}
    minima = {k: min(v) for k, v in samples.items()}
    return medians, minima, min(len(v) for v in samples.values())


def _ms(seconds):
    """Milliseconds with 4 significant digits, in at most 9 characters."""
    ms = seconds * 1e3
    return f"{ms:.4g}" if ms < 1e5 else f"{ms:.2e}"


def _ratio(x):
    """A ratio in at most 6 characters."""
    return f"{x:.2f}" if x < 100 else f"{x:.0f}" if x < 1e5 else f"{x:.0e}"


def _max_rel_diff(x, y):
    xs, ys = jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)
    worst = 0.0
    for a, b in zip(xs, ys, strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        scale = max(np.max(np.abs(b)), np.finfo(DTYPE).tiny)
        worst = max(worst, float(np.max(np.abs(a - b)) / scale))
    return worst


# ------------------------------------------------------------------------------ main


def _machine_info():
    dev = jax.devices()[0]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "jaxlib": _jaxlib_version(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": str(getattr(dev, "device_kind", dev)),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "dtype": ARGS.dtype,
    }


def _jaxlib_version():
    try:
        import jaxlib
    except ImportError:
        return None
    return getattr(jaxlib, "__version__", None)


def _run_case(case, n, batch, rng, repeats, min_time, max_seconds):
    """Warm up, cross-check and time every contender of one (case, n, batch); print rows."""
    rows = []
    contenders = _contenders(case, n, batch, rng)
    live = {k: c for k, c in contenders.items() if c is not None}
    # Warm-up (compile) and agreement check against ours.
    results = {}
    for name, (primal, vg, args, w) in live.items():
        results[name] = (_call(primal, args), _call(vg, (*args, w)))
    diffs = {
        name: max(
            _max_rel_diff(results[name][0], results["ours"][0]),
            _max_rel_diff(results[name][1], results["ours"][1]),
        )
        for name in live
        if name != "ours"
    }
    # Time each distinct (function, inputs) once: "block" shares jax's primal.
    fns, key_of = {}, {}
    for name, (primal, vg, args, w) in live.items():
        for kind, fn, fn_args in (("primal", primal, args), ("vg", vg, (*args, w))):
            uid = (id(fn), id(args))
            key_of[(name, kind)] = uid
            fns.setdefault(uid, (fn, fn_args))
    med_u, low_u, used = _time_interleaved(fns, repeats, min_time, max_seconds)
    med = {k: med_u[u] for k, u in key_of.items()}
    low = {k: low_u[u] for k, u in key_of.items()}
    for name in contenders:
        row = {"case": case, "n": n, "batch": batch, "method": name}
        if contenders[name] is None:
            row["skipped"] = (
                f"Kronecker stack of {batch * n**4 * DTYPE.itemsize / 2**20:.0f} MiB "
                f"exceeds the {_KRON_MAX_BYTES / 2**20:.0f} MiB cap"
            )
            rows.append(row)
            print(f"{case:<9}{n:>4}{batch:>6} {name:<6} skipped: {row['skipped']}")
            continue
        p, g = med[(name, "primal")], med[(name, "vg")]
        row.update(
            primal_s=p,
            value_and_grad_s=g,
            vg_over_primal=g / p,
            primal_min_s=low[(name, "primal")],
            value_and_grad_min_s=low[(name, "vg")],
            repeats=used,
        )
        row["vg_over_primal_min"] = low[(name, "vg")] / low[(name, "primal")]
        ratios = ""
        if name != "ours":
            row["ours_over_peer_primal"] = med[("ours", "primal")] / p
            row["ours_over_peer_vg"] = med[("ours", "vg")] / g
            row["ours_over_peer_primal_min"] = low[("ours", "primal")] / low[(name, "primal")]
            row["ours_over_peer_vg_min"] = low[("ours", "vg")] / low[(name, "vg")]
            row["max_rel_diff_vs_ours"] = diffs[name]
            ratios = (
                "".join(
                    f"{_ratio(row[k]):>{w}}"
                    for k, w in (
                        ("ours_over_peer_primal", 10),
                        ("ours_over_peer_vg", 9),
                        ("ours_over_peer_primal_min", 7),
                        ("ours_over_peer_vg_min", 7),
                    )
                )
                + f"{diffs[name]:>10.0e}"
            )
        rows.append(row)
        print(
            f"{case:<9}{n:>4}{batch:>6} {name:<6}{_ms(p):>10}{_ms(g):>10}"
            f"{_ratio(g / p):>7}{_ratio(row['vg_over_primal_min']):>7}{ratios}",
            flush=True,
        )
    return rows


def main():
    quick = ARGS.quick
    if quick and ARGS.sizes is None and ARGS.batches is None:
        pairs = [(4, 1), (4, 512), (16, 1)]
    else:
        pairs = [(n, b) for n in ARGS.sizes or [2, 4, 8, 16, 32] for b in ARGS.batches or [1, 512]]
    # Many short samples: their median is robust to a shared, loaded machine.
    repeats = ARGS.repeats or (11 if quick else 31)
    min_time = 0.003 if quick else 0.005
    max_seconds = 2.0 if quick else 6.0
    cases = ARGS.only or ["expm", "gaussian", "lyapunov"]
    out_path = ARGS.output or (
        REPO
        / "benchmarks"
        / "results"
        / ("bench_linalg_quick.json" if quick else "bench_linalg.json")
    )

    info = _machine_info()
    print(
        f"kalmanad linalg benchmark | jax {info['jax']} | backend {info['backend']} "
        f"({info['device']}) | {info['cpu_count']} cpus | {ARGS.dtype} | {info['date_utc']}"
    )
    print(
        "median ms per call after jit warm-up; v&g/p = value_and_grad ÷ primal; prim/peer,\n"
        "v&g/peer = ours ÷ peer (< 1: ours faster); (min): the same from minima; rel diff:\n"
        "largest relative difference of the peer's values and gradients from ours"
    )
    rng = np.random.default_rng(20240601)
    rows = []
    header = (
        f"{'case':<9}{'n':>4}{'batch':>6} {'method':<6}{'primal ms':>10}{'v&g ms':>10}"
        f"{'v&g/p':>7}{'(min)':>7}{'prim/peer':>10}{'v&g/peer':>9}{'(min)':>7}{'(min)':>7}"
        f"{'rel diff':>10}"
    )
    print(header)
    print("-" * len(header))
    t_total = time.perf_counter()
    for case in cases:
        for n, batch in pairs:
            rows += _run_case(case, n, batch, rng, repeats, min_time, max_seconds)
    elapsed = time.perf_counter() - t_total

    targets = _targets(rows)
    if targets:
        print("\nissue targets (measured in this run):")
        for t in targets:
            status = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
            print(
                f"  {t['target']:<56} {t['measured']:<22} {status:<8} "
                f"(from minima: {t['measured_min']})"
            )
    print(f"\ntotal {elapsed:.0f} s; JSON written to {out_path}")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": info,
        "settings": {
            "quick": quick,
            "cases": [list(p) for p in pairs],
            "repeats": repeats,
            "min_sample_seconds": min_time,
            "max_seconds_per_case": max_seconds,
            "kron_max_bytes": _KRON_MAX_BYTES,
            "statistic": "median seconds per call, block_until_ready after each call",
        },
        "results": rows,
        "targets": targets,
        "elapsed_s": elapsed,
    }
    out_path.write_text(json.dumps(payload, indent=2) + "\n")


def _find(rows, case, n, batch, method):
    for r in rows:
        if (r["case"], r["n"], r["batch"], r["method"]) == (case, n, batch, method):
            return r if "primal_s" in r else None
    return None


def _targets(rows):
    """The issue's performance targets on this run's rows.

    ``met`` is judged on medians (None: not measured); the same ratio from minima is
    reported beside it, as a check on a noisy machine.
    """

    def worst_ratio(case, limit, text):
        ours = [r for r in rows if r["case"] == case and r["method"] == "ours" and "primal_s" in r]
        if not ours:
            return None
        worst = max(ours, key=lambda r: r["vg_over_primal"])
        worst_min = max(ours, key=lambda r: r["vg_over_primal_min"])
        return {
            "target": text,
            "measured": f"{worst['vg_over_primal']:.2f}× (n={worst['n']}, b={worst['batch']})",
            "measured_min": (
                f"{worst_min['vg_over_primal_min']:.2f}× (n={worst_min['n']}, "
                f"b={worst_min['batch']})"
            ),
            "met": worst["vg_over_primal"] <= limit,
        }

    def versus(n, batch, limit, text):
        r = _find(rows, "expm", n, batch, "jax")
        return {
            "target": text,
            "measured": "not run" if r is None else f"{r['ours_over_peer_vg']:.2f}×",
            "measured_min": "not run" if r is None else f"{r['ours_over_peer_vg_min']:.2f}×",
            "met": None if r is None else r["ours_over_peer_vg"] <= limit,
        }

    out = [
        worst_ratio("expm", 3.0, "expm value_and_grad ≤ 3× its primal (worst case)"),
        versus(4, 512, 0.5, "expm batch 512×4×4 v&g ≤ ½ of jax.scipy expm under AD"),
        versus(16, 1, 1.0, "expm single 16×16 v&g no slower than jax.scipy expm AD"),
        worst_ratio("lyapunov", 2.5, "Lyapunov value_and_grad ≤ 2.5× its primal (worst case)"),
    ]
    return [t for t in out if t is not None]


if __name__ == "__main__":
    main()
