"""Run every benchmark and summarise them in one table of ratios against the peers.

    python benchmarks/run.py --quick          # CI size (each bench with --quick)
    python benchmarks/run.py                  # the full benchmarks (hours on 2 cores)
    python benchmarks/run.py --quick --only filter scale

Each benchmark (linalg, discretize, filter, nuts, scale, vs_stan, vs_openmx) runs as its
own subprocess, so one failure (or time-out) does not stop the others; failures are
reported in the table and in the exit status. After the runs, the JSON each benchmark
wrote *in this run* (older result files are never used) is read back and reduced to

* one table of ratios, kalmanad ÷ each peer measured in the same run and process
  (time ratios: < 1 means kalmanad is faster; ESS/s ratios: > 1 means kalmanad
  samples faster), and
* the targets of every benchmark: target, measured, met yes/no.

Both go to stdout and to ``benchmarks/results/summary.json`` and ``summary.md`` (the docs'
benchmarks page includes every ``results/*.md``). Each subprocess's output is kept in
``benchmarks/results/logs/<bench>.log`` (not committed).

By default the subprocesses get ``XLA_FLAGS=--xla_cpu_use_fusion_emitters=false``
where this XLA still accepts it (XLA:CPU's fusion emitters compile 2× slower; run time
changes by 10–20% for all contenders alike — the flag is recorded) and a shared
persistent compilation cache (``--compile-cache``; a rerun loads executables instead of
compiling them, timings unaffected). ``--no-fast-compile`` and ``--compile-cache ''``
turn them off.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHES = ("linalg", "discretize", "filter", "nuts", "scale", "vs_stan", "vs_openmx", "ml")
# Result stem each bench writes (quick, full); bench_discretize has one name for both.
STEMS = {
    "linalg": ("bench_linalg_quick", "bench_linalg"),
    "discretize": ("bench_discretize", "bench_discretize"),
    "filter": ("bench_filter_quick", "bench_filter"),
    "nuts": ("bench_nuts_quick", "bench_nuts"),
    "scale": ("bench_scale_quick", "bench_scale"),
    "vs_stan": ("bench_vs_stan_quick", "bench_vs_stan"),
    "vs_openmx": ("bench_vs_openmx_quick", "bench_vs_openmx"),
    "ml": ("bench_ml_quick", "bench_ml"),
}
# Benches that take --compile-cache.
CACHED = ("filter", "nuts", "scale")
TIMEOUT_S = {
    "linalg": 1200,
    "discretize": 900,
    "filter": 2400,
    "nuts": 3000,
    "scale": 3000,
    "vs_stan": 3600,
    "vs_openmx": 1200,
    "ml": 1800,
}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-size run of every benchmark")
    p.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    p.add_argument("--timeout-scale", type=float, default=None, help="× the per-bench time-outs")
    p.add_argument(
        "--fast-compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="XLA_FLAGS=--xla_cpu_use_fusion_emitters=false for the subprocesses",
    )
    p.add_argument("--compile-cache", default="/tmp/kalmanad_bench_jax_cache")
    p.add_argument("--summarise-only", action="store_true", help="re-read the runs in summary.json")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the runs of summary.json for the benches not run now (a run in parts)",
    )
    return p.parse_args()


# ------------------------------------------------------------------------------ running


def run_bench(name: str, args, env) -> dict:
    script = HERE / f"bench_{name}.py"
    cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
    if name in CACHED and args.compile_cache:
        cmd += ["--compile-cache", args.compile_cache]
    timeout = TIMEOUT_S[name] * (args.timeout_scale or (1.0 if args.quick else 4.0))
    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    print(f"[run] {name}: {' '.join(cmd[1:])} (time-out {timeout:.0f} s)", flush=True)
    t0 = time.time()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(
                cmd, cwd=HERE.parent, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            rc, status = None, f"timed out after {timeout:.0f} s"
    wall = time.time() - t0
    tail = log.read_text(errors="replace").splitlines()[-15:]
    print(f"[run] {name}: {status} in {wall:.0f} s", flush=True)
    return {
        "bench": name,
        "command": " ".join(["python", f"benchmarks/bench_{name}.py", *cmd[2:]]),
        "status": status,
        "returncode": rc,
        "started_unix": t0,
        "wall_s": wall,
        "log": str(log.relative_to(HERE.parent)),
        "log_tail": tail if status != "ok" else [],
    }


def load_fresh(name: str, quick: bool, started: float):
    """The bench's JSON if it was written after ``started`` (by this run), else None."""
    path = RESULTS / f"{STEMS[name][0 if quick else 1]}.json"
    if not path.exists() or path.stat().st_mtime < started - 1:
        return None, path
    return json.loads(path.read_text()), path


# ----------------------------------------------------------------------------- reducing


