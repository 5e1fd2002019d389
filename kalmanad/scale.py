"""Scaling a panel across devices: the subject axis sharded with ``jax.shard_map``.

A panel log-likelihood is a sum over independent subjects, so it splits across devices
with no communication but the final sum: each device filters its block of subjects and
returns their log-likelihoods. :func:`sharded_log_likelihood` does exactly that with
JAX's own machinery (a 1-D :class:`jax.sharding.Mesh` and ``jax.shard_map``); reverse-
mode gradients flow through it, and the result equals the single-device
:func:`kalmanad.kalman_filter` one to rounding.

The distinct step sizes of the whole panel are found once, on the host, before the
subjects are split (:func:`kalmanad.discretize.step_grid`), so every device discretises
the same small set of steps and gathers its own.

CPU testing: ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before JAX is
imported) makes one CPU look like four devices. Several hosts: start every process with
``jax.distributed.initialize()``; ``jax.devices()`` then lists the devices of all hosts
and :func:`subject_mesh` spans them (each process passes the same global arrays; see the
documentation's "Many subjects" guide). NUTS chains across devices are NumPyro's own:
``fit_nuts(..., chain_method="parallel")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from kalmanad.discretize import StepGrid, step_grid, step_grid_rows
from kalmanad.model import LinearSDE
from kalmanad.statespace import broadcast_model, kalman_filter, model_batch_shape

__all__ = ["sharded_log_likelihood", "subject_mesh"]


def subject_mesh(devices: Sequence | None = None, axis: str = "subjects") -> Mesh:
    """A one-dimensional device mesh whose single axis, ``axis``, carries the subjects.

    Args:
        devices: the devices to span (default: ``jax.devices()``, every device of every
            process under ``jax.distributed``).
        axis: the mesh axis name.
    """
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("subject_mesh needs at least one device")
    return Mesh(np.asarray(devs, dtype=object), (axis,))


def _pad_rows(x, pad: int, fill=None):
    """Append ``pad`` rows to axis 0: copies of the last row, or ``fill``."""
    if pad == 0:
        return x
    tail = jnp.repeat(x[-1:], pad, axis=0) if fill is None else jnp.full((pad, *x.shape[1:]), fill)
    return jnp.concatenate([x, tail.astype(x.dtype)], axis=0)


def _check_panel(model, times, y, inputs, mesh, axis):
    """Validate :func:`sharded_log_likelihood`'s arguments; returns times (S, T) as
    numpy, y and inputs as arrays and the model's batch shape."""
    if not isinstance(model, LinearSDE):
        raise TypeError(f"model must be a kalmanad.LinearSDE, got {type(model).__name__}")
    if axis not in mesh.shape:
        raise ValueError(f"mesh has no axis {axis!r} (its axes: {tuple(mesh.shape)})")
    y = jnp.asarray(y)
    if y.ndim != 3:
        raise ValueError(f"y must have shape (S, T, m) (subjects, times, manifest), got {y.shape}")
    S, T, _ = y.shape
    if isinstance(times, jax.core.Tracer):
        raise ValueError(
            "sharded_log_likelihood needs concrete times (numpy), not traced ones: the "
            "distinct step sizes are found on the host"
        )
    times = np.asarray(times, dtype=np.float64)
    if times.ndim == 1:
        times = np.broadcast_to(times, (S, times.shape[0]))
    if times.shape != (S, T):
        raise ValueError(f"times must have shape (S, T) = ({S}, {T}) or (T,), got {times.shape}")
    if inputs is not None:
        inputs = jnp.asarray(inputs)
        if inputs.ndim != 3 or inputs.shape[:2] != (S, T):
            raise ValueError(
                f"inputs must have shape (S, T, p) = ({S}, {T}, p), got {inputs.shape}"
            )
    mbatch = model_batch_shape(model)
    if mbatch not in ((), (S,)):
        raise ValueError(
            f"the model's batch shape must be () (shared) or (S,) = ({S},) (one per "
            f"subject), got {mbatch}"
        )
    return times, y, inputs, mbatch


