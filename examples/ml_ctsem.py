"""Maximum likelihood on ctsem's own data: two published fits reproduced.

ctsem's test suite (``tests/testthat/test-knownFits.R``, github.com/cdriveraus/ctsem)
states the −2 log-likelihood of two ML fits on data sets ctsem bundles:

* ``AnomAuth`` (anomia and authoritarianism, 2722 subjects, 5 waves, intervals
  1, 1, 2, 2 years): a bivariate CT-VAR with free drift, Cholesky diffusion, manifest
  means, free initial means and covariance, no measurement error: −2LL = 23415.929;
* ``Oscillating`` (200 subjects, 11 irregular waves): a damped oscillator (position and
  velocity, only position observed without error; drift [[0, 1], [crosseffect,
  autoeffect]], ctsem fixes the top-left entry at 1e-5), diffusion on the velocity
  only, free initial means and covariance: −2LL = −3461.936.

The data are GPL-3 (ctsem's licence), so they live in the test fixtures
``tests/data/ctsem_*.csv`` (converted from ctsem's ``data/*.rda`` with R's
``write.csv``), not in the package. The specs below use flat priors: fit_mle uses only
their supports. Run from the repository root: ``python examples/ml_ctsem.py``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from kalmanad.mle import fit_mle  # noqa: E402
from kalmanad.spec import ModelSpec  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"

#: ctsem's published −2LL (tests/testthat/test-knownFits.R).
PUBLISHED = {"anomauth": 23415.929, "oscillating": -3461.936}


def read_ctsem_wide(path: Path, n_manifest: int, n_times: int):
    """ctsem's wide layout (``Y{j}_T{t}`` columns, intervals ``dT{t}``) as a padded panel.

    Returns ``(times (S, T), y (S, T, m))``: each subject starts at time 0 (ctsem's T0)
    and its later times are the cumulative intervals; ``NA`` is missing.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))

    def num(text):
        return np.nan if text in ("", "NA") else float(text)

    y = np.array(
        [
            [[num(r[f"Y{j + 1}_T{t}"]) for j in range(n_manifest)] for t in range(n_times)]
            for r in rows
        ]
    )
    dts = np.array([[num(r[f"dT{t}"]) for t in range(1, n_times)] for r in rows])
    times = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(dts, axis=1)], axis=1)
    return times, y


ANOMAUTH = {
    "model": {"name": "anomauth", "latent": ["eta1", "eta2"], "manifest": ["Y1", "Y2"]},
    "parameters": {
        **{f"drift{i}{j}": "flat" for i in (1, 2) for j in (1, 2)},
        "diff11": "flat(low=0)",
        "diff21": "flat",
        "diff22": "flat(low=0)",
        "mm1": "flat",
        "mm2": "flat",
        "t0m1": "flat",
        "t0m2": "flat",
        "t0sd11": "flat(low=0)",
        "t0sd21": "flat",
        "t0sd22": "flat(low=0)",
    },
    "dynamics": {
        "drift": [["drift11", "drift12"], ["drift21", "drift22"]],
        "diffusion_sd": {"lower": [["diff11"], ["diff21", "diff22"]]},
    },
    "measurement": {"loadings": [[1, 0], [0, 1]], "intercept": ["mm1", "mm2"], "noise": 0},
    "initial": {
        "state": "known",
        "mean": ["t0m1", "t0m2"],
        "sd": {"lower": [["t0sd11"], ["t0sd21", "t0sd22"]]},
    },
}

#: Start values (the magnitudes of ctsem's AnomAuth estimates are unknown to a new
#: user; these are generic: decay at rate 1, unit noise, the data's means).
ANOMAUTH_START = {"drift11": -1.0, "drift22": -1.0, "mm1": 2.5, "mm2": 2.5, "t0sd11": 0.5}

OSCILLATING = {
    "model": {"name": "oscillating", "latent": ["x", "v"], "manifest": ["Y1"]},
    "parameters": {
        "crosseffect": "flat",
        "autoeffect": "flat",
        "diffusion": "flat(low=0)",
        "t0sd11": "flat(low=0)",
        "t0sd21": "flat",
        "t0sd22": "flat(low=0)",
        "m1": "flat",
        "m2": "flat",
    },
    "dynamics": {
        "drift": [[1e-5, 1], ["crosseffect", "autoeffect"]],
        "diffusion_sd": [[0, 0], [0, "diffusion"]],
    },
    "measurement": {"loadings": [[1, 0]], "noise": 0},
    "initial": {
        "state": "known",
        "mean": ["m1", "m2"],
        "sd": {"lower": [["t0sd11"], ["t0sd21", "t0sd22"]]},
    },
}

#: ctsem's own inits for this model (test-knownFits.R), as natural-scale start values.
OSCILLATING_START = {
    "crosseffect": -39.5,
    "autoeffect": -0.5,
    "diffusion": 0.1,
    "t0sd11": 1.0,
    "t0sd21": 0.0,
    "t0sd22": 1.0,
    "m1": 0.05,
    "m2": 0.9,
}


def fit(name: str, **kw):
    """Fit one of the two data sets; returns (result, seconds)."""
    if name == "anomauth":
        spec, (times, y) = (
            ModelSpec.from_dict(ANOMAUTH),
            read_ctsem_wide(DATA / "ctsem_anomauth.csv", 2, 5),
        )
        start = ANOMAUTH_START
    else:
        spec, (times, y) = (
            ModelSpec.from_dict(OSCILLATING),
            read_ctsem_wide(DATA / "ctsem_oscillating.csv", 1, 11),
        )
        start = OSCILLATING_START
    t0 = time.perf_counter()
    result = fit_mle(spec, times, y, start=kw.pop("start", start), **kw)
    return result, time.perf_counter() - t0


def main() -> None:
    for name in ("oscillating", "anomauth"):
        result, seconds = fit(name)
        print(result.summary())
        print(
            f"{name}: -2LL kalmanad {result.minus2ll:.3f}, ctsem (published) "
            f"{PUBLISHED[name]:.3f}, difference {result.minus2ll - PUBLISHED[name]:+.3f} "
            f"({seconds:.1f} s, compilation included)\n"
        )


if __name__ == "__main__":
    main()
