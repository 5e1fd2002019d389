"""Continuous-time front end of the filters: ``LinearSDE`` + observation times → results.

These are the public entry points (``kalmanad.kalman_filter``,
``log_likelihood``, ``rts_smoother``, ``simulate``, ``forecast``). Each discretises the
model exactly at the observation times (:func:`kalmanad.discretize.discretize_model`,
distinct step sizes once) and runs the discrete-time machinery of
:mod:`kalmanad.filter`.

Batching: the model's array fields may carry leading batch dims (one model per subject,
e.g. built under ``jax.vmap``), ``times`` (..., T), ``y`` (..., T, m) and ``inputs``
(..., T, p) too; all leading dims broadcast together. Ragged panels are padded to a
common T by repeating each subject's last time and filling ``y`` with NaN: padded rows
contribute exactly nothing.

Invalid parameters (a stationary start with an unstable drift, an indefinite
covariance, a NaN) give a ``-inf`` log-likelihood with finite gradients, so a sampler
rejects them instead of crashing.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from kalmanad._validation import value_errors_raise
from kalmanad.discretize import (
    StepGrid,
    check_finite,
    check_times,
    default_grid,
    discretize_model,
    discretize_step,
    longest_van_loan_step,
    step_grid_rows,
)
from kalmanad.filter import (
    FilterResult,
    Forecast,
    Simulation,
    SmootherResult,
    filter_ssm,
    forecast_ssm,
    rts_smoother_ssm,
    simulate_ssm,
)
from kalmanad.filter._common import check_checkpoint
from kalmanad.filter.smoother import diffuse_smoother_ssm
from kalmanad.model import LinearSDE
from kalmanad.ssm import DiscreteSSM

__all__ = [
    "discretize_observed",
    "forecast",
    "kalman_filter",
    "log_likelihood",
    "model_batch_shape",
    "rts_smoother",
    "simulate",
]

# Number of core (non-batch) dims of each LinearSDE field, in pytree order.
_CORE_NDIM = (2, 2, 2, 2, 1, 1, 2, 2, 2, 1, 2)


def model_batch_shape(model: LinearSDE) -> tuple[int, ...]:
    """The leading batch shape of a (possibly batched) model: ``drift.shape[:-2]``."""
    return tuple(jnp.shape(model.drift)[:-2])


def _check_model(model) -> None:
    if not isinstance(model, LinearSDE):
        raise TypeError(f"model must be a kalmanad.LinearSDE, got {type(model).__name__}")


def broadcast_model(model: LinearSDE, batch: tuple[int, ...]) -> LinearSDE:
    leaves, treedef = jax.tree.flatten(model, is_leaf=lambda x: x is None)
    out = [
        None if x is None else jnp.broadcast_to(x, batch + jnp.shape(x)[jnp.ndim(x) - k :])
        for x, k in zip(leaves, _CORE_NDIM, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


def discretize_observed(
    model: LinearSDE, times, inputs=None, *, discretization="van_loan", grid: StepGrid | None = None
):
    """The :class:`~kalmanad.ssm.DiscreteSSM` of a possibly batched model at ``times``.

    An unbatched model goes straight to :func:`~kalmanad.discretize.discretize_model`
    (``times`` may still carry subject dims). A batched model is broadcast against the
    leading dims of ``times``/``inputs`` and discretised under one ``jax.vmap``; with
    concrete times the distinct step sizes of the whole panel are still found once.
    ``grid``: a precomputed :class:`~kalmanad.discretize.StepGrid` of ``times`` (its
    ``index`` with the shape of ``times``; for a batched model its ``dt`` may be per
    subject, (*batch, U), as from :func:`~kalmanad.discretize.step_grid_rows`), for
    times that are traced here.

    Returns:
        ``(ssm, batch)``: the discrete model with per-step arrays ``(*batch, T, ...)`` and the
        broadcast batch shape.
    """
    batch = _observed_batch(model, times, inputs)
    if not model_batch_shape(model):
        return discretize_model(model, times, inputs, method=discretization, grid=grid), batch

    T = np.shape(times)[-1]
    size = math.prod(batch)
    if grid is None:
        grid = _observed_grid(model, times, batch)
    flat_model = jax.tree.map(
        lambda x: x.reshape((size, *x.shape[len(batch) :])), broadcast_model(model, batch)
    )
    flat_times = jnp.broadcast_to(jnp.asarray(times), (*batch, T)).reshape(size, T)
    args = [flat_model, flat_times]
    in_place = grid is not None and grid.index is None  # dt: every step's own size
    per_row_dt = grid is not None and not in_place and jnp.ndim(grid.dt) > 1
    if in_place:
        args.append(jnp.broadcast_to(grid.dt, (*batch, T)).reshape(size, T))
    elif grid is not None:
        args.append(jnp.broadcast_to(grid.index, (*batch, T)).reshape(size, T))
        if per_row_dt:
            U = jnp.shape(grid.dt)[-1]
            args.append(jnp.broadcast_to(grid.dt, (*batch, U)).reshape(size, U))

    if inputs is not None:
        p = jnp.shape(inputs)[-1]
        args.append(jnp.broadcast_to(jnp.asarray(inputs), (*batch, T, p)).reshape(size, T, p))

    def one(m, t, *rest):
        rest = list(rest)
        g = None
        if in_place:
            g = StepGrid(rest.pop(0), None)
        elif grid is not None:
            index = rest.pop(0)
            g = StepGrid(rest.pop(0) if per_row_dt else grid.dt, index)
        u = rest.pop(0) if rest else None
        return discretize_model(m, t, u, method=discretization, grid=g)

    ssm = jax.vmap(one)(*args)
    return jax.tree.map(lambda x: x.reshape(batch + x.shape[1:]), ssm), batch


def _observed_batch(model: LinearSDE, times, inputs) -> tuple[int, ...]:
    """The broadcast of the leading dims of the model, ``times`` and ``inputs``."""
    _check_model(model)
    mbatch = model_batch_shape(model)
    t_shape = tuple(np.shape(times))
    if len(t_shape) < 1:
        raise ValueError(f"times must have shape (..., T), got shape {t_shape}")
    shapes = [mbatch, t_shape[:-1]]
    if inputs is not None:
        shapes.append(tuple(jnp.shape(inputs)[:-2]))
    try:
        return tuple(jnp.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(
            f"the batch dims of the model {mbatch}, times {t_shape} and inputs "
            f"{None if inputs is None else jnp.shape(inputs)} do not broadcast"
        ) from None


def _observed_grid(model: LinearSDE, times, batch) -> StepGrid | None:
    """The step grid :func:`discretize_observed` uses when given none (None: traced times).

    An unbatched model: :func:`~kalmanad.discretize.default_grid`. One model per subject:
    each subject discretises only its own distinct steps (per-row ``dt``, (*batch, U)).
    """
    if not model_batch_shape(model):
        return default_grid(times)
    t_c = check_times(times)
    if t_c is None:
        return None
    T = t_c.shape[-1]
    rows = step_grid_rows(np.broadcast_to(t_c, (*batch, T)).reshape(-1, T))
    return StepGrid(rows.dt.reshape(*batch, -1), rows.index.reshape(*batch, T))


def _validity(model: LinearSDE, batch: tuple[int, ...]):
    """Per-subject validity flags (``batch`` shape) of a possibly batched model."""
    mbatch = model_batch_shape(model)
    if not mbatch:
        return jnp.broadcast_to(model.is_valid(), batch)
    size = math.prod(mbatch)  # not -1: input-effect leaves can have zero size
    flat = jax.tree.map(lambda x: x.reshape((size, *x.shape[len(mbatch) :])), model)
    ok = jax.vmap(LinearSDE.is_valid)(flat).reshape(mbatch)
    return jnp.broadcast_to(ok, batch)


def _is_concrete(tree) -> bool:
    """No leaf of ``tree`` (a model, or a tuple of arguments) is a tracer."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


