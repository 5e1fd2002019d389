"""Moment-ODE prediction integrated by diffrax: the reference EKF, and for stiff models.

Between observations the EKF's moment equations are integrated with an adaptive ODE
solver (diffrax, an optional dependency: ``pip install diffrax``)::

    dm/dt = f(m, u, t),      dP/dt = J P + P Jᵀ + G(m, t) G(m, t)ᵀ,      J = ∂f/∂x(m, u, t)

from t_{k−1} to t_k (the input held at u_{k−1}); the update is the EKF's
(:func:`~kalmanad.nonlinear.ekf.ekf_update`). It is the limit of the
local-linearisation EKF as ``max_dt`` → 0, to the solver's tolerance, so it measures the
sub-stepping error of ``method="ekf"``; with the implicit ``solver="kvaerno5"`` it also
handles stiff drifts whose explicit steps would have to be tiny. Interval k is solved
on s ∈ [0, 1] with t = t_{k−1} + s Δ_k (a zero-length interval is then an ordinary
solve of a zero vector field). Derivatives: diffrax's
``RecursiveCheckpointAdjoint`` (reverse mode through the solver's steps). A solve that
fails (``max_steps`` reached, a step-size collapse) makes the log-likelihood ``-inf``.
"""

from __future__ import annotations

import jax.numpy as jnp

from kalmanad.filter._types import FilterResult
from kalmanad.linalg._util import symmetrize
from kalmanad.nonlinear.ekf import ekf_update, run_filter
from kalmanad.nonlinear.linearise import guard, value_and_jacobian
from kalmanad.nonlinear.model import NonlinearSDE

__all__ = ["MOMENT_DEFAULTS", "SOLVERS", "moment_filter"]

#: Default options of ``method="moments"``.
MOMENT_DEFAULTS = (("atol", 1e-10), ("max_steps", 4096), ("rtol", 1e-10), ("solver", "tsit5"))

#: The accepted ``solver`` names: explicit Tsit5 and Dopri5, implicit (stiff) Kvaerno5.
SOLVERS = ("tsit5", "dopri5", "kvaerno5")


def _diffrax():
    try:
        import diffrax
    except ImportError as err:  # an optional dependency
        raise ImportError(
            "method='moments' integrates the moment ODEs with diffrax, which is not "
            "installed: pip install diffrax (or pip install 'kalmanad[nonlinear]')"
        ) from err
    return diffrax


def _solver(diffrax, name: str):
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")
    return {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "kvaerno5": diffrax.Kvaerno5}[name]()


def moment_predict(model: NonlinearSDE, m, P, u, t0, dt, options: dict):
    """Moments at ``t0 + dt`` by integrating the moment ODEs; ``(m, P, probe)``."""
    diffrax = _diffrax()

    def field(s, state, args):
        m, P = state
        t = t0 + s * dt
        f, J = value_and_jacobian(lambda x: model.drift_at(x, u, t), m)
        JP = J @ P
        return dt * f, dt * (JP + JP.T + model.rate_at(m, t))

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        _solver(diffrax, options["solver"]),
        t0=0.0,
        t1=1.0,
        dt0=None,
        y0=(m, P),
        stepsize_controller=diffrax.PIDController(rtol=options["rtol"], atol=options["atol"]),
        max_steps=int(options["max_steps"]),
        throw=False,  # a failed solve becomes -inf, never an exception inside a sampler
    )
    ok = sol.result == diffrax.RESULTS.successful
    m, p1 = guard(sol.ys[0][-1])
    P, p2 = guard(symmetrize(sol.ys[1][-1]))
    return m, P, p1 + p2 + jnp.where(ok, 0.0, jnp.nan)


def moment_filter(model: NonlinearSDE, steps, y, R, **options) -> FilterResult:
    """The moment-ODE filter of one subject (arguments as
    :func:`~kalmanad.nonlinear.ekf.run_filter`; ``options``: ``rtol``, ``atol``,
    ``solver``, ``max_steps``, defaults :data:`MOMENT_DEFAULTS`)."""
    opts = dict(MOMENT_DEFAULTS)
    opts.update(options)
    _diffrax()  # a clear error before tracing when diffrax is missing
    _solver(_diffrax(), opts["solver"])

    def predict(model, m, P, u, t0, dt, K):
        return moment_predict(model, m, P, u, t0, dt, opts)

    return run_filter(model, steps, y, R, 1, predict, ekf_update)
