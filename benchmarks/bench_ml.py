"""Maximum-likelihood wall time: kalmanad.mle.fit_mle against statsmodels and OpenMx.

    python benchmarks/bench_ml.py [--quick] [--no-openmx] [--no-setup]

Two cases, each fitted to the same data by both sides, agreement checked on −2LL:

* **Nile** (100 annual flows): the local level model with an exact diffuse start.
  kalmanad: the zoo's ``local_level`` spec, ``fit_mle`` (3 starts, exact Hessian, SEs).
  statsmodels: ``UnobservedComponents(y, "llevel", use_exact_diffuse=True).fit()``
  (L-BFGS with its default numerical-derivative standard errors).
* **Panel** (``tests/data/openmx_panel.csv``: 30 subjects, 6-14 ragged times each, 2
  latents with a symmetric drift, 2 indicators, 9 parameters): kalmanad's ``fit_mle``
  against OpenMx's ``mxExpectationSSCT`` multigroup ``mxRun``
  (``peers/openmx_mle_reference.R``; Debian's ``r-cran-openmx``, installed on demand
  by ``_rpeers.ensure_r``).

kalmanad runs in a fresh process (``--worker``): the **first** call includes tracing
and XLA compilation of the gradient and of the exact Hessian; the **warm** call fits
the same model to the same data again, which reuses the compiled programs (fit_mle
keeps the last few). statsmodels is timed in this process (first and second ``fit``);
OpenMx by ``system.time`` around its first and a second ``mxRun``, and the whole
``Rscript``. The machine is shared: the load average is recorded with each number,
and the CPU time of each first call beside its wall time.

Outputs ``benchmarks/results/bench_ml[_quick].json`` and ``.md``; ``--quick`` is the
same run (both cases are small).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PANEL_CSV = ROOT / "tests" / "data" / "openmx_panel.csv"

#: The panel model of peers/openmx_mle_reference.R, the spec the tests fit too.
PANEL_SPEC = ROOT / "tests" / "data" / "openmx_panel.toml"


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the same run (both cases are small)")
    p.add_argument("--no-openmx", action="store_true", help="skip the OpenMx peer")
    p.add_argument("--no-setup", action="store_true", help="never install R packages")
    p.add_argument("--worker", metavar="OUT.json", help=argparse.SUPPRESS)
    return p.parse_args()


def worker(out_path: str) -> None:
    """Fresh process: fit_mle first and warm on both cases; write times and −2LL."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import kalmanad
    from kalmanad.mle import fit_mle
    from kalmanad.spec import ModelSpec

    out = {}
    nile = kalmanad.load_model("local_level")
    d = nile.default_data()
    panel = ModelSpec.from_toml(PANEL_SPEC)
    p = panel.read_data(PANEL_CSV, subject="id")
    cases = {
        "nile": (nile, (d.times, d.y), {}),
        "panel": (panel, (p.times, p.y), {"subject": p.subject, "num_starts": 1}),
    }
    for case, (spec, args, kw) in cases.items():
        for label in ("first", "warm"):
            t0, c0 = time.perf_counter(), time.process_time()
            r = fit_mle(spec, *args, **kw)
            out[f"{case}_{label}_s"] = time.perf_counter() - t0
            out[f"{case}_{label}_cpu_s"] = time.process_time() - c0
            out[f"{case}_{label}_minus2ll"] = r.minus2ll
            out[f"{case}_{label}_load"] = os.getloadavg()[0]
        out[f"{case}_converged"] = r.converged
        out[f"{case}_estimates"] = dict(zip(r.names, map(float, r.estimate), strict=True))
    Path(out_path).write_text(json.dumps(out))


def statsmodels_nile() -> dict:
    import numpy as np
    import statsmodels.api as sm

    y = np.loadtxt(ROOT / "models" / "nile.csv", delimiter=",", skiprows=1)[:, 1]
    out = {}
    for label in ("first", "warm"):
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True)
            res = mod.fit(disp=False)
        out[f"{label}_s"] = time.perf_counter() - t0
        out[f"{label}_cpu_s"] = time.process_time() - c0
        out[f"{label}_minus2ll"] = -2.0 * float(res.llf)
        out[f"{label}_load"] = load
    import statsmodels

    out["version"] = statsmodels.__version__
    return out