def _ratio(bench, case, contender, peer, metric, value, better):
    return {
        "bench": bench,
        "case": case,
        "contender": contender,
        "peer": peer,
        "metric": metric,
        "ratio": value,
        "better_when": better,
    }


def ratios_linalg(d):
    out, rows = [], d.get("results", [])
    by = {}
    for r in rows:
        by.setdefault((r["case"], r["n"], r["batch"]), {})[r["method"]] = r
    for (case, n, b), ms in by.items():
        ours = ms.get("ours")
        if not ours:
            continue
        for peer, r in ms.items():
            if peer == "ours" or not r.get("value_and_grad_s"):
                continue
            out.append(
                _ratio(
                    "linalg",
                    f"{case} n={n} batch={b}",
                    "kalmanad",
                    peer,
                    "value_and_grad time",
                    ours["value_and_grad_s"] / r["value_and_grad_s"],
                    "< 1",
                )
            )
    return out


def targets_linalg(d):
    return [
        {"bench": "linalg", "target": t["target"], "measured": t["measured"], "met": t["met"]}
        for t in d.get("targets", [])
    ]


def ratios_discretize(d):
    rows = d.get("speed", {}).get("rows", [])
    peer = next((r for r in rows if r["contender"].startswith("jax")), None)
    if peer is None:
        return []
    return [
        _ratio(
            "discretize",
            "4×4 drift, 2000 distinct steps",
            r["contender"],
            peer["contender"],
            "value_and_grad time",
            r["value_grad_ms"] / peer["value_grad_ms"],
            "< 1",
        )
        for r in rows
        if r is not peer
    ]


def targets_discretize(d):
    t = d.get("target", {})
    rows = d.get("speed", {}).get("rows", [])
    ours = next((r for r in rows if r["contender"] == "kalmanad van_loan"), None)
    return [
        {
            "bench": "discretize",
            "target": f"kalmanad van_loan value+grad ≤ {t.get('value_grad_ratio_max')} × JAX AD "
            "through a Van Loan expm per step",
            "measured": None if ours is None else round(ours["value_grad_ratio"], 3),
            "met": t.get("met"),
        }
    ]


def ratios_filter(d):
    out = []
    rows = [r for r in d.get("results", []) if r.get("computes") == "value_and_grad"]
    for n in sorted({r["n"] for r in rows}):
        at = [r for r in rows if r["n"] == n]
        ours = [r for r in at if r["contender"].startswith("kalmanad")]
        peers = [r for r in at if not r["contender"].startswith("kalmanad")]
        for o in ours:
            for p in peers:
                out.append(
                    _ratio(
                        "filter",
                        f"SHO N={n}",
                        o["contender"],
                        p["contender"],
                        "value_and_grad time",
                        o["median_s"] / p["median_s"],
                        "< 1",
                    )
                )
    return out


def _targets_generic(bench, d):
    out = []
    for t in d.get("targets", []):
        m = t.get("measured")
        if isinstance(m, float):
            m = round(m, 4)
        out.append({"bench": bench, "target": t["target"], "measured": m, "met": t.get("met")})
    return out


def ratios_nuts(d):
    out = []
    summ = d.get("summary", [])
    for model in dict.fromkeys(s["model"] for s in summ):
        at = [s for s in summ if s["model"] == model and "stopped" not in s]  # stopped: no ESS
        ours = [s for s in at if s["contender"].startswith("kalmanad")]
        peers = [s for s in at if not s["contender"].startswith("kalmanad")]
        for o in ours:
            for p in peers:
                out.append(
                    _ratio(
                        "nuts",
                        f"{model}, {d['settings']['points']} points",
                        o["contender"],
                        p["contender"],
                        "ESS/s",
                        o["ess_per_s"] / p["ess_per_s"],
                        "> 1",
                    )
                )
    return out


def ratios_scale(d):
    out = []
    rows = [r for r in d.get("panel", []) if r.get("computes") == "value_and_grad"]
    s = d.get("settings", {})
    peers = [r for r in rows if not r["contender"].startswith("kalmanad")]
    for o in (r for r in rows if r["contender"].startswith("kalmanad")):
        # only like with like: the peer is timed on a sub-panel (its "subjects")
        for p in (p for p in peers if p.get("subjects") == o.get("subjects")):
            out.append(
                _ratio(
                    "scale",
                    f"panel {o.get('subjects')}×{s.get('obs_per_subject')}, 3 latent",
                    o["contender"],
                    p["contender"],
                    "value_and_grad time",
                    o["median_s"] / p["median_s"],
                    "< 1",
                )
            )
    return out