# Stand-in values of a valid model for the fields where zeros would not do.
_SAFE_IDENTITY = {"drift": -1.0, "diffusion": 1.0, "observation_noise": 1.0, "initial_cov": 1.0}


def _guarded(model: LinearSDE, ok) -> LinearSDE:
    """``model`` where ``ok``, a stable identity-noise stand-in elsewhere (per subject)."""
    nb = len(model_batch_shape(model))
    keyed, treedef = jax.tree_util.tree_flatten_with_path(model, is_leaf=lambda x: x is None)
    out = []
    for (key, *_), x in keyed:
        name = key.name
        if x is None:
            out.append(None)
            continue
        scale = _SAFE_IDENTITY.get(name)
        if scale is None:
            stand_in = jnp.zeros_like(x)
        else:
            stand_in = jnp.broadcast_to(scale * jnp.eye(x.shape[-1], dtype=x.dtype), x.shape)
        keep = jnp.reshape(ok, ok.shape + (1,) * (x.ndim - nb))
        out.append(jnp.where(keep, x, stand_in))
    return jax.tree.unflatten(treedef, out)


def _guard_invalid(model: LinearSDE):
    """``(model, ok)``: the per-subject validity flags, and a traced model with a
    harmless stand-in where they are False (:func:`_guarded`).

    Double-where: the callers compute on the stand-in where the parameters are invalid,
    so that no NaN reaches the gradient through the discarded branch, and replace the
    result there (-inf, NaN). A concrete model is returned as it is, so that the
    uncompiled run's checks name a bad value.
    """
    ok = _validity(model, model_batch_shape(model))
    if not _is_concrete(model):
        model = _guarded(model, ok)
    return model, ok


