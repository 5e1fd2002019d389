"""Front end of the nonlinear filters: ``NonlinearSDE`` + observation times → results.

:func:`nonlinear_filter` follows :func:`kalmanad.kalman_filter`'s conventions: ``times``
(..., T) non-decreasing (ties allowed), ``y`` (..., T, m) with NaN for missing entries,
``inputs`` (..., T, p) held over the following interval (zero-order hold; h sees the
input at its own time), leading dims of ``times``/``y``/``inputs`` broadcast together
(a panel of subjects sharing the model; ragged panels padded by repeating the last time
and NaN observations), and a :class:`~kalmanad.filter.FilterResult` out. Invalid
parameters give a ``-inf`` log-likelihood with finite gradients. For one model per
subject, ``jax.vmap`` over the model with the times closed over (they stay concrete).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from kalmanad.discretize import check_finite
from kalmanad.filter._types import FilterResult
from kalmanad.nonlinear.ekf import ekf
from kalmanad.nonlinear.linearise import n_substeps as substep_count
from kalmanad.nonlinear.model import NonlinearSDE, as_linear
from kalmanad.nonlinear.ukf import UNSCENTED_DEFAULTS, ukf

__all__ = ["METHODS", "interval_steps", "nonlinear_filter", "nonlinear_log_likelihood"]

#: The accepted values of ``method=``: extended (local-linearisation) Kalman filter,
#: unscented/cubature filter, moment ODEs integrated by diffrax, or ``"auto"``: the
#: exact linear filter for a model from :func:`~kalmanad.nonlinear.from_linear`, else
#: the EKF.
METHODS = ("ekf", "ukf", "moments", "auto")


def interval_steps(times, inputs, p: int, dtype):
    """Per-interval arrays of one subject: ``(dt, t_prev, u_hold, u_obs)``.

    ``dt`` (T,): Δ_0 = 0, Δ_k = t_k − t_{k−1}; ``t_prev`` (T,): the start of each
    interval (t_0 for step 0); ``u_hold`` (T, p): the input held over interval k
    (u_{k−1}; u_0 for step 0, whose interval is empty); ``u_obs`` (T, p): u_k.
    """
    t = jnp.asarray(times, dtype)
    t_prev = jnp.concatenate([t[:1], t[:-1]])
    dt = t - t_prev
    if inputs is None:
        u = jnp.zeros((t.shape[0], p), dtype)
    else:
        u = jnp.asarray(inputs, dtype)
    u_hold = jnp.concatenate([u[:1], u[:-1]], axis=0)
    return dt, t_prev, u_hold, u


def _guarded(model: NonlinearSDE, ok):
    """``(model, R)`` with harmless stand-ins where ``ok`` is False (double-where).

    Non-finite parameter entries become 0, P0 and R the identity, so that no NaN
    reaches a gradient through the discarded computation; the caller replaces the
    result by ``-inf`` there.
    """
    params = jax.tree.map(
        lambda v: (
            jnp.where(jnp.isfinite(v), v, 0.0)
            if jnp.issubdtype(jnp.result_type(v), jnp.inexact)
            else v
        ),
        model.params,
    )
    n = model.n_states
    eye = jnp.eye(n, dtype=model.dtype)
    p0 = jnp.where(ok, model.initial_cov, eye)
    m0 = jnp.where(jnp.isfinite(model.initial_mean), model.initial_mean, 0.0)
    guarded = _rebuild(model, params, m0, p0)
    r = guarded.noise_cov()
    r = jnp.where(ok & jnp.all(jnp.isfinite(r)), r, jnp.eye(r.shape[-1], dtype=r.dtype))
    return guarded, r


def _rebuild(model: NonlinearSDE, params, m0, p0) -> NonlinearSDE:
    """``model`` with new leaves, unvalidated (the leaves may be tracers)."""
    _, aux = model.tree_flatten()
    return NonlinearSDE.tree_unflatten(aux, (params, m0, p0, model.observation_noise))


def _one_subject(model, R, times, y, inputs, *, method, K, options):
    steps = interval_steps(times, inputs, model.n_inputs, model.dtype)
    if method == "ekf":
        return ekf(model, steps, y, R, K)
    if method == "ukf":
        return ukf(model, steps, y, R, K, **dict(options))
    from kalmanad.nonlinear.moments import moment_filter

    return moment_filter(model, steps, y, R, **dict(options))


@partial(jax.jit, static_argnames=("method", "K", "options"))
def _run(model, times, y, inputs, *, method, K, options):
    ok = model.is_valid()
    model, R = _guarded(model, ok)
    T, m = y.shape[-2:]
    batch = tuple(
        jnp.broadcast_shapes(
            times.shape[:-1], y.shape[:-2], () if inputs is None else inputs.shape[:-2]
        )
    )
    size = math.prod(batch)
    t = jnp.broadcast_to(times, (*batch, T)).reshape(size, T)
    yy = jnp.broadcast_to(y, (*batch, T, m)).reshape(size, T, m)
    args = [t, yy]
    if inputs is not None:
        p = inputs.shape[-1]
        args.append(jnp.broadcast_to(inputs, (*batch, T, p)).reshape(size, T, p))

    def one(t, y, u=None):
        return _one_subject(model, R, t, y, u, method=method, K=K, options=options)

    res = jax.vmap(one)(*args)
    res = jax.tree.map(lambda x: x.reshape(batch + x.shape[1:]), res)
    return res._replace(
        log_likelihood=jnp.where(ok, res.log_likelihood, -jnp.inf),
        pointwise_log_likelihood=jnp.where(ok, res.pointwise_log_likelihood, -jnp.inf),
    )


def _check_args(model, times, y, inputs):
    if not isinstance(model, NonlinearSDE):
        raise TypeError(
            f"model must be a kalmanad.nonlinear.NonlinearSDE, got {type(model).__name__}"
        )
    t_shape = tuple(np.shape(times))
    if len(t_shape) < 1 or t_shape[-1] == 0:
        raise ValueError(f"times must have shape (..., T) with T >= 1, got shape {t_shape}")
    T, m, p = t_shape[-1], model.n_obs, model.n_inputs
    y = y if isinstance(y, jax.Array) else np.asarray(y)
    if y.ndim < 2 or y.shape[-2:] != (T, m):
        raise ValueError(
            f"y must have shape (..., T, m) = (..., {T}, {m}) (T from times, m from the "
            f"observation function), got shape {y.shape}"
        )
    if inputs is None:
        if p:
            raise ValueError(
                f"the model has n_inputs={p}: pass inputs of shape (..., T, {p}) = (..., {T}, {p})"
            )
    else:
        inputs = inputs if isinstance(inputs, jax.Array) else np.asarray(inputs)
        if inputs.ndim < 2 or inputs.shape[-2:] != (T, p):
            raise ValueError(
                f"inputs has shape {inputs.shape} but times is {t_shape} and the model has "
                f"n_inputs={p}: expected (..., {T}, {p})"
            )
        check_finite(inputs, "inputs")
    try:
        jnp.broadcast_shapes(
            t_shape[:-1], y.shape[:-2], () if inputs is None else inputs.shape[:-2]
        )
    except ValueError:
        raise ValueError(
            f"the leading dims of times {t_shape}, y {y.shape} and inputs "
            f"{None if inputs is None else inputs.shape} do not broadcast"
        ) from None
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(model.dtype)
    return y.astype(jnp.result_type(y, model.dtype)), inputs


def nonlinear_filter(
    model: NonlinearSDE,
    times,
    y,
    inputs=None,
    *,
    method: str = "ekf",
    n_substeps: int | None = None,
    **options,
) -> FilterResult:
    """Continuous-discrete filter of a :class:`NonlinearSDE` observed at ``times``.

    Args:
        model: the model (unbatched; ``jax.vmap`` for one model per subject).
        times: (..., T) non-decreasing observation times.
        y: (..., T, m) observations; NaN entries are missing.
        inputs: (..., T, p) inputs, or None for a model without inputs.
        method: ``"ekf"`` (default; local-linearisation predictor,
            :mod:`~kalmanad.nonlinear.ekf`), ``"ukf"`` (sigma points through the same
            sub-steps, :mod:`~kalmanad.nonlinear.ukf`), ``"moments"`` (the EKF's moment
            ODEs integrated by diffrax, :mod:`~kalmanad.nonlinear.moments`; needs
            ``pip install diffrax``) or ``"auto"`` (the exact linear filter,
            :func:`kalmanad.kalman_filter`, for a model from :func:`from_linear`; the EKF
            otherwise).
        n_substeps: sub-steps K per interval; default ``ceil(max Δ / model.max_dt)``
            from the concrete times (required when ``times`` are traced).
        **options: method options: ``alpha``, ``beta``, ``kappa`` for ``"ukf"``
            (unscented parameters; defaults 1, 0, 0: the cubature rule); ``rtol``,
            ``atol``, ``solver`` (``"tsit5"`` or ``"kvaerno5"`` for stiff models),
            ``max_steps`` for ``"moments"``.

    Returns:
        :class:`~kalmanad.filter.FilterResult`: ``log_likelihood`` (batch shape),
        ``pointwise_log_likelihood`` (..., T), predicted and filtered means (..., T, n)
        and covariances (..., T, n, n). ``-inf`` log-likelihood for invalid parameters.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    y, inputs = _check_args(model, times, y, inputs)
    if method == "auto":
        linear = as_linear(model)
        if linear is not None:
            from kalmanad.statespace import kalman_filter

            return kalman_filter(linear, times, y, inputs)
        method = "ekf"
    K = substep_count(times, model.max_dt, n_substeps) if method != "moments" else 1
    opts = nonlinear_options(method, options)
    times = times if isinstance(times, jax.Array) else np.asarray(times)
    return _run(model, jnp.asarray(times, model.dtype), y, inputs, method=method, K=K, options=opts)


def nonlinear_options(method: str, options: dict) -> tuple:
    """The method's options as a hashable, sorted tuple (static under ``jit``)."""
    if method == "ekf":
        allowed: dict = {}
    elif method == "ukf":
        allowed = dict(UNSCENTED_DEFAULTS)
    else:
        from kalmanad.nonlinear.moments import MOMENT_DEFAULTS

        allowed = dict(MOMENT_DEFAULTS)
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method={method!r}; accepted: "
            f"{sorted(allowed) or 'none'}"
        )
    allowed.update(options)
    return tuple(sorted(allowed.items()))


def nonlinear_log_likelihood(model: NonlinearSDE, times, y, inputs=None, **kwargs) -> jax.Array:
    """The log-likelihood alone: ``nonlinear_filter(...).log_likelihood``."""
    return nonlinear_filter(model, times, y, inputs, **kwargs).log_likelihood
