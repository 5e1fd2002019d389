"""method="moments": the EKF's moment ODEs integrated by diffrax (an optional dependency)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import kalmanad
from kalmanad.nonlinear import from_linear, nonlinear_filter, nonlinear_log_likelihood

pytest.importorskip("diffrax")

from test_nonlinear_filters import _ctvar, _data, _logistic


def test_linear_model_gives_the_exact_log_likelihood():
    rng = np.random.default_rng(0)
    lin = _ctvar()
    times, y, u = _data(rng, 20, 2, 1)
    ref = kalmanad.log_likelihood(lin, times, y, u)
    res = nonlinear_log_likelihood(from_linear(lin), times, y, u, method="moments")
    assert abs(float(res) / float(ref) - 1.0) <= 1e-9


@pytest.mark.slow
def test_ekf_sub_steps_converge_to_the_moment_odes():
    model = _logistic(sigma=0.2)
    times = np.linspace(0.0, 6.0, 13)
    y = 1.0 + 0.3 * times[:, None]
    ref = float(nonlinear_log_likelihood(model, times, y, method="moments"))
    errors = [
        abs(float(nonlinear_log_likelihood(model.replace(max_dt=h), times, y)) - ref)
        for h in (0.5, 0.125, 0.03125)
    ]
    # J and G Gᵀ are frozen over each sub-step: the error is first order in max_dt, so a
    # 4x shorter sub-step gives about a 4x smaller error (measured: 1.74, 0.31, 0.070)
    assert errors[1] < 0.35 * errors[0] and errors[2] < 0.35 * errors[1]


def test_bad_options_and_missing_diffrax_are_named(monkeypatch):
    model = _logistic()
    times, y = np.arange(3.0), np.ones((3, 1))
    with pytest.raises(ValueError, match="solver must be one of"):
        nonlinear_filter(model, times, y, method="moments", solver="euler")
    monkeypatch.setitem(sys.modules, "diffrax", None)  # import diffrax now fails
    with pytest.raises(ImportError, match="pip install diffrax"):
        nonlinear_filter(model, times, y, method="moments")