def _check_y(y, T: int, m: int):
    y = jnp.asarray(y)
    if y.ndim < 2 or y.shape[-2:] != (T, m):
        raise ValueError(
            f"y must have shape (..., T, m) = (..., {T}, {m}) (T from times, m from the "
            f"model's observation matrix), got shape {y.shape}"
        )
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    return y


def kalman_filter(
    model: LinearSDE,
    times,
    y,
    inputs=None,
    *,
    method: str = "sequential",
    discretization: str = "van_loan",
    checkpoint: int | None = None,
    grid: StepGrid | None = None,
) -> FilterResult:
    """Exact Kalman filter of a continuous-time linear SDE observed at ``times``.

    An eager call runs as one compiled function (compiled once per shapes and options;
    the distinct step sizes are found first, from the concrete times); under an outer
    ``jax.jit`` it is inlined. Concrete input whose result is not finite is re-run
    uncompiled, so that a bad value is reported by name.

    Args:
        model: the :class:`~kalmanad.LinearSDE` (array fields may be batched).
        times: (..., T) non-decreasing observation times (ties allowed).
        y: (..., T, m) observations; NaN entries are missing (partially missing rows too).
        inputs: (..., T, p) inputs, or None for a model without inputs.
        method: ``"sequential"`` (``lax.scan``), ``"sqrt"`` (square-root, QR-propagated
            Cholesky factors; positive-definite in float32) or ``"parallel"``
            (associative scan, O(log T) depth). All three agree to rounding.
        discretization: ``"van_loan"`` (any drift; Taylor series with shared powers),
            ``"van_loan_expm"`` (any drift; one block exponential per distinct step) or
            ``"stationary"`` (stable drift), as in :func:`kalmanad.discretize`.
        checkpoint: segment length k of a rematerialised scan for long series
            (sequential and sqrt methods): gradient memory O(T/k + k) steps instead of
            O(T), same values and gradients, about one extra forward pass. None
            (default) stores every step.
        grid: the distinct step sizes of ``times`` from
            :func:`kalmanad.discretize.step_grid`, computed on concrete times, for
            calls where ``times`` arrive traced (e.g. inside ``shard_map``); default:
            found here from concrete times.

    Returns:
        :class:`~kalmanad.filter.FilterResult` with ``log_likelihood`` (batch shape),
        ``pointwise_log_likelihood`` (..., T) (one-step-ahead predictive densities),
        predicted and filtered means (..., T, n) and covariances (..., T, n, n).
        ``log_likelihood`` is ``-inf`` for invalid parameter values.
    """
    check_checkpoint(checkpoint, method)  # before any work: a bad option is named at once
    times, inputs, grid = _front_end_args(model, times, inputs, grid)
    args = (model, times, _as_array(y), inputs, grid)
    kw = {"method": method, "discretization": discretization, "checkpoint": checkpoint}
    # (only the log-likelihood is checked: -inf there is the mark of a bad value)
    return _run_compiled(
        _kalman_filter,
        _kalman_filter_jit,
        args,
        kw,
        lambda r: _all_finite(r.log_likelihood),
        diagnose=_check_discretization,
    )


