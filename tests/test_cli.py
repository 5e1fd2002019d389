"""The ``kalmanad`` command, run as a subprocess (as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest


def run_cli(*args, cwd=None, timeout=900, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kalmanad.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def assert_one_line_error(res, *fragments):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kalmanad: error:"), err
    for f in fragments:
        assert f in err, (f, err)


def test_models_lists_the_zoo():
    res = run_cli("models")
    assert res.returncode == 0, res.stderr
    names = [line.split()[0] for line in res.stdout.strip().splitlines()]
    for name in ("ou", "ctvar", "sho", "car", "carma", "local_linear_trend", "matern32"):
        assert name in names
    assert "panel_ctvar" in names


def test_describe_names_parameters_and_priors():
    res = run_cli("describe", "sho")
    assert res.returncode == 0, res.stderr
    assert "sho" in res.stdout.lower()


def test_unknown_model_is_a_one_line_error():
    assert_one_line_error(run_cli("fit", "no_such_model"), "no_such_model")


def test_missing_data_file_is_a_one_line_error(tmp_path):
    assert_one_line_error(run_cli("fit", "ou", str(tmp_path / "nope.csv")), "nope.csv")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("time,y\n0.0,1.0\n1.0,abc\n2.0,0.5\n", "abc"),  # non-numeric cell
        ("time,z\n0.0,1.0\n1.0,2.0\n", "y"),  # missing manifest column
        ("t,y\n0.0,1.0\n1.0,2.0\n", "time"),  # missing time column
        ("time,y\n0.0,1.0\n2.0,2.0\n1.0,0.5\n", "increasing"),  # unsorted times
    ],
    ids=["non-numeric", "missing-manifest", "missing-time", "unsorted"],
)
def test_bad_csv_is_a_one_line_error(tmp_path, body, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    res = run_cli("fit", "ou", str(path), "--no-plot", "--no-progress", "--out", str(tmp_path))
    assert_one_line_error(res)
    assert fragment in res.stderr.lower() or fragment in res.stderr, res.stderr


def test_simulate_writes_a_csv(tmp_path):
    out = tmp_path / "sim.csv"
    res = run_cli("simulate", "ou", "--n", "40", "--seed", "3", "--out", str(out))
    assert res.returncode == 0, res.stderr
    lines = [x for x in out.read_text().splitlines() if not x.startswith("#")]
    assert lines[0].split(",")[0] == "time"
    data = np.array([[float(v) for v in x.split(",")] for x in lines[1:]])
    assert data.shape[0] == 40
    assert np.all(np.diff(data[:, 0]) > 0)
    assert np.all(np.isfinite(data))
    # The '#' header line is a comment to the reader: the file fits as written.
    from kalmanad.spec import load_model

    back = load_model("ou").read_data(out)
    np.testing.assert_array_equal(back.times, data[:, 0])
    np.testing.assert_array_equal(back.y[:, 0], data[:, 1])


def _csv_rows(path):
    lines = [x for x in path.read_text().splitlines() if not x.startswith("#")]
    return lines[0].split(","), np.array([[float(v) for v in x.split(",")] for x in lines[1:]])


def test_simulate_long_series_times_stay_distinct(tmp_path):
    # 200000 exponential gaps of mean 1: with 10 significant digits some neighbouring
    # times print alike; every digit keeps them distinct, so the file can be fitted.
    out = tmp_path / "long.csv"
    res = run_cli("simulate", "ou", "--n", "200000", "--seed", "5", "--out", str(out))
    assert res.returncode == 0, res.stderr
    _, data = _csv_rows(out)
    assert data.shape == (200000, 2)
    assert np.all(np.diff(data[:, 0]) > 0)
    assert np.unique(data[:, 0]).size == 200000


def test_simulate_then_fit_round_trip(tmp_path):
    """The documented round trip: `kalmanad simulate` output is fitted as written."""
    import arviz as az

    sim = tmp_path / "sim.csv"
    res = run_cli("simulate", "ou", "--n", "300", "--seed", "4", "--out", str(sim))
    assert res.returncode == 0, res.stderr
    _, data = _csv_rows(sim)
    out = tmp_path / "out"
    res = run_cli(
        "fit",
        "ou",
        str(sim),
        "--warmup",
        "10",
        "--draws",
        "10",
        "--chains",
        "1",
        "--no-plot",
        "--no-progress",
        "--out",
        str(out),
        env={"KALMANAD_CACHE_DIR": "off"},
    )
    assert res.returncode == 0, res.stderr
    assert f"{sim} (300x1 array, 300 observed values)" in res.stdout
    idata = az.from_netcdf(out / "ou_fit.nc")
    # The fit saw exactly the simulated values.
    np.testing.assert_array_equal(idata.observed_data["y"].values[:, 0], data[:, 1])
    assert idata.posterior["theta"].shape == (1, 10)


def test_bad_simulate_parameter_is_a_one_line_error():
    assert_one_line_error(run_cli("simulate", "ou", "--param", "nope=1"), "nope")


@pytest.mark.slow
def test_fit_round_trip_writes_netcdf_and_plot(tmp_path):
    sim = tmp_path / "sim.csv"
    assert run_cli("simulate", "ou", "--n", "60", "--seed", "1", "--out", str(sim)).returncode == 0
    cache = tmp_path / "cache"
    res = run_cli(
        "fit",
        "ou",
        str(sim),
        "--warmup",
        "100",
        "--draws",
        "100",
        "--chains",
        "1",
        "--init",
        "map",
        "--dense-mass",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
        env={"KALMANAD_CACHE_DIR": str(cache)},
    )
    assert res.returncode == 0, res.stderr
    # The compiled programs were kept for the next run.
    assert any(p.is_file() for p in cache.rglob("*")), list(cache.rglob("*"))
    assert "divergent transitions" in res.stdout
    assert (tmp_path / "out" / "ou_fit.nc").is_file()
    assert (tmp_path / "out" / "ou_fit.png").is_file()