def ratios_vs_stan(d):
    out = []
    for r in d.get("ratios", []):
        case = f"{r['case']} (what users run)"
        out.append(
            _ratio(
                "vs_stan",
                case,
                r["contender"],
                r["peer"],
                "first fit wall time",
                r["first_fit_ratio"],
                "< 1",
            )
        )
        out.append(
            _ratio(
                "vs_stan",
                case,
                r["contender"],
                r["peer"],
                "warm ESS/s",
                r["warm_ess_per_s_ratio"],
                "> 1",
            )
        )
    return out


def ratios_vs_openmx(d):
    r = d.get("ratios") or {}
    if "first_call_vs_rscript" not in r:
        return []
    case = f"ML, {d['settings']['subjects']}-subject panel"
    return [
        _ratio(
            "vs_openmx",
            case,
            "kalmanad.fit_map first call",
            "OpenMx whole Rscript",
            "wall time",
            r["first_call_vs_rscript"],
            "< 1",
        ),
        _ratio(
            "vs_openmx",
            case,
            "kalmanad process",
            "OpenMx whole Rscript",
            "wall time",
            r["process_vs_rscript"],
            "< 1",
        ),
        _ratio(
            "vs_openmx",
            case,
            "kalmanad.fit_map second call",
            "OpenMx second mxRun",
            "wall time",
            r["warm_call_vs_warm_mxrun"],
            "< 1",
        ),
    ]


# (result key, case, contender, peer, what) of bench_ml's ratios, kalmanad over the peer.
_ML_RATIOS = (
    ("nile_first_kalmanad_over_statsmodels", "ML, Nile", "fit_mle first call", "statsmodels"),
    ("nile_warm_kalmanad_over_statsmodels", "ML, Nile", "fit_mle second call", "statsmodels"),
    ("panel_first_kalmanad_over_first_mxrun", "ML, panel", "fit_mle first call", "first mxRun"),
    ("panel_warm_kalmanad_over_warm_mxrun", "ML, panel", "fit_mle second call", "second mxRun"),
    ("panel_kalmanad_process_over_rscript", "ML, panel", "kalmanad process", "whole Rscript"),
)


def ratios_ml(d):
    r = d.get("ratios") or {}
    return [
        _ratio("ml", case, ours, peer, "wall time", r[key], "< 1")
        for key, case, ours, peer in _ML_RATIOS
        if key in r
    ]


REDUCE = {
    "linalg": (ratios_linalg, targets_linalg),
    "discretize": (ratios_discretize, targets_discretize),
    "filter": (ratios_filter, lambda d: _targets_generic("filter", d)),
    "nuts": (ratios_nuts, lambda d: _targets_generic("nuts", d)),
    "scale": (ratios_scale, lambda d: _targets_generic("scale", d)),
    "vs_stan": (ratios_vs_stan, lambda d: _targets_generic("vs_stan", d)),
    "vs_openmx": (ratios_vs_openmx, lambda d: _targets_generic("vs_openmx", d)),
    "ml": (ratios_ml, lambda d: _targets_generic("ml", d)),
}


# ------------------------------------------------------------------------------- tables


def _table(headers, rows, md=False):
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    if md:
        out = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in cells[1:]])
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in cells]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def _met(m):
    return "n/a" if m is None else ("yes" if m else "**no**")


def _meas(m):
    if m is None:
        return "not measured"
    if isinstance(m, float):
        return f"{m:.3g}"
    return str(m)


