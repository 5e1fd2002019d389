"""The discrete-time linear-Gaussian state-space model that the filters run on.

``kalmanad.discretize`` turns a continuous-time ``LinearSDE`` observed at times
``t_0 < ... < t_{T-1}`` into a ``DiscreteSSM``; the filters, smoother and simulator
in ``kalmanad.filter`` consume it. It sits below both in the layer order.

Convention (step k = 0..T-1, state at the k-th observation time)::

    x_{-1} ~ N(initial_mean, initial_cov)            # the state at t_0, before any step
    x_k    = transition[k] x_{k-1} + offset[k] + w_k,  w_k ~ N(0, transition_cov[k])
    y_k    = observation[k] x_k + observation_offset[k] + e_k,  e_k ~ N(0, observation_cov[k])

Step 0 is the zero-length step from the initial state to t_0 (transition = I,
offset = impulse input at t_0 or 0, transition_cov = 0), so every time point is
treated alike and ``initial_*`` describe the state at the first observation time.
Missing observations are NaN entries of ``y`` (whole or partial vectors).
"""

from __future__ import annotations

from typing import NamedTuple

import jax


class DiscreteSSM(NamedTuple):
    """Per-step discrete-time model (arrays; may carry extra leading batch dims).

    Attributes:
        transition: (T, n, n) state transition A_k = exp(A Δ_k).
        offset: (T, n) state offset b_k (intercept and input contributions).
        transition_cov: (T, n, n) process-noise covariance Q_k.
        observation: (T, m, n) observation matrix H_k.
        observation_offset: (T, m) observation offset d_k (intercept + D u_k).
        observation_cov: (T, m, m) measurement-noise covariance R_k.
        initial_mean: (n,) mean of the state at t_0 before the step-0 update.
        initial_cov: (n, n) covariance of that state.
    """

    transition: jax.Array
    offset: jax.Array
    transition_cov: jax.Array
    observation: jax.Array
    observation_offset: jax.Array
    observation_cov: jax.Array
    initial_mean: jax.Array
    initial_cov: jax.Array
