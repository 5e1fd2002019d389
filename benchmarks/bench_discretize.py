"""Discretisation benchmark: one 4×4 drift over 2000 distinct steps, value and gradient.

Contenders (same process, jit warm-up first, interleaved repeats, median):

* ``jax``: JAX's own AD through ``jax.scipy.linalg.expm`` of the 8×8 Van Loan block
  [[-A, GGᵀ], [0, Aᵀ]]Δ per step (vmapped), Ad = F₂₂ᵀ, Qd = F₂₂ᵀ F₁₂ — the baseline.
* ``kalmanad.discretize`` with ``method="van_loan"`` (default: power series whose matrix
  powers are shared by all steps + shared composition tables), ``"van_loan_expm"`` (block
  exponential per step by ``kalmanad.linalg.expm``) and ``"stationary"``
  (Qd = P∞ - Ad P∞ Adᵀ).

The scalar is f(A, GGᵀ) = Σ W1 ∘ Ad + Σ W2 ∘ Qd; "value" times f, "value+grad" times
``jax.value_and_grad(f, (0, 1))``. Target: kalmanad's default ≤ 0.3× JAX's time for value+grad.

A second table measures the accuracy of Qd against the closed form for the scalar OU
process (a = -1, GGᵀ = 1: Qd = -expm1(2aΔ)/(-2a)) over aΔ from -1 to -1e-8, in float64 and
float32: the stationary route's cancellation for short steps.

Run: ``python benchmarks/bench_discretize.py`` (``--quick`` for fewer repeats). Prints both
tables and writes ``benchmarks/results/bench_discretize.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # the benchmark script's choice, not the library's

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kalmanad.discretize import discretize  # noqa: E402

N_STATES = 4
N_STEPS = 2000
BASELINE = "jax (AD through jax.scipy expm)"


def make_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N_STATES, N_STATES)) - 2.0 * np.eye(N_STATES)
    g = rng.normal(size=(N_STATES, N_STATES))
    q = g @ g.T
    dt = np.sort(rng.uniform(0.01, 2.0, N_STEPS))
    assert np.unique(dt).size == N_STEPS  # distinct steps: no dedupe advantage
    w1 = rng.normal(size=(N_STEPS, N_STATES, N_STATES))
    w2 = rng.normal(size=(N_STEPS, N_STATES, N_STATES))
    return jnp.asarray(a), jnp.asarray(q), dt, jnp.asarray(w1), jnp.asarray(w2)


def jax_van_loan(a, q, dt):
    """Baseline: JAX's expm of the Van Loan block per step, differentiated by JAX."""
    n = a.shape[-1]

    def one(d):
        block = jnp.block([[-a, q], [jnp.zeros_like(a), a.T]]) * d
        f = jax.scipy.linalg.expm(block)
        ad = f[n:, n:].T
        return ad, ad @ f[:n, n:]

    return jax.vmap(one)(jnp.asarray(dt))