def main():
    args = _parse()
    env = dict(os.environ)
    if args.fast_compile:
        # Only where this jaxlib still has the option (0.11 dropped it, and XLA ends a
        # process whose XLA_FLAGS name an unknown one).
        from kalmanad._xla import fast_compile_known, with_fast_compile

        fast = with_fast_compile(env.get("XLA_FLAGS"))
        if fast:
            env["XLA_FLAGS"] = fast
        if not fast_compile_known():
            print("this jaxlib has no fast-compile option: XLA's defaults", flush=True)
    started = time.time()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    runs = []
    prev_path = RESULTS / "summary.json"

    def previous_runs():  # read after the runs: another run.py may have written since
        return json.loads(prev_path.read_text())["runs"] if prev_path.exists() else []

    if args.summarise_only:
        # The runs recorded in summary.json; a bench missing there (its run.py was a
        # separate invocation) is summarised from its result file, dated by the file.
        prev = {r["bench"]: r for r in previous_runs()}
        for name in args.only:
            path = RESULTS / f"{STEMS[name][0 if args.quick else 1]}.json"
            if name in prev:  # load_fresh below rejects a result file older than the run
                runs.append(prev[name])
            elif path.exists():
                d = json.loads(path.read_text())
                runs.append(
                    {
                        "bench": name,
                        "command": f"python benchmarks/bench_{name}.py"
                        + (" --quick" if args.quick else ""),
                        "status": "ok" if d.get("complete", True) else "incomplete",
                        "returncode": None,
                        "started_unix": path.stat().st_mtime,
                        "wall_s": d.get("elapsed_s") or 0.0,
                        "log": f"benchmarks/results/logs/{name}.log",
                        "log_tail": [],
                    }
                )
    else:
        for name in args.only:
            runs.append(run_bench(name, args, env))
        if args.merge:
            done = {r["bench"] for r in runs}
            runs = [r for r in previous_runs() if r["bench"] not in done] + runs
            runs.sort(key=lambda r: BENCHES.index(r["bench"]))

    ratios, targets, failures, machine = [], [], [], None
    for r in runs:
        d, path = load_fresh(r["bench"], args.quick, r["started_unix"])
        if r["status"] != "ok":
            failures.append(
                {"bench": r["bench"], "status": r["status"], "log": r["log"], "tail": r["log_tail"]}
            )
        if d is None:
            if r["status"] == "ok":
                failures.append(
                    {"bench": r["bench"], "status": f"no fresh {path.name}", "log": r["log"]}
                )
            continue
        r["result_file"] = str(path.relative_to(HERE.parent))
        r["result_written_utc"] = datetime.datetime.fromtimestamp(
            path.stat().st_mtime, datetime.timezone.utc
        ).isoformat(timespec="seconds")
        machine = machine or d.get("machine")
        rat, tg = REDUCE[r["bench"]]
        ratios += rat(d)
        targets += tg(d)
        for k, e in (d.get("errors") or {}).items():
            failures.append({"bench": r["bench"], "status": f"part {k} failed: {e[:300]}"})

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "xla_flags": env.get("XLA_FLAGS"),
        "compile_cache": args.compile_cache or None,
        "quick": args.quick,
        "bench_machine": machine,
    }
    r_head = ["bench", "case", "kalmanad", "peer", "metric", "ratio", "better"]
    r_body = [
        [
            x["bench"],
            x["case"],
            x["contender"],
            x["peer"],
            x["metric"],
            f"{x['ratio']:.3g}",
            x["better_when"],
        ]
        for x in ratios
    ]
    t_head = ["bench", "target", "measured", "met"]
    t_body = [[t["bench"], t["target"], _meas(t["measured"]), _met(t["met"])] for t in targets]
    s_head = ["bench", "status", "wall s", "result", "written (UTC)"]
    s_body = [
        [
            r["bench"],
            r["status"],
            f"{r['wall_s']:.0f}",
            r.get("result_file", "—"),
            r.get("result_written_utc", "—"),
        ]
        for r in runs
    ]
    be = (machine or {}).get("backend", "?")
    dev = (machine or {}).get("device", "?")
    print(
        f"\nbenchmarks/run.py{' --quick' if args.quick else ''}: backend {be} ({dev}), "
        f"{os.cpu_count()} CPUs, load at start {load}, XLA_FLAGS={info['xla_flags']!r}"
    )
    print("\nruns")
    print(_table(s_head, s_body))
    print("\nratios: kalmanad ÷ peer, measured in the same run and process")
    print(_table(r_head, r_body))
    print("\ntargets")
    print(_table(t_head, t_body))
    if failures:
        print("\nFAILURES")
        for f in failures:
            print(f"  {f['bench']}: {f['status']} (log: {f.get('log', '—')})")
            for line in f.get("tail", [])[-5:]:
                print(f"      {line}")

    md = [
        f"# Benchmark summary{' (quick)' if args.quick else ''}",
        "",
        f"`python benchmarks/run.py{' --quick' if args.quick else ''}`, {info['date_utc']}: "
        f"backend {be} ({dev}), {os.cpu_count()} CPUs, load average at start {load}, "
        f"`XLA_FLAGS={info['xla_flags']}`. Every ratio is kalmanad ÷ a peer timed in the "
        "same process of the same run (time: < 1 is faster; ESS/s: > 1 is faster). The "
        "machine is shared: absolute times are not comparable between runs, ratios only.",
        "",
        "## runs",
        "",
        _table(s_head, s_body, md=True),
        "",
        "## ratios against the peers",
        "",
        _table(r_head, r_body, md=True),
        "",
        "## targets",
        "",
        _table(t_head, t_body, md=True),
    ]
    if failures:
        md += ["", "## failures", ""] + [
            f"- {f['bench']}: {f['status']} (log `{f.get('log', '—')}`)" for f in failures
        ]
    payload = {
        "summary": "benchmarks/run.py",
        "machine": info,
        "runs": runs,
        "ratios": ratios,
        "targets": targets,
        "failures": failures,
        "elapsed_s": time.time() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / "summary.md").write_text("\n".join(md) + "\n")
    print(f"\nwrote {RESULTS / 'summary.json'} and {RESULTS / 'summary.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