def _name_values(path: Path) -> dict:
    """The R script's ``name,value`` CSV: numbers as floats, other values as text."""
    import csv

    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                out[row["name"]] = float(row["value"])
            except ValueError:
                out[row["name"]] = row["value"]
    return out


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_info, markdown_table, text_table, write_results
    from _rpeers import PEERS, ensure_r, run_rscript

    logs = ROOT / "benchmarks" / "results" / "logs" / "bench_ml"
    logs.mkdir(parents=True, exist_ok=True)
    ok, msg, versions = (False, "--no-openmx", {})
    if not ARGS.no_openmx:
        ok, msg, versions = ensure_r(["OpenMx"], install=not ARGS.no_setup)
        if not ok:
            print(f"SKIPPING the OpenMx peer: {msg}", flush=True)

    out_json = logs / "kalmanad.json"
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, __file__, "--worker", str(out_json)], capture_output=True, text=True
    )
    process_s = time.perf_counter() - t0
    (logs / "worker.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        print(p.stdout + p.stderr)
        return 1
    kal = json.loads(out_json.read_text())
    kal["process_s"] = process_s
    sm = statsmodels_nile()

    omx = None
    if ok:
        rc, wall, tail = run_rscript(
            [PEERS / "openmx_mle_reference.R", PANEL_CSV, logs / "openmx.csv"],
            timeout=1800,
            log_path=logs / "rscript.log",
        )
        if rc == 0:
            omx = _name_values(logs / "openmx.csv")
            omx["rscript_s"] = wall
        else:
            print(f"OpenMx failed:\n{tail}")

    head = ["case", "contender", "first s", "first CPU s", "warm s", "-2LL", "load (first, warm)"]
    rows = [
        [
            "Nile",
            "kalmanad fit_mle (exact Hessian SEs)",
            f"{kal['nile_first_s']:.2f}",
            f"{kal['nile_first_cpu_s']:.2f}",
            f"{kal['nile_warm_s']:.3f}",
            f"{kal['nile_first_minus2ll']:.6f}",
            f"{kal['nile_first_load']:.1f}, {kal['nile_warm_load']:.1f}",
        ],
        [
            "Nile",
            f"statsmodels {sm['version']} UnobservedComponents.fit",
            f"{sm['first_s']:.2f}",
            f"{sm['first_cpu_s']:.2f}",
            f"{sm['warm_s']:.3f}",
            f"{sm['first_minus2ll']:.6f}",
            f"{sm['first_load']:.1f}, {sm['warm_load']:.1f}",
        ],
        [
            "panel",
            "kalmanad fit_mle (exact Hessian SEs)",
            f"{kal['panel_first_s']:.2f}",
            f"{kal['panel_first_cpu_s']:.2f}",
            f"{kal['panel_warm_s']:.3f}",
            f"{kal['panel_first_minus2ll']:.6f}",
            f"{kal['panel_first_load']:.1f}, {kal['panel_warm_load']:.1f}",
        ],
    ]
    ratios = {
        "nile_first_kalmanad_over_statsmodels": kal["nile_first_s"] / sm["first_s"],
        "nile_warm_kalmanad_over_statsmodels": kal["nile_warm_s"] / sm["warm_s"],
    }
    if omx:
        rows.append(
            [
                "panel",
                f"OpenMx {versions.get('OpenMx')} SSCT mxRun (multigroup)",
                f"{omx['first_mxrun_s']:.2f}",
                "",
                f"{omx['warm_mxrun_s']:.3f}",
                f"{omx['first_mxrun_minus2ll']:.6f}",
                "",
            ]
        )
        ratios["panel_first_kalmanad_over_first_mxrun"] = (
            kal["panel_first_s"] / omx["first_mxrun_s"]
        )
        ratios["panel_warm_kalmanad_over_warm_mxrun"] = kal["panel_warm_s"] / omx["warm_mxrun_s"]
        ratios["panel_kalmanad_process_over_rscript"] = kal["process_s"] / omx["rscript_s"]
    rrows = [[k, f"{v:.3g}"] for k, v in ratios.items()]
    print("\n" + text_table(head, rows))
    print("\n" + text_table(["ratio (kalmanad ÷ peer)", "value"], rrows))
    info = machine_info("float64", ARGS.quick, openmx=versions.get("OpenMx"))
    md = [
        "# Maximum likelihood: kalmanad.mle.fit_mle vs statsmodels and OpenMx",
        "",
        f"`python benchmarks/bench_ml.py{' --quick' if ARGS.quick else ''}` "
        f"({info['cpu_count']} CPUs, load average at start {info['load_average_at_start']}, "
        f"jax {info['jax']}). First = a fresh process's first call (kalmanad: tracing and "
        "XLA compilation of the gradient and the exact Hessian included); warm = the same "
        "fit again. CPU s = the process's CPU time over the first call (all threads): on a "
        "shared machine it is the steadier measure of kalmanad's compilation. "
        "kalmanad's whole worker process (both cases, 4 fits, imports): "
        f"{kal['process_s']:.1f} s"
        + (f"; OpenMx's whole Rscript: {omx['rscript_s']:.1f} s." if omx else "."),
        "",
        markdown_table(head, rows),
        "",
        markdown_table(["ratio (kalmanad ÷ peer)", "value"], rrows),
    ]
    payload = {"machine": info, "kalmanad": kal, "statsmodels": sm, "openmx": omx}
    payload["ratios"] = ratios
    json_path, md_path = write_results(
        "bench_ml_quick" if ARGS.quick else "bench_ml", payload, "\n".join(md)
    )
    print(f"\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    ARGS = _parse()
    if ARGS.worker:
        worker(ARGS.worker)
        sys.exit(0)
    sys.exit(main())