def time_interleaved(fns: dict, args, repeats: int) -> dict:
    for f in fns.values():
        jax.block_until_ready(f(*args))
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def speed(repeats: int) -> dict:
    a, q, dt, w1, w2 = make_problem()

    def objective(route):
        def f(a, q):
            ad, qd = route(a, q)
            return jnp.sum(w1 * ad) + jnp.sum(w2 * qd)

        return f

    contenders = {BASELINE: objective(lambda a, q: jax_van_loan(a, q, dt))}
    for method in ("van_loan", "van_loan_expm", "stationary"):
        contenders[f"kalmanad {method}"] = objective(
            lambda a, q, method=method: discretize(a, q, dt, method=method)
        )

    # Same values and gradients before timing anything. GGᵀ is symmetric, so only the
    # symmetric part of its gradient is defined (kalmanad symmetrises Qd; the baseline not).
    def value_and_grads(f):
        val, (ga, gq) = jax.jit(jax.value_and_grad(f, (0, 1)))(a, q)
        return val, (ga, 0.5 * (gq + gq.T))

    ref_val, ref_grad = value_and_grads(contenders[BASELINE])
    agreement = {}
    for name, f in contenders.items():
        val, grad = value_and_grads(f)
        diffs = [
            jnp.max(jnp.abs(g - r)) / jnp.max(jnp.abs(r))
            for g, r in zip(grad, ref_grad, strict=True)
        ]
        agreement[name] = float(max(abs(val - ref_val) / abs(ref_val), *diffs))

    fns = {}
    for name, f in contenders.items():
        fns[(name, "value")] = jax.jit(f)
        fns[(name, "value+grad")] = jax.jit(jax.value_and_grad(f, (0, 1)))
    t = time_interleaved(fns, (a, q), repeats)
    base = BASELINE
    rows = []
    for name in contenders:
        rows.append(
            {
                "contender": name,
                "value_ms": 1e3 * t[(name, "value")],
                "value_grad_ms": 1e3 * t[(name, "value+grad")],
                "value_ratio": t[(name, "value")] / t[(base, "value")],
                "value_grad_ratio": t[(name, "value+grad")] / t[(base, "value+grad")],
                "max_rel_diff_vs_jax": agreement[name],
            }
        )
    return {"rows": rows}


def accuracy() -> dict:
    """Relative error of Qd for the scalar OU process, a = -1, GGᵀ = 1."""
    a = -1.0
    steps = np.array([1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
    exact = -np.expm1(2 * a * steps) / (-2 * a)
    out = {}
    for dtype in ("float64", "float32"):
        for method in ("van_loan", "van_loan_expm", "stationary"):
            _, qd = discretize(
                np.array([[a]], dtype), np.array([[1.0]], dtype), steps.astype(dtype), method=method
            )
            err = np.abs(np.asarray(qd[:, 0, 0], np.float64) - exact) / exact
            out[f"{method} {dtype}"] = [float(e) for e in err]
    return {"a_dt": [float(a * s) for s in steps], "rel_err": out}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 5 if args.quick else 21

    result = {
        "benchmark": "discretize: 4x4 drift, 2000 distinct steps",
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "repeats": repeats,
        "dtype": "float64",
    }
    result["speed"] = speed(repeats)
    result["accuracy"] = accuracy()

    print(
        f"\nDiscretisation of a {N_STATES}x{N_STATES} drift over {N_STEPS} distinct steps "
        f"(jax {jax.__version__}, {jax.default_backend()}, {os.cpu_count()} CPUs, "
        f"median of {repeats})"
    )
    head = (
        f"{'contender':34s} {'value ms':>9s} {'ratio':>6s} {'val+grad ms':>12s} {'ratio':>6s} "
        f"{'max rel diff':>12s}"
    )
    print(head)
    print("-" * len(head))
    for r in result["speed"]["rows"]:
        print(
            f"{r['contender']:34s} {r['value_ms']:9.2f} {r['value_ratio']:6.3f} "
            f"{r['value_grad_ms']:12.2f} {r['value_grad_ratio']:6.3f} "
            f"{r['max_rel_diff_vs_jax']:12.1e}"
        )
    default = next(r for r in result["speed"]["rows"] if r["contender"] == "kalmanad van_loan")
    ok = default["value_grad_ratio"] <= 0.3
    result["target"] = {"value_grad_ratio_max": 0.3, "met": bool(ok)}
    print(
        f"target: kalmanad van_loan value+grad <= 0.3x JAX -> {default['value_grad_ratio']:.3f} "
        f"({'met' if ok else 'NOT met'})"
    )

    acc = result["accuracy"]
    print("\nRelative error of Qd, scalar OU (a = -1, GG' = 1) vs closed form")
    print(f"{'method':26s}" + "".join(f"{x:>9.0e}" for x in acc["a_dt"]))
    for name, errs in acc["rel_err"].items():
        print(f"{name:26s}" + "".join(f"{e:9.1e}" for e in errs))

    out = Path(__file__).resolve().parent / "results" / "bench_discretize.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