def _kalman_filter(model, times, y, inputs, grid, *, method, discretization, checkpoint):
    model, ok = _guard_invalid(model)
    ssm, batch = discretize_observed(model, times, inputs, discretization=discretization, grid=grid)
    y = _check_y(y, np.shape(times)[-1], model.n_obs)
    ssm, y, batch = _align(ssm, y, batch)
    diffuse = model.initial_state == "diffuse"
    kw = {"diffuse_mask": jnp.ones(model.n_states, bool)} if diffuse else {}
    res = filter_ssm(ssm, y, method, checkpoint=checkpoint, **kw)
    ok = jnp.broadcast_to(ok, batch)
    ok_pw = ok[..., None]
    return res._replace(
        log_likelihood=jnp.where(ok, res.log_likelihood, -jnp.inf),
        pointwise_log_likelihood=jnp.where(ok_pw, res.pointwise_log_likelihood, -jnp.inf),
    )


# One compiled function for the whole computation. Called eagerly (a notebook, or
# NumPyro's initial trace under ``jax.grad``) it compiles once per shape instead of
# dispatching thousands of small operations, each compiled on its first use (SHO,
# T = 300: 12.5 s → one compilation); under an outer ``jit`` it is simply inlined.
_kalman_filter_jit = jax.jit(
    _kalman_filter, static_argnames=("method", "discretization", "checkpoint")
)


def _align(ssm, y, batch):
    """Broadcast the SSM (leading dims ``batch``) and ``y`` to their common batch shape."""
    try:
        full = tuple(jnp.broadcast_shapes(batch, y.shape[:-2]))
    except ValueError:
        raise ValueError(
            f"y has shape {y.shape}, whose leading dims do not broadcast with the batch "
            f"shape {batch} of the model, times and inputs"
        ) from None
    if full != batch:
        k = len(batch)
        ssm = jax.tree.map(lambda x: jnp.broadcast_to(x, full + x.shape[k:]), ssm)
    y = jnp.broadcast_to(y, full + y.shape[-2:])
    return ssm, y, full


def log_likelihood(model: LinearSDE, times, y, inputs=None, **kwargs) -> jax.Array:
    """The exact log-likelihood alone: ``kalman_filter(...).log_likelihood``."""
    return kalman_filter(model, times, y, inputs, **kwargs).log_likelihood


def rts_smoother(
    model: LinearSDE,
    times,
    y,
    inputs=None,
    *,
    method: str = "sequential",
    discretization: str = "van_loan",
) -> SmootherResult:
    """Smoothed states E[x(t_k) | all y] and covariances.

    Arguments as :func:`kalman_filter`. A model with ``initial_state="diffuse"`` gets
    the exact diffuse smoother (Durbin & Koopman 2012, §5.3;
    :func:`~kalmanad.filter.smoother.diffuse_smoother_ssm`), consistent with the
    exact diffuse filter: no large-variance stand-in κ. Other models get the
    Rauch–Tung–Striebel smoother after the filter of ``method``.

    Returns:
        :class:`~kalmanad.filter.SmootherResult` with means (..., T, n), covariances
        (..., T, n, n), lag-one cross covariances Cov[x(t_k), x(t_{k+1}) | y]
        (..., T-1, n, n) and the RTS gains (..., T-1, n, n), or ``gain=None`` for a
        diffuse start. A diffuse start whose posterior is improper (too few
        observations to pin the state down) gives NaN moments.

    Like :func:`kalman_filter`, an eager call runs as one compiled function.
    """
    times, inputs, grid = _front_end_args(model, times, inputs)
    args = (model, times, _as_array(y), inputs, grid)
    kw = {"method": method, "discretization": discretization}
    return _run_compiled(_rts_smoother, _rts_smoother_jit, args, kw, diagnose=_check_discretization)


