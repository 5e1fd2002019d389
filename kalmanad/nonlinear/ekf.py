r"""Continuous-discrete extended Kalman filter with the local-linearisation predictor.

Between observations t_{k-1} → t_k the interval Δ_k is cut into K equal sub-steps of
length h = Δ_k / K ≤ ``max_dt`` (K static, see :func:`~kalmanad.nonlinear.linearise.n_substeps`).
Each sub-step linearises the drift at the current mean m (J = ∂f/∂x(m), Q = G(m)G(m)ᵀ,
the input held at u_{k-1}, the time at the sub-step's start) and moves the moments by
the exact moments of that linear SDE (:func:`~kalmanad.nonlinear.linearise.ll_transition`)::

    m ← m + Fd,      Fd = ∫₀ʰ e^{Js} ds f(m)
    P ← Ad P Adᵀ + Qd,   Ad = e^{Jh},   Qd = ∫₀ʰ e^{Js} Q e^{Jᵀs} ds

At t_k the observation function is linearised at the predicted mean (H = ∂h/∂x(m⁻))
and the update is :func:`~kalmanad.nonlinear.linearise.gaussian_update` with
``ŷ = h(m⁻, u_k)``, ``C = P⁻Hᵀ``, ``P_yy = H P⁻ Hᵀ``. For a linear model every step is
exact, so the log-likelihood is the exact one for any K.
"""

from __future__ import annotations

from jax import lax

from kalmanad.filter._types import FilterResult
from kalmanad.linalg._util import symmetrize
from kalmanad.nonlinear.linearise import (
    finish,
    flag,
    gaussian_update,
    guard,
    ll_transition,
    value_and_jacobian,
)
from kalmanad.nonlinear.model import NonlinearSDE

__all__ = ["ekf_predict", "ekf_update", "run_filter"]


def ekf_predict(model: NonlinearSDE, m, P, u, t0, dt, K: int):
    """Moments at ``t0 + dt`` from ``(m, P)`` at ``t0``: K local-linearisation sub-steps.

    Returns ``(m, P, probe)`` (the probe is non-finite where a value overflowed).
    """
    h = dt / K

    def body(j, carry):
        m, P = carry
        t = t0 + j * h
        f, J = value_and_jacobian(lambda x: model.drift_at(x, u, t), m)
        ad, qd, fd = ll_transition(J, model.rate_at(m, t), f, h)
        return m + fd, symmetrize(ad @ P @ ad.T + qd)

    m, P = lax.fori_loop(0, K, body, (m, P))
    m, p1 = guard(m)
    P, p2 = guard(P)
    return m, P, p1 + p2


def ekf_update(model: NonlinearSDE, m_p, P_p, u, y, R):
    """EKF update with y (m,) (NaN missing); see :func:`gaussian_update`."""
    y_hat, H = value_and_jacobian(lambda x: model.observe(x, u), m_p)
    cross = P_p @ H.T
    return gaussian_update(m_p, P_p, y_hat, cross, H @ cross, R, y)


def run_filter(model: NonlinearSDE, steps, y, R, K: int, predict, update) -> FilterResult:
    """The filter recursion of one subject (a ``lax.scan`` over the T observation times).

    Args:
        model: the (guarded) model.
        steps: ``(dt, t_prev, u_hold, u_obs)``: (T,) interval lengths (Δ_0 = 0), (T,)
            interval start times, (T, p) inputs held over each interval, (T, p) inputs
            at the observation times.
        y: (T, m) observations, NaN for missing.
        R: (m, m) measurement-noise covariance (the model's, guarded by the caller).
        K: sub-steps per interval (static).
        predict: ``(model, m, P, u, t0, dt, K) -> (m, P, probe)``.
        update: ``(model, m, P, u, y, R) -> (m, P, ll, ok, probe)``.

    Returns:
        :class:`~kalmanad.filter.FilterResult` (the per-step log-likelihood ``-inf``
        from the first step whose innovation covariance is not positive-definite or
        where a value overflowed).
    """

    def step(carry, inp):
        m, P = carry
        dt, t_prev, u_hold, u_obs, y_k = inp
        m_p, P_p, p1 = predict(model, m, P, u_hold, t_prev, dt, K)
        m_f, P_f, ll, ok, p2 = update(model, m_p, P_p, u_obs, y_k, R)
        return (m_f, P_f), (m_p, P_p, m_f, P_f, flag(ll, ok, p1 + p2))

    init = (model.initial_mean, symmetrize(model.initial_cov))
    _, (m_p, P_p, m_f, P_f, ll) = lax.scan(step, init, (*steps, y))
    total, pointwise = finish(ll)
    return FilterResult(total, pointwise, m_p, P_p, m_f, P_f)


def ekf(model: NonlinearSDE, steps, y, R, K: int) -> FilterResult:
    """The continuous-discrete EKF of one subject (arguments as :func:`run_filter`)."""
    return run_filter(model, steps, y, R, K, ekf_predict, ekf_update)


__all__ += ["ekf"]
