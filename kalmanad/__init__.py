"""kalmanad: exact, differentiable Kalman-filter likelihoods for continuous-time linear SDEs.

Float64 is strongly recommended for Kalman filtering. kalmanad never changes JAX's
global configuration; enable double precision yourself before creating arrays::

    import jax
    jax.config.update("jax_enable_x64", True)

The public API: :class:`LinearSDE`, :func:`discretize`,
:func:`kalman_filter`, :func:`log_likelihood`, :func:`rts_smoother`, :func:`simulate`,
:func:`forecast`, the NumPyro distribution in :mod:`kalmanad.distributions`, the model
zoo (:func:`load_model`, :func:`list_models`), inference (:func:`fit_nuts`,
:func:`fit_map`, :func:`fit_mle`), nonlinear SDEs (:class:`NonlinearSDE` and its filters)
and the differentiable primitives in :mod:`kalmanad.linalg`.
"""

from kalmanad import linalg, models
from kalmanad.discretize import discretize, discretize_model
from kalmanad.model import LinearSDE
from kalmanad.models import stationary_covariance
from kalmanad.nonlinear import (
    NonlinearSDE,
    nonlinear_filter,
    nonlinear_log_likelihood,
    simulate_nonlinear,
)
from kalmanad.statespace import forecast, kalman_filter, log_likelihood, rts_smoother, simulate

__version__ = "0.1.0.dev0"

__all__ = [
    "LinearSDE",
    "MLEResult",
    "NonlinearSDE",
    "discretize",
    "discretize_model",
    "fit_map",
    "fit_mle",
    "fit_nuts",
    "forecast",
    "from_equations",
    "kalman_filter",
    "linalg",
    "list_models",
    "load_model",
    "log_likelihood",
    "models",
    "nonlinear_filter",
    "nonlinear_log_likelihood",
    "read_wide",
    "rts_smoother",
    "simulate",
    "simulate_nonlinear",
    "stationary_covariance",
]


def __getattr__(name):
    # The NumPyro/ArviZ layers are imported on first use: `import kalmanad` stays light.
    if name in ("fit_nuts", "fit_map"):
        from kalmanad import inference

        return getattr(inference, name)
    if name in ("load_model", "list_models", "from_equations"):
        from kalmanad import spec

        return getattr(spec, name)
    if name in ("fit_mle", "MLEResult"):
        from kalmanad import mle

        return getattr(mle, name)
    if name == "read_wide":
        from kalmanad.spec.wide import read_wide

        return read_wide
    if name == "distributions":
        import importlib

        return importlib.import_module("kalmanad.distributions")
    raise AttributeError(f"module 'kalmanad' has no attribute {name!r}")