def _rts_smoother(model, times, y, inputs, grid, *, method, discretization):
    ssm, batch = discretize_observed(model, times, inputs, discretization=discretization, grid=grid)
    y = _check_y(y, np.shape(times)[-1], model.n_obs)
    ssm, y, batch = _align(ssm, y, batch)
    if model.initial_state == "diffuse":
        mask = jnp.ones(model.n_states, bool)

        def smooth(s, yy):
            return diffuse_smoother_ssm(s, yy, mask)
    else:

        def smooth(s, yy):
            return rts_smoother_ssm(s, filter_ssm(s, yy, method))

    for _ in batch:  # one subject at a time, vmapped over the panel's dims
        smooth = jax.vmap(smooth)
    return smooth(ssm, y)


_rts_smoother_jit = jax.jit(_rts_smoother, static_argnames=("method", "discretization"))


def _as_array(x):
    """``x`` as an array: a list would be a pytree of scalars under ``jit``."""
    return x if isinstance(x, jax.Array) else np.asarray(x)


def _front_end_args(model: LinearSDE, times, inputs, grid=None):
    """A front end's work on the concrete side, before its compiled function.

    Returns ``(times, inputs, grid)``: the step grid found from concrete times (unless
    given; None for traced times), lists as arrays, and concrete inputs checked finite
    here, since the filters sanitise non-finite values (a finite result would not
    reveal them).
    """
    if grid is None:
        grid = _observed_grid(model, times, _observed_batch(model, times, inputs))
    if inputs is not None:
        check_finite(inputs, "inputs")
        inputs = _as_array(inputs)
    return _as_array(times), inputs, grid


def _all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(x))) for x in jax.tree.leaves(tree))


def _run_compiled(fn, compiled, args, kw, finite=_all_finite, diagnose=None):
    """``compiled(*args, **kw)`` (``compiled`` is ``jax.jit(fn)``).

    Concrete arguments whose result is not ``finite`` are first given to ``diagnose``
    (same arguments; it raises a named error for a problem ``fn``'s own checks would
    only report on an internal object, such as an overflowing discretisation), then
    run again by ``fn``, uncompiled: its checks of concrete values name the bad one (or
    it returns the same result, e.g. -inf for invalid parameters). Not while a NumPyro
    model runs without validation (:func:`~kalmanad._validation.value_errors_raise`):
    there the compiled result (``-inf`` or NaN for invalid parameters) is the answer.
    """
    res = compiled(*args, **kw)
    if not _is_concrete(args) or finite(res) or not value_errors_raise():
        return res
    if diagnose is not None:
        diagnose(*args, **kw)
    return fn(*args, **kw)


def _check_discretization(model, times, _data, inputs, grid, *, discretization, **_):
    """Raise a ``ValueError`` that names an overflowing step of the discretisation.

    Called on concrete arguments whose result was not finite. A valid model whose
    discretised transition, offset or process-noise covariance is not finite at some
    step overflowed there: a stiff drift (large ‖A‖Δ) beyond the steps the Van Loan
    routes cover, or an unstable drift whose e^{AΔ} exceeds the largest float. The
    message gives the step, ‖A‖Δ and what to do. Returns quietly otherwise (invalid
    parameter values are left to the uncompiled run, which names them).
    """
    batch = _observed_batch(model, times, inputs)
    if not bool(np.all(np.asarray(_validity(model, batch)))):
        return
    ssm, batch = discretize_observed(model, times, inputs, discretization=discretization, grid=grid)
    finite = np.isfinite(np.asarray(ssm.transition)).all(axis=(-2, -1))
    finite &= np.isfinite(np.asarray(ssm.transition_cov)).all(axis=(-2, -1))
    finite &= np.isfinite(np.asarray(ssm.offset)).all(axis=-1)
    if finite.all():
        return
    *subject, k = (int(i) for i in np.argwhere(~finite)[0])
    T = finite.shape[-1]
    t = np.broadcast_to(np.asarray(times, np.float64), (*batch, T))[tuple(subject)]
    n = model.n_states
    a = np.broadcast_to(np.asarray(model.drift, np.float64), (*batch, n, n))[tuple(subject)]
    dt = float(t[k] - t[k - 1]) if k else 0.0
    norm = float(max(np.abs(a).sum(axis=0).max(), np.abs(a).sum(axis=1).max()))
    growth = float(np.linalg.eigvals(a).real.max())
    where = f"subject {tuple(subject)}, " if subject else ""
    what = (
        f"the {discretization!r} discretisation of the drift over the step of Δ = {dt:.6g} "
        f"({where}times[{k}] - times[{k - 1}]) overflowed: ‖A‖Δ = {norm * dt:.3g}"
    )
    if growth >= 0:
        raise ValueError(
            f"{what}; the drift is not stable (an eigenvalue with real part {growth:.3g}), "
            "so e^(AΔ) grows beyond the largest float over this step: shorten the gaps, "
            "rescale time (measure it in larger units), or check the drift's parameters"
        )
    if discretization == "stationary":
        raise ValueError(f"{what}; rescale time (measure it in larger units)")
    longest = longest_van_loan_step(norm, model.dtype)
    raise ValueError(
        f"{what}, beyond the longest step the Van Loan routes cover for this drift "
        f"(Δ ≈ {longest:.4g}). The drift is stable (stiff): pass "
        "discretization='stationary', exact for a stable drift at any step, or rescale "
        "time (measure it in larger units) so that ‖A‖Δ shrinks"
    )


