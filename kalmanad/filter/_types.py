"""Result containers of the filters and the smoother (NamedTuples: pytrees, vmap-able)."""

from __future__ import annotations

from typing import NamedTuple

import jax


class FilterResult(NamedTuple):
    """Output of :func:`kalmanad.filter.filter_ssm` (T steps, n states, m channels).

    Attributes:
        log_likelihood: () log p(y_0, ..., y_{T-1}); ``-inf`` if the model is invalid
            (non-finite value, innovation covariance not positive-definite).
        pointwise_log_likelihood: (T,) log p(y_k | y_0..y_{k-1}), the one-step-ahead
            predictive density of the observed entries of y_k (0 for a fully missing
            row); ``-inf`` from the first invalid step on.
        predicted_mean: (T, n) E[x_k | y_0..y_{k-1}].
        predicted_cov: (T, n, n) Cov[x_k | y_0..y_{k-1}].
        filtered_mean: (T, n) E[x_k | y_0..y_k].
        filtered_cov: (T, n, n) Cov[x_k | y_0..y_k].
        predicted_chol: (T, n, n) lower Cholesky factor of ``predicted_cov`` (square-root
            filter only, else ``None``).
        filtered_chol: (T, n, n) lower Cholesky factor of ``filtered_cov`` (square-root
            filter only, else ``None``).

    When ``log_likelihood`` is ``-inf`` the means and covariances from the first invalid
    step on are placeholders (finite, meaningless).
    """

    log_likelihood: jax.Array
    pointwise_log_likelihood: jax.Array
    predicted_mean: jax.Array
    predicted_cov: jax.Array
    filtered_mean: jax.Array
    filtered_cov: jax.Array
    predicted_chol: jax.Array | None = None
    filtered_chol: jax.Array | None = None


class SmootherResult(NamedTuple):
    """Output of :func:`kalmanad.filter.rts_smoother_ssm`.

    Attributes:
        smoothed_mean: (T, n) E[x_k | y_0..y_{T-1}].
        smoothed_cov: (T, n, n) Cov[x_k | y_0..y_{T-1}].
        smoothed_cross_cov: (T-1, n, n) Cov[x_k, x_{k+1} | y_0..y_{T-1}] (lag one).
        gain: (T-1, n, n) smoother gains G_k = P_{k|k} A_{k+1}ᵀ P_{k+1|k}⁻¹.
    """

    smoothed_mean: jax.Array
    smoothed_cov: jax.Array
    smoothed_cross_cov: jax.Array
    gain: jax.Array


class Simulation(NamedTuple):
    """Draws from :func:`kalmanad.filter.simulate_ssm`.

    Attributes:
        states: ([n_samples,] T, n) states x_k.
        observations: ([n_samples,] T, m) observations y_k.
    """

    states: jax.Array
    observations: jax.Array


class Forecast(NamedTuple):
    """Output of :func:`kalmanad.filter.forecast_ssm` (K future steps).

    Attributes:
        state_mean: (K, n), state_cov: (K, n, n) predictive moments of the state.
        observation_mean: (K, m), observation_cov: (K, m, m) predictive moments of the
            observation (noise included).
    """

    state_mean: jax.Array
    state_cov: jax.Array
    observation_mean: jax.Array
    observation_cov: jax.Array
