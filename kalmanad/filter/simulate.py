"""Exact simulation and forecasting on a DiscreteSSM.

Simulation draws ``x_{-1} ~ N(m_0, P_0)`` and then, for k = 0..T-1,
``x_k = A_k x_{k-1} + b_k + G_{Q,k} ε_k`` and ``y_k = H_k x_k + d_k + G_{R,k} δ_k`` with
standard normal ``ε, δ`` and square roots ``G Gᵀ = Q`` from the symmetric
eigen-decomposition (negative rounding eigenvalues clamped to 0), so singular
covariances (``Q = 0`` at a zero-length step, rank-deficient noise) are exact. The
factors are computed for all steps at once; the scan only does the recursion.

Forecasting propagates a Gaussian state through given transitions,
``m_k = A_k m_{k-1} + b_k``, ``P_k = A_k P_{k-1} A_kᵀ + Q_k``, and maps it to the
observations, ``H_k m_k + d_k`` and ``H_k P_k H_kᵀ + R_k``.
"""

from __future__ import annotations

import jax
from jax import lax

from kalmanad.filter._common import check_values, is_concrete, promote, psd_sqrt, ssm_dims
from kalmanad.filter._types import Forecast, Simulation
from kalmanad.linalg._util import mT, symmetrize
from kalmanad.ssm import DiscreteSSM


@jax.jit
def _simulate_one(ssm: DiscreteSSM, key):
    T, n, m = ssm_dims(ssm)
    k0, k1, k2 = jax.random.split(key, 3)
    dtype = ssm.transition.dtype
    eps = jax.random.normal(k1, (T, n), dtype)
    dlt = jax.random.normal(k2, (T, m), dtype)
    x0 = ssm.initial_mean + psd_sqrt(ssm.initial_cov)[0] @ jax.random.normal(k0, (n,), dtype)
    w = (psd_sqrt(ssm.transition_cov)[0] @ eps[..., None])[..., 0] + ssm.offset

    def step(x, inp):
        A, wk = inp
        x = A @ x + wk
        return x, x

    _, xs = lax.scan(step, x0, (ssm.transition, w))
    e = (psd_sqrt(ssm.observation_cov)[0] @ dlt[..., None])[..., 0]
    ys = (ssm.observation @ xs[..., None])[..., 0] + ssm.observation_offset + e
    return Simulation(xs, ys)


def simulate_ssm(ssm: DiscreteSSM, key, n_samples: int | None = None, *, validate: bool = True):
    """Exact joint draws of states and observations of a DiscreteSSM.

    Args:
        ssm: unbatched model (use ``jax.vmap`` for several subjects).
        key: a ``jax.random`` key.
        n_samples: number of independent draws (a leading axis); ``None`` for one.
        validate: check values (finite, symmetric PSD covariances) when concrete.

    Returns:
        :class:`Simulation` with ``states`` ([n_samples,] T, n) and ``observations``
        ([n_samples,] T, m).
    """
    (ssm,) = promote(ssm)
    ssm_dims(ssm)
    if validate and is_concrete(ssm):
        check_values(ssm)
    if n_samples is None:
        return _simulate_one(ssm, key)
    keys = jax.random.split(key, int(n_samples))
    return jax.vmap(_simulate_one, in_axes=(None, 0))(ssm, keys)


def forecast_ssm(ssm: DiscreteSSM, mean=None, cov=None) -> Forecast:
    """Predictive moments through the steps of ``ssm``, without observations.

    Starting from ``x_{-1} ~ N(mean, cov)`` (default ``ssm.initial_mean`` and
    ``ssm.initial_cov``), e.g. the last filtered state of :func:`filter_ssm`, and a model
    whose steps are the transitions to the forecast times (step 0 from the time of
    ``mean`` to the first forecast time; a zero-length step 0 forecasts that time
    itself)::

        m_k = A_k m_{k-1} + b_k,   P_k = A_k P_{k-1} A_kᵀ + Q_k
        E[y_k] = H_k m_k + d_k,    Cov[y_k] = H_k P_k H_kᵀ + R_k

    Args:
        ssm: unbatched model of K steps (use ``jax.vmap`` for several subjects).
        mean: (n,) start mean; cov: (n, n) start covariance.

    Returns:
        :class:`Forecast` with state and observation means (K, n), (K, m) and
        covariances (K, n, n), (K, m, m).
    """
    if mean is not None:
        ssm = ssm._replace(initial_mean=mean)
    if cov is not None:
        ssm = ssm._replace(initial_cov=cov)
    (ssm,) = promote(ssm)
    ssm_dims(ssm)
    return _forecast(ssm)


@jax.jit
def _forecast(ssm: DiscreteSSM) -> Forecast:
    def step(carry, inp):
        m, P = carry
        A, b, Q = inp
        m = A @ m + b
        P = symmetrize(A @ P @ A.T) + Q
        return (m, P), (m, P)

    init = (ssm.initial_mean, symmetrize(ssm.initial_cov))
    _, (m, P) = lax.scan(step, init, (ssm.transition, ssm.offset, ssm.transition_cov))
    H = ssm.observation
    y_mean = (H @ m[..., None])[..., 0] + ssm.observation_offset
    y_cov = symmetrize(H @ P @ mT(H)) + symmetrize(ssm.observation_cov)
    return Forecast(m, P, y_mean, y_cov)