def simulate(
    model: LinearSDE,
    times,
    key,
    inputs=None,
    *,
    sample_shape=(),
    discretization: str = "van_loan",
) -> Simulation:
    """Exact draws of the latent states and observations at ``times``.

    The state is propagated through the exact discretisation (no Euler error), so the
    draws have exactly the law that :func:`kalman_filter` evaluates.

    Returns:
        :class:`~kalmanad.filter.Simulation` with ``states`` ``(*sample_shape, *batch, T, n)``
        and ``observations`` ``(*sample_shape, *batch, T, m)``. The draws of a subject
        whose parameters are invalid (see :meth:`~kalmanad.LinearSDE.is_valid`) are NaN,
        as its log-likelihood is ``-inf``; that happens only with traced parameters or
        inside a NumPyro model run (elsewhere invalid concrete values raise).

    A diffuse start (``initial_state="diffuse"``) is improper: it has no distribution to
    draw x(t_0) from, so the draws are conditional on ``x(t_0) = initial_mean`` (zeros
    unless given), the given start of each simulated path. For a random start give its
    distribution (``initial_state="known"`` with ``initial_mean`` and ``initial_cov``).

    Like :func:`kalman_filter`, an eager call runs as one compiled function.
    """
    times, inputs, grid = _front_end_args(model, times, inputs)
    args = (model, times, key, inputs, grid)
    kw = {"sample_shape": tuple(int(k) for k in sample_shape), "discretization": discretization}
    return _run_compiled(_simulate, _simulate_jit, args, kw, diagnose=_check_discretization)


def _simulate(model, times, key, inputs, grid, *, sample_shape, discretization):
    model, ok = _guard_invalid(model)  # the draws become NaN where not ok
    ssm, batch = discretize_observed(model, times, inputs, discretization=discretization, grid=grid)
    if model.initial_state == "diffuse":  # no distribution: start at the given mean
        ssm = ssm._replace(initial_cov=jnp.zeros_like(ssm.initial_cov))
    n_draws = math.prod(sample_shape) * math.prod(batch)
    flat = jax.tree.map(
        lambda x: jnp.broadcast_to(x, sample_shape + x.shape).reshape(
            (n_draws, *x.shape[len(batch) :])
        ),
        ssm,
    )
    keys = jax.random.split(key, n_draws)
    sim = jax.vmap(lambda s, k: simulate_ssm(s, k))(flat, keys)
    sim = jax.tree.map(lambda x: x.reshape(sample_shape + batch + x.shape[1:]), sim)
    keep = jnp.broadcast_to(ok, batch)[..., None, None]
    return jax.tree.map(lambda x: jnp.where(keep, x, jnp.nan), sim)


_simulate_jit = jax.jit(_simulate, static_argnames=("sample_shape", "discretization"))


