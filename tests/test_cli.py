"""The ``kalmanad`` command, run as a subprocess (as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# The package under test, whatever the working folder of the command.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def run_cli(*args, cwd=None, timeout=900, env=None):
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "kalmanad.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {}), "PYTHONPATH": path},
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
    out = res.stdout
    # Every parameter with its prior, in the spec's order, and the model's states and data.
    body = out.split("  parameters:\n", 1)[1].split("\n  derived:", 1)[0].splitlines()
    lines = {line.split("~")[0].strip(): line for line in body if "~" in line}
    expected = {
        "omega": "LogNormal(0, 1)",
        "quality": "LogNormal(0, 1)",
        "sigma": "HalfNormal(100)",
        "mu": "Normal(50, 50)",
        "noise": "HalfNormal(20)",
    }
    for name, prior in expected.items():
        assert name in lines and prior in lines[name], (name, out)
    assert list(lines) == list(expected), out
    assert "x, v" in out and "sunactivity" in out and "stationary" in out, out


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
    out = tmp_path / "out"
    res = run_cli("fit", "ou", str(path), "--no-plot", "--no-progress", "--out", str(out))
    assert_one_line_error(res)
    assert fragment in res.stderr.lower() or fragment in res.stderr, res.stderr
    assert not out.exists()


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
    # Options before, between and after the positional arguments.
    res = run_cli(
        "fit",
        "--warmup",
        "10",
        "ou",
        "--draws",
        "10",
        "--chains",
        "1",
        "--time",
        "time",
        str(sim),
        "--method",
        "sqrt",
        "--checkpoint",
        "7",
        "--no-pointwise",
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
    assert "log_likelihood" not in idata.groups()
    # Only the finished file is left in the folder (no temporary name).
    assert sorted(p.name for p in out.iterdir()) == ["ou_fit.nc"]
    # The summary is complete: every column, no '...', ESS as integers.
    header = next(x for x in res.stdout.splitlines() if "ess_bulk" in x).split()
    assert header[-3:] == ["ess_bulk", "ess_tail", "r_hat"]
    row = next(x for x in res.stdout.splitlines() if x.startswith("theta")).split()
    assert len(row) == len(header) + 1
    assert row[header.index("ess_bulk") + 1].isdigit()
    assert "..." not in res.stdout


def test_fit_help_describes_the_csv_and_options():
    res = run_cli("fit", "--help")
    assert res.returncode == 0, res.stderr
    for fragment in ("long format", "ties", "--subject", "NA", "--method", "--no-pointwise"):
        assert fragment in res.stdout, fragment


def test_fit_methods_are_the_filters():
    from kalmanad.cli import FILTER_METHODS
    from kalmanad.filter import METHODS

    assert set(FILTER_METHODS) == set(METHODS)


def test_options_may_follow_the_data_file(tmp_path):
    # DATA after an option is still DATA: the error is about its columns.
    path = tmp_path / "data.csv"
    path.write_text("t,z\n0,1\n")
    res = run_cli("fit", "ou", "--time", "t", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(res, "data.csv", "missing column(s) 'y'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["fit", "ou", "--checkpoint", "4", "--method", "parallel"], ["--checkpoint", "sqrt"]),
        (["fit", "ou", "--checkpoint", "0"], ["--checkpoint", "positive"]),
        (["fit", "ou", "--method", "fast"], ["--method", "sequential"]),
        (["fit", "ou", "--draws", "0"], ["--draws"]),
        (["fit", "ou", "--chains", "0"], ["--chains"]),
        (["fit", "ou", "--seed", "-2"], ["--seed"]),
        (["fit", "ou", "--draws", "many"], ["--draws", "many"]),
        (["fit", "ou", "a.csv", "b.csv"], ["b.csv"]),
        (["fit"], ["model"]),
        (["frobnicate"], ["frobnicate"]),
        (["simulate", "ou", "--n", "0"], ["--n"]),
        (["simulate", "ou", "--dt", "-1"], ["--dt"]),
        (["simulate", "ou", "--param", "theta=nan"], ["theta", "nan"]),
        (["simulate", "ou", "--param", "theta"], ["NAME=VALUE"]),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, fragments):
    res = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(res, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_fails_before_sampling(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    res = run_cli("fit", "ou", "--out", str(taken))
    assert_one_line_error(res, "taken", "not a folder")
    assert taken.read_text() == "mine"
    res = run_cli("simulate", "ou", "--out", str(tmp_path / "nowhere" / "sim.csv"))
    assert_one_line_error(res, "nowhere", "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_unfittable_model_is_a_one_line_error(tmp_path):
    # A drift unstable at every prior draw: no starting point has a finite density.
    spec = tmp_path / "unstable.toml"
    spec.write_text(
        '[model]\nlatent = ["x"]\nmanifest = ["y"]\n[parameters]\ntheta = "LogNormal(0, 1)"\n'
        'noise = "HalfNormal(1)"\n[dynamics]\ndrift = [["theta"]]\ndiffusion = [[1]]\n'
        '[measurement]\nloadings = [[1]]\nnoise_sd = [["noise"]]\n'
    )
    data = tmp_path / "d.csv"
    data.write_text("time,y\n0,1\n1,2\n2,0.5\n")
    out = tmp_path / "out"
    res = run_cli("fit", str(spec), str(data), "--no-progress", "--out", str(out))
    assert_one_line_error(res, "unstable", "stable drift", "--init map")
    assert not out.exists()


def test_summary_is_never_truncated():
    import pandas as pd

    from kalmanad.cli import _format_summary

    columns = ["mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd"]
    columns += ["ess_bulk", "ess_tail", "r_hat"]
    index = [f"a_very_long_parameter_name_{i}" for i in range(70)]
    values = np.tile([1.234567e-5, 2.0, -3.0, 4.0, 1e-6, 2e-6, 812.6, 401.2, 1.0049], (70, 1))
    with pd.option_context("display.width", 40, "display.max_columns", 3, "display.max_rows", 5):
        text = _format_summary(pd.DataFrame(values, index=index, columns=columns), {"a": 1.0})
        assert pd.get_option("display.width") == 40  # the caller's options are kept
    lines = text.splitlines()
    assert len(lines) == 71 and "..." not in text
    assert lines[0].split() == [*columns, "truth"]
    expected = [index[0], "1.235e-05", "2", "-3", "4", "1e-06", "2e-06", "813", "401"]
    assert lines[1].split() == [*expected, "1.00", "NaN"]


def test_outputs_appear_only_when_complete(tmp_path):
    from kalmanad.cli import _written_when_complete

    target = tmp_path / "result.nc"
    with pytest.raises(RuntimeError), _written_when_complete(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with _written_when_complete(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert list(tmp_path.iterdir()) == [target]


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


INPUT_SPEC = """
[model]
latent = ["x"]
manifest = ["y"]
inputs = ["dose"]
[parameters]
theta = "LogNormal(0, 1)"
effect = "Normal(0, 2)"
sigma = "HalfNormal(1)"
noise = "HalfNormal(1)"
[dynamics]
drift = [["-theta"]]
diffusion_sd = [["sigma"]]
input_effect = [["effect"]]
[measurement]
loadings = [[1]]
noise_sd = [["noise"]]
"""


def test_simulate_with_inputs_writes_a_fittable_csv(tmp_path):
    spec = tmp_path / "dosed.toml"
    spec.write_text(INPUT_SPEC)
    doses = tmp_path / "doses.csv"
    doses.write_text("time,dose,note\n0,0,a\n0.5,1,b\n1.5,1,c\n1.5,0,d\n3,0,e\n")
    out = tmp_path / "sim.csv"
    res = run_cli("simulate", str(spec), "--inputs", str(doses), "--out", str(out))
    assert res.returncode == 0, res.stderr
    header, data = _csv_rows(out)
    assert header == ["time", "y", "dose"]
    np.testing.assert_array_equal(data[:, 0], [0, 0.5, 1.5, 1.5, 3])
    np.testing.assert_array_equal(data[:, 2], [0, 1, 1, 0, 0])
    from kalmanad.spec import load_model

    back = load_model(spec).read_data(out)
    np.testing.assert_array_equal(back.inputs[:, 0], data[:, 2])
    np.testing.assert_array_equal(back.y[:, 0], data[:, 1])
    # Without the input series, or with one the model does not take: named errors.
    assert_one_line_error(run_cli("simulate", str(spec)), "dose", "--inputs")
    assert_one_line_error(run_cli("simulate", "ou", "--inputs", str(doses)), "no inputs")
    doses.write_text("time,other\n0,1\n")
    assert_one_line_error(
        run_cli("simulate", str(spec), "--inputs", str(doses)), "missing column(s) 'dose'"
    )


STIFF_SPEC = """
[model]
latent = ["x", "v"]
manifest = ["y"]
[parameters]
a = "LogNormal(8, 0.1)"
noise = "HalfNormal(1)"
[dynamics]
drift = [[DRIFT, 1], [0, "-a"]]
diffusion = { diagonal = [0, 1] }
[measurement]
loadings = [[1, 0]]
noise_sd = [["noise"]]
[initial]
state = "diffuse"
"""


def test_simulate_stiff_models(tmp_path):
    # |A| * gap ~ 1e7: the Van Loan discretisation overflows. A stable drift falls back
    # to the (exact) stationary discretisation and says so; an unstable one is an error
    # that says what to change.
    stable = tmp_path / "stiff.toml"
    stable.write_text(STIFF_SPEC.replace("DRIFT", "-3000"))
    out = tmp_path / "sim.csv"
    res = run_cli(
        "simulate", str(stable), "--n", "5", "--dt", "3000", "--param", "a=3000", "--out", str(out)
    )
    assert res.returncode == 0, res.stderr
    assert "stationary discretisation" in res.stderr
    _, data = _csv_rows(out)
    assert data.shape == (5, 2) and np.all(np.isfinite(data))
    unstable = tmp_path / "unstable.toml"
    unstable.write_text(STIFF_SPEC.replace("DRIFT", "3000"))
    res = run_cli("simulate", str(unstable), "--n", "5", "--dt", "3000", "--out", str(out))
    assert_one_line_error(res, "overflows", "not stable", "--dt", "larger units")


# ------------------------------------------------------------------ dt-effects plot


def test_dt_effects_are_the_matrix_exponential_of_each_posterior_drift():
    """``fit --plot dt-effects`` draws e^{AΔt} at the posterior draws of the drift:
    checked against scipy's expm of A built from the ctvar parameters by hand."""
    import arviz as az
    import scipy.linalg

    from kalmanad import cli

    cli._enable_x64()
    spec = cli._load("ctvar")
    data, _ = cli._read(spec, None, None, None)
    times, y, inputs, kwargs, subjects = cli._arrays(spec, data)
    rng = np.random.default_rng(0)
    shape = (2, 3)  # chains, draws
    post = {p: rng.normal(0.0, 0.3, shape) for p in spec.parameters}
    for p in ("auto1", "auto2", "sigma1", "sigma2", "noise1", "noise2"):
        post[p] = rng.uniform(0.5, 1.5, shape)
    idata = az.from_dict(posterior=post)
    dts, effects, label = cli.dt_effects(spec, idata, times, y, inputs, kwargs, subjects)
    assert label is None and effects.shape == (6, len(dts), 2, 2)
    assert dts[0] == 0.0
    flat = {k: v.reshape(-1) for k, v in post.items()}
    rates = []
    for d in range(6):
        a = np.array(
            [[-flat["auto1"][d], flat["cross12"][d]], [flat["cross21"][d], -flat["auto2"][d]]]
        )
        ref = np.stack([scipy.linalg.expm(a * dt) for dt in dts])
        np.testing.assert_allclose(effects[d], ref, rtol=1e-10, atol=1e-12)
        rates.append(np.abs(np.linalg.eigvals(a).real).min())
    # The grid reaches five slowest time scales (posterior median).
    np.testing.assert_allclose(dts[-1], 5.0 / np.median(rates), rtol=1e-12)


@pytest.mark.slow
def test_fit_plot_dt_effects_writes_the_figure(tmp_path):
    out = tmp_path / "out"
    args = ["--warmup", "30", "--draws", "20", "--chains", "1", "--no-progress"]
    res = run_cli("fit", "ctvar", *args, "--plot", "dt-effects", "--out", str(out))
    assert res.returncode == 0, res.stderr
    png = out / "ctvar_dt_effects.png"
    assert f"wrote {png}" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "ctvar_fit.png").exists()  # only the figure asked for
    assert sorted(p.name for p in out.iterdir()) == ["ctvar_dt_effects.png", "ctvar_fit.nc"]
    res = run_cli("fit", "ctvar", "--plot", "dt-effects", "--no-plot", "--out", str(out))
    assert_one_line_error(res, "--plot", "--no-plot")
    res = run_cli("fit", "ctvar", "--plot", "trace", "--out", str(out))
    assert_one_line_error(res, "--plot", "dt-effects")
