"""Kalman filters, RTS smoother, simulation and forecasting on a ``DiscreteSSM``.

These functions work on the per-step discrete-time model produced by
``kalmanad.discretize`` (see :class:`kalmanad.ssm.DiscreteSSM`) and are pure,
``jit``/``vmap``/``grad``-safe JAX functions:

* :func:`filter_ssm` — sequential, square-root and parallel-in-time Kalman filters
  (log-likelihood, pointwise log-likelihood, predicted and filtered moments), exact
  missing-value handling, optional exact diffuse initialisation;
* :func:`rts_smoother_ssm` — Rauch–Tung–Striebel smoother (sequential or parallel);
* :func:`diffuse_smoother_ssm` — exact diffuse smoother (Durbin–Koopman);
* :func:`simulate_ssm` — exact joint draws of states and observations;
* :func:`forecast_ssm` — predictive moments through given future transitions.
"""

from kalmanad.filter._types import FilterResult, Forecast, Simulation, SmootherResult
from kalmanad.filter.api import METHODS, filter_ssm
from kalmanad.filter.simulate import forecast_ssm, simulate_ssm
from kalmanad.filter.smoother import diffuse_smoother_ssm, rts_smoother_ssm

__all__ = [
    "METHODS",
    "FilterResult",
    "Forecast",
    "Simulation",
    "SmootherResult",
    "diffuse_smoother_ssm",
    "filter_ssm",
    "forecast_ssm",
    "rts_smoother_ssm",
    "simulate_ssm",
]
