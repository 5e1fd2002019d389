"""Make the OpenMx reference of ``tests/test_mle.py``: data, OpenMx fit, JSON fixture.

    python benchmarks/peers/openmx_mle_reference.py

Simulates a small ragged panel with kalmanad (seeded: 30 subjects, 6-14 observation
times each, gaps exponential with mean 0.5, every subject's first time 0, 5% of the
values missing) from the model of ``openmx_mle_reference.R`` (a symmetric drift, so
OpenMx 2.21's transposed process-noise integral is exact), writes it to
``tests/data/openmx_panel.csv``, fits it with OpenMx (Debian's ``r-cran-openmx``; see
``benchmarks/_rpeers.py``) and stores the estimates, their standard errors and −2LL
in ``tests/data/openmx_panel_reference.json``. The tests read both files and need no R.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import kalmanad  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "tests" / "data"
TRUTH = {"a11": -0.8, "a12": 0.3, "a22": -0.5, "q1": 0.6, "q2": 0.4, "r1": 0.1, "r2": 0.05,
         "d1": 1.0, "d2": -1.0}  # fmt: skip
SEED = 21


def simulate():
    rng = np.random.default_rng(SEED)
    counts = rng.integers(6, 15, size=30)
    p = TRUTH
    sde = kalmanad.LinearSDE(
        drift=jnp.array([[p["a11"], p["a12"]], [p["a12"], p["a22"]]]),
        diffusion=jnp.diag(jnp.array([p["q1"], p["q2"]])),
        observation=jnp.eye(2),
        observation_noise=jnp.diag(jnp.array([p["r1"], p["r2"]])),
        observation_intercept=jnp.array([p["d1"], p["d2"]]),
        initial_mean=jnp.zeros(2),
        initial_cov=jnp.eye(2),
    )
    rows = []
    for s, n in enumerate(counts):
        gaps = rng.exponential(0.5, size=n)
        gaps[0] = 0.0
        t = np.round(np.cumsum(gaps), 4)
        y = np.array(kalmanad.simulate(sde, t, jax.random.PRNGKey(SEED + s)).observations)
        y[rng.random(y.shape) < 0.05] = np.nan
        rows += [(s + 1, t[k], *y[k]) for k in range(n)]
    return rows


def main() -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    data_csv = DATA / "openmx_panel.csv"
    with open(data_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "time", "y1", "y2"])
        for i, t, a, b in simulate():
            w.writerow(
                [i, repr(float(t))] + ["NA" if np.isnan(v) else repr(float(v)) for v in (a, b)]
            )
    out_csv = HERE.parent / "results" / "logs" / "openmx_mle_reference.csv"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        ["Rscript", str(HERE / "openmx_mle_reference.R"), str(data_csv), str(out_csv)],
        capture_output=True,
        text=True,
    )
    print(p.stdout + p.stderr)
    if p.returncode != 0:
        return 1
    with open(out_csv) as f:
        values = {r["name"]: r["value"] for r in csv.DictReader(f)}
    names = list(TRUTH)
    ref = {
        "source": "benchmarks/peers/openmx_mle_reference.R (mxExpectationSSCT, mxRun + mxTryHard)",
        "openmx_version": values["openmx_version"],
        "data": "tests/data/openmx_panel.csv",
        "truth": TRUTH,
        "estimates": {k: float(values[k]) for k in names},
        "standard_errors": {k: float(values[f"se_{k}"]) for k in names},
        "minus2ll": float(values["minus2ll"]),
        "status_code": int(float(values["status_code"])),
    }
    (DATA / "openmx_panel_reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    print(json.dumps(ref, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
