"""read_wide: ctsem's wide panels (Y1_T0…, dT1…) into kalmanad's long format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kalmanad
from kalmanad import models
from kalmanad.spec import load_model
from kalmanad.spec.data import DataError
from kalmanad.spec.wide import read_wide


def _to_wide(panel, ragged: dict) -> pd.DataFrame:
    """ctsem's wide layout of a padded panel; subject s keeps its first ragged[s] waves."""
    S, K, _ = panel.y.shape
    cols = {"id": [f"s{s}" for s in range(S)]}
    y = panel.y.copy()
    t = panel.times.copy()
    for s, k in ragged.items():
        y[s, k:] = np.nan
    for j, name in enumerate(("y1", "y2")):
        for k in range(K):
            cols[f"{name}_T{k}"] = y[:, k, j]
    for k in range(1, K):
        d = t[:, k] - t[:, k - 1]
        for s, kk in ragged.items():
            if k >= kk:
                d[s] = np.nan
        cols[f"dT{k}"] = d
    cols["age"] = panel.covariates["age"]
    return pd.DataFrame(cols)


@pytest.fixture(scope="module")
def long_panel():
    return load_model("panel_ctvar").default_data().to_panel()


@pytest.mark.parametrize("as_csv", [False, True])
def test_wide_panel_is_the_long_panel(long_panel, as_csv, tmp_path):
    ragged = {1: 12, 4: 3}
    df = _to_wide(long_panel, ragged)
    source = df
    if as_csv:
        source = tmp_path / "wide.csv"
        df.to_csv(source, index=False, na_rep="NA")
    data = read_wide(source, manifest=["y1", "y2"], covariates=["age"], subject="id")
    panel = data.to_panel()
    counts = np.full(len(df), long_panel.times.shape[1])
    for s, k in ragged.items():
        counts[s] = k
    np.testing.assert_array_equal(panel.counts, counts)
    np.testing.assert_array_equal(panel.subjects, df["id"].to_numpy())
    for s in range(len(df)):
        c = counts[s]
        np.testing.assert_allclose(panel.times[s, :c], long_panel.times[s, :c], rtol=1e-12)
        np.testing.assert_allclose(panel.y[s, :c], long_panel.y[s, :c], rtol=1e-12)
        assert np.all(np.isnan(panel.y[s, c:]))
    np.testing.assert_allclose(panel.covariates["age"], long_panel.covariates["age"])
    assert (data.path is not None) == as_csv
    # the result feeds the filters and the model's long-format data as it is
    model = models.ctvar([[-0.8, 0.2], [-0.3, -0.5]], [0.6, 0.6], noise_sd=[0.3, 0.3])
    ll = kalmanad.log_likelihood(model, panel.times, panel.y)
    assert ll.shape == (len(df),) and np.all(np.isfinite(ll))
    assert set(data.model_kwargs()) == {"times", "y", "subject", "covariates"}


def _small(**changes):
    cols = {
        "Y1_T0": [1.0, 2.0],
        "Y1_T1": [1.5, 2.5],
        "Y1_T2": [2.0, 3.0],
        "TD1_T0": [0.0, 1.0],
        "TD1_T1": [1.0, 0.0],
        "TD1_T2": [0.0, 0.0],
        "dT1": [1.0, 2.0],
        "dT2": [0.5, 0.25],
    }
    cols.update(changes)
    return pd.DataFrame(cols)


def test_times_inputs_and_labels():
    data = read_wide(_small(), manifest=["Y1"], inputs=["TD1"], start_time=10.0)
    np.testing.assert_allclose(data.times, [10.0, 11.0, 11.5, 10.0, 12.0, 12.25])
    np.testing.assert_allclose(data.inputs[:, 0], [0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert data.subject.tolist() == ["1", "1", "1", "2", "2", "2"]  # ctWideToLong's ids


def test_missing_wave_with_missing_interval_is_left_out():
    """Subject 1 misses wave 1 entirely (interval unknown): wave 2 is dT2 after wave 0,
    as with ctsem's tiny mininterval filler; a missing value of a wave with data is NaN."""
    df = _small(
        Y1_T1=[np.nan, np.nan], TD1_T1=[np.nan, 0.0], dT1=[np.nan, 2.0], Y1_T2=[2.0, np.nan]
    )
    data = read_wide(df, manifest=["Y1"], inputs=["TD1"])
    np.testing.assert_allclose(data.times, [0.0, 0.5, 0.0, 2.0, 2.25])
    np.testing.assert_allclose(data.y[:, 0], [1.0, 2.0, 2.0, np.nan, np.nan])


@pytest.mark.parametrize(
    ("df", "kw", "message"),
    [
        (_small(), {"manifest": ["Y2"]}, r"unknown manifest variable 'Y2'.*no columns Y2_T0"),
        (
            _small(),
            {"manifest": ["Y"]},
            r"unknown manifest variable 'Y' \(did you mean 'Y1'\?\).*are: TD1, Y1\)",
        ),
        (_small(), {"manifest": ["Y1"], "covariates": ["age"]}, r"unknown covariate 'age'"),
        (_small(), {"manifest": ["Y1"], "subject": "id"}, r"unknown subject column 'id'"),
        (
            _small(TD1_T3=[0.0, 0.0]),
            {"manifest": ["Y1"], "inputs": ["TD1"]},
            r"inconsistent wave counts \(Y1: 3, TD1: 4\)",
        ),
        (_small(dT3=[1.0, 1.0]), {"manifest": ["Y1"]}, r"column 'dT3' is an interval to wave 3"),
        (
            _small(dT2=[0.5, np.nan]),
            {"manifest": ["Y1"]},
            r"row 1, column 'dT2': missing interval, but wave 2 has data",
        ),
        (
            _small(dT1=[1.0, -2.0]),
            {"manifest": ["Y1"]},
            r"row 1, column 'dT1': negative interval -2",
        ),
        (
            _small(TD1_T1=[np.nan, 0.0]),
            {"manifest": ["Y1"], "inputs": ["TD1"]},
            r"row 0, column 'TD1_T1': missing input value",
        ),
        (
            _small(Y1_T0=[np.nan, 1.0], Y1_T1=[np.nan, 1.0], Y1_T2=[np.nan, 1.0]),
            {"manifest": ["Y1"]},
            r"row 0 \(subject '1'\) has no observed wave",
        ),
        (_small(id=[3, 3]), {"manifest": ["Y1"], "subject": "id"}, r"subject id '3' appears on"),
    ],
)
def test_errors_name_the_problem(df, kw, message):
    with pytest.raises(DataError, match=message):
        read_wide(df, **kw)


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("id,Y1_T0,Y1_T2,dT1\n1,0.5,0.7,1\n")
    with pytest.raises(DataError, match=r"has wave columns \[0, 2\] but no Y1_T1"):
        read_wide(path, manifest=["Y1"])
    path.write_text("# a comment\nid,Y1_T0,Y1_T1,dT1\n1,0.5,0.7,NA\n2,0.5,NA,NA\n")
    with pytest.raises(DataError, match=r"w\.csv: line 3, column 'dT1': missing interval"):
        read_wide(path, manifest=["Y1"], subject="id")
    with pytest.raises(TypeError, match="DataFrame or the path of a CSV file"):
        read_wide([[1.0]], manifest=["Y1"])