def sharded_log_likelihood(
    model: LinearSDE,
    times,
    y,
    inputs=None,
    *,
    mesh: Mesh,
    axis: str = "subjects",
    **filter_kwargs,
) -> jax.Array:
    """Per-subject log-likelihoods of a panel, subjects split across ``mesh[axis]``.

    Computes ``kalman_filter(model, times, y, inputs, **filter_kwargs).log_likelihood``
    for S subjects, each device filtering S/D of them (D = ``mesh.shape[axis]``).
    When D does not divide S, the panel is padded with all-missing subjects, which
    contribute exactly 0, and the padding is dropped from the result.

    Args:
        model: a :class:`~kalmanad.LinearSDE`, shared by all subjects (unbatched) or
            one per subject (leading batch dim S, e.g. built under ``jax.vmap`` from
            random effects). Its values may be traced (inside NUTS).
        times: (S, T) or (T,) observation times, concrete (numpy): the distinct step
            sizes of the panel are computed once, on the host. Ragged subjects are
            padded by repeating their last time (see :func:`kalmanad.kalman_filter`).
        y: (S, T, m) observations, NaN = missing.
        inputs: optional (S, T, p) inputs.
        mesh: a mesh with an axis named ``axis`` (:func:`subject_mesh`).
        axis: the mesh axis that carries the subjects.
        **filter_kwargs: passed to :func:`kalmanad.kalman_filter` (``method``,
            ``discretization``, ``checkpoint``).

    Returns:
        (S,) log-likelihoods, sharded over ``mesh[axis]``; ``.sum()`` is the panel's.
        An invalid parameter gives ``-inf`` (with finite gradients), as in the filter.

    Raises:
        ValueError: on shapes that do not form a panel, traced times, an unknown mesh
            axis, or a model batch other than () or (S,).
    """
    times, y, inputs, mbatch = _check_panel(model, times, y, inputs, mesh, axis)
    S = y.shape[0]
    # A shared model discretises the distinct steps of the whole panel once; one model
    # per subject only those of its own row (sharded with the subjects).
    # (both validate the times: finite, non-decreasing, naming the bad entry)
    grid = step_grid_rows(times) if mbatch else step_grid(times)

    n_dev = mesh.shape[axis]
    pad = (-S) % n_dev
    sharded = PartitionSpec(axis)
    args = [
        _pad_rows(jnp.asarray(times, dtype=y.dtype), pad),
        _pad_rows(jnp.asarray(grid.index), pad),
        _pad_rows(y, pad, fill=jnp.nan),  # all-missing subjects contribute 0
    ]
    specs = [sharded, sharded, sharded]
    if mbatch:
        args.append(_pad_rows(jnp.asarray(grid.dt, dtype=y.dtype), pad))
        specs.append(sharded)
    if inputs is not None:
        args.append(_pad_rows(inputs, pad))
        specs.append(sharded)
    if mbatch:
        # One model per subject: broadcast every field to (S, ...) and pad with copies
        # of the last subject's (valid) parameters.
        model = jax.tree.map(lambda x: _pad_rows(x, pad), broadcast_model(model, (S,)))
        model_spec = sharded
    else:
        model_spec = PartitionSpec()
    has_inputs = inputs is not None

    def local(model_, times_, index_, y_, *rest):
        rest = list(rest)
        dt_ = rest.pop(0) if mbatch else grid.dt
        inputs_ = rest.pop(0) if has_inputs else None
        res = kalman_filter(
            model_, times_, y_, inputs_, grid=StepGrid(dt_, index_), **filter_kwargs
        )
        return res.log_likelihood

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(model_spec, *specs),
        out_specs=sharded,
        # The filter's scan starts from the (replicated) initial state and carries
        # per-subject values; the varying-axes type check would reject that carry.
        check_vma=False,
    )
    # jit: executed eagerly, shard_map would dispatch every operation separately
    return jax.jit(fn)(model, *args)[:S]
