"""benchmarks/nuts_regression.py: the NUTS slowdown check across dependency upgrades."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "nuts_regression.py"
STORED = ROOT / "benchmarks" / "results" / "bench_nuts_quick.json"


def _run(before, after, tmp_path):
    paths = []
    for name, payload in (("before.json", before), ("after.json", after)):
        path = tmp_path / name
        path.write_text(json.dumps(payload))
        paths.append(str(path))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *paths], capture_output=True, text=True, timeout=60
    )


def test_a_100x_slower_kalmanad_after_an_upgrade_is_flagged(tmp_path):
    before = json.loads(STORED.read_text())
    before["machine"]["numpyro"] = "0.22.0"
    after = copy.deepcopy(before)
    after["machine"]["numpyro"] = "0.21.0"
    for row in after["summary"]:
        if row["contender"] == "kalmanad":
            row["grad_evals_per_s"] /= 100
            row["ess_per_s"] /= 100
    res = _run(before, after, tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "numpyro 0.22.0 -> 0.21.0" in res.stdout
    assert "NUTS SLOWDOWN" in res.stderr and "x0.01" in res.stderr


def test_timing_noise_and_an_unchanged_result_are_not_flagged(tmp_path):
    before = json.loads(STORED.read_text())
    res = _run(before, before, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "versions: unchanged" in res.stdout
    after = copy.deepcopy(before)
    for row in after["summary"]:
        row["grad_evals_per_s"] *= 0.7  # a busy machine
    res = _run(before, after, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "x0.7" in res.stdout