def forecast(
    model: LinearSDE,
    times,
    y,
    new_times,
    inputs=None,
    new_inputs=None,
    *,
    method: str = "sequential",
    discretization: str = "van_loan",
) -> Forecast:
    """Predictive moments at future times given all observations.

    Filters ``y`` at ``times`` and propagates the last filtered state through the
    exact discretisation to each of ``new_times`` (strictly after ``times[-1]``,
    non-decreasing). ``new_inputs`` (K, p) are the inputs at the new times, held
    (zero-order) over the following interval like observed inputs; the input at the
    last observation time is held over the first forecast interval.

    The last filtered state is the exact filter's (for ``initial_state="diffuse"``
    the exact diffuse filter's), propagated by
    :func:`~kalmanad.filter.forecast_ssm`.

    Returns:
        :class:`~kalmanad.filter.Forecast`: state means (K, n) and covariances
        (K, n, n), observation means (K, m) and covariances (K, m, m)
        (measurement noise included); NaN where the filter's log-likelihood is ``-inf``
        (traced invalid parameters).

    Raises:
        ValueError: a batched model; ``new_times`` not after ``times[-1]``; missing or
            mis-shaped ``new_inputs``; a diffuse start whose diffuse period has not
            ended by the last observation.
    """
    _check_model(model)
    if model_batch_shape(model):
        raise ValueError("forecast takes an unbatched model; use jax.vmap for several")
    res = kalman_filter(model, times, y, inputs, method=method, discretization=discretization)
    new_times = jnp.asarray(new_times)
    if new_times.ndim != 1 or new_times.shape[0] == 0:
        raise ValueError(f"new_times must have shape (K,) with K >= 1, got {new_times.shape}")
    t_last = jnp.asarray(times)[..., -1:]
    nt_c = check_times(jnp.concatenate([jnp.broadcast_to(t_last, (1,)), new_times]))
    if nt_c is not None and np.any(np.diff(nt_c) <= 0):
        if nt_c[1] <= nt_c[0]:
            raise ValueError(
                f"new_times must lie after the last observation time {nt_c[0]}, got "
                f"new_times[0]={nt_c[1]}"
            )
    p = model.n_inputs
    K = new_times.shape[0]
    if new_inputs is None:
        if p:
            raise ValueError(f"the model has p={p} inputs: pass new_inputs of shape ({K}, {p})")
        held = None
        impulses = None
    else:
        new_inputs = jnp.asarray(new_inputs)
        if new_inputs.shape != (K, p):
            raise ValueError(
                f"new_inputs must have shape (K, p) = ({K}, {p}), got {new_inputs.shape}"
            )
        u_last = jnp.asarray(inputs)[-1:] if inputs is not None else jnp.zeros((1, p))
        held = jnp.concatenate([u_last, new_inputs[:-1]], axis=0)
        impulses = new_inputs
    steps = jnp.diff(jnp.concatenate([jnp.broadcast_to(t_last, (1,)), new_times]))
    ad, bd, qd = discretize_step(model, steps, held, impulses, method=discretization)
    m, n = model.n_obs, model.n_states
    obs_off = model.observation_intercept
    if new_inputs is not None:
        obs_off = obs_off + new_inputs @ model.observation_input_effect.T
    ssm = DiscreteSSM(
        transition=ad,
        offset=bd,
        transition_cov=qd,
        observation=jnp.broadcast_to(model.observation, (K, m, n)),
        observation_offset=jnp.broadcast_to(obs_off, (K, m)),
        observation_cov=jnp.broadcast_to(model.observation_noise, (K, m, m)),
        initial_mean=res.filtered_mean[-1],
        initial_cov=res.filtered_cov[-1],
    )
    fc = forecast_ssm(ssm)
    # -inf: invalid parameters, or a diffuse start whose diffuse period did not end:
    # the last filtered state is then no distribution to forecast from.
    proper = jnp.isfinite(res.log_likelihood)
    if _is_concrete(proper) and not bool(proper) and model.initial_state == "diffuse":
        raise ValueError(
            "forecast: the exact diffuse filter's log-likelihood is -inf: the "
            "observations do not pin down the diffuse initial state within its window "
            "(too few observed values), so the last filtered state is improper"
        )
    return jax.tree.map(lambda x: jnp.where(proper, x, jnp.nan), fc)
