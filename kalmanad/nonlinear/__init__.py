"""Nonlinear continuous-time SDEs: model, filters and simulation.

::

    dx = f(x, u, t; θ) dt + g(x, t; θ) dW,      y_k = h(x(t_k), u_k; θ) + e_k,  e_k ~ N(0, R(θ))

* :class:`NonlinearSDE`: the model (JAX functions f, g, h; a pytree of parameters);
  :func:`from_linear` / :func:`as_linear` convert a :class:`~kalmanad.LinearSDE`.
* :func:`nonlinear_filter` / :func:`nonlinear_log_likelihood`: the continuous-discrete
  extended Kalman filter with the local-linearisation predictor (``method="ekf"``), the
  unscented/cubature filter with the same sub-steps (``"ukf"``) and the moment ODEs
  integrated by diffrax (``"moments"``). Differentiable, ``jit``/``vmap``-safe; the
  same outputs as the linear filters; exact for linear models.
* :func:`simulate_nonlinear`: Euler–Maruyama draws with sub-steps.

See the guide page "Nonlinear SDEs" for the choice of ``max_dt`` and the accuracy of
the Gaussian filters on strongly nonlinear models.
"""

from kalmanad.nonlinear.api import METHODS, nonlinear_filter, nonlinear_log_likelihood
from kalmanad.nonlinear.model import DIFFUSION_FORMS, NonlinearSDE, as_linear, from_linear
from kalmanad.nonlinear.simulate import simulate_nonlinear

__all__ = [
    "DIFFUSION_FORMS",
    "METHODS",
    "NonlinearSDE",
    "as_linear",
    "from_linear",
    "nonlinear_filter",
    "nonlinear_log_likelihood",
    "simulate_nonlinear",
]
