"""The filter dispatcher: ``filter_ssm``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kalmanad.filter._common import CORE_NDIM, batched, check_checkpoint, prepare, ssm_dims
from kalmanad.filter._types import FilterResult
from kalmanad.filter.diffuse import filter_diffuse
from kalmanad.filter.parallel import filter_parallel
from kalmanad.filter.sequential import filter_sequential
from kalmanad.filter.sqrt import filter_sqrt
from kalmanad.ssm import DiscreteSSM

METHODS = ("sequential", "sqrt", "parallel")


def filter_ssm(
    ssm: DiscreteSSM,
    y,
    method: str = "sequential",
    *,
    diffuse_mask=None,
    diffuse_steps: int | None = None,
    validate: bool = True,
    checkpoint: int | None = None,
) -> FilterResult:
    """Kalman filter of a discrete-time linear-Gaussian state-space model.

    Model (see :class:`kalmanad.ssm.DiscreteSSM`), steps k = 0..T-1::

        x_{-1} ~ N(initial_mean, initial_cov)
        x_k = A_k x_{k-1} + b_k + w_k,      w_k ~ N(0, Q_k)
        y_k = H_k x_k + d_k + e_k,          e_k ~ N(0, R_k)

    and ``log p(y) = Σ_k log N(y_k; H_k m_{k|k-1} + d_k, H_k P_{k|k-1} H_kᵀ + R_k)``.

    Missing values are NaN entries of ``y``. A partially missing y_k is treated exactly:
    the missing entries get a zero row of H_k, a zero innovation and unit variance with
    zero cross-covariance, and the normalising constant counts only the observed
    entries, so they drop out of the update and contribute exactly 0. A fully missing
    row only predicts and contributes 0: ragged subjects can be padded with all-NaN
    rows at the end. Covariance arguments are read as their symmetric parts.

    Invalid values never raise inside ``jit``/``grad``: a non-finite model entry or
    observation, or an innovation covariance that is not positive-definite, gives a
    ``-inf`` log-likelihood (``-inf`` pointwise from that step on) and finite (zero)
    gradients — the "double where" guard keeps NaN out of every derivative.

    Args:
        ssm: the model; unbatched fields as in :class:`DiscreteSSM`, or with the same
            leading batch dimensions as ``y`` (fields without them are shared).
            ``jax.vmap`` over this function works as well.
        y: (..., T, m) observations, NaN = missing.
        method: ``"sequential"`` (``lax.scan``, covariance form, one Cholesky per step),
            ``"sqrt"`` (Cholesky factors propagated by QR, positive-definite in
            float32, also returns the factors) or ``"parallel"`` (Särkkä &
            García-Fernández 2021 associative scan, O(log T) depth). All three give the
            same log-likelihood to rounding.
        diffuse_mask: optional (n,) boolean: state components with a diffuse (improper)
            initial distribution, handled by the exact diffuse initialisation of
            Koopman & Durbin (univariate treatment). The diffuse window is filtered
            sequentially, the remaining steps by ``method``.
            Their rows/columns of ``initial_cov`` and entries of ``initial_mean`` are
            ignored. The result is the diffuse log-likelihood, as statsmodels'
            exact diffuse initialisation reports it.
        diffuse_steps: static length of the diffuse window (default n, enough when
            each step observes at least one informative entry; more only costs time).
            If the diffuse period has not ended inside it, the log-likelihood is
            ``-inf``.
        checkpoint: segment length k for a rematerialised (``jax.checkpoint``-ed)
            scan of the sequential and sqrt filters: reverse-mode gradients store the
            state at every k-th step and recompute the rest, so their working memory
            is O(T/k + k) steps instead of O(T) (k ≈ √T is the minimum), for about
            one extra forward pass. Values and gradients are unchanged. For very long
            series (T ≳ 10⁵). The parallel filter's associative scan has no segments
            to rematerialise; it rejects this option.
        validate: with concrete inputs, check values (finite, symmetric positive
            semi-definite covariances, no infinite observation) and raise. Shapes are
            always checked.

    Returns:
        :class:`FilterResult`, with the leading batch dimensions of ``y``.

    Raises:
        ValueError: on inconsistent shapes or an unknown method (also under ``jit``),
            and, for concrete input with ``validate``, on a non-finite model entry, a
            non-symmetric or indefinite covariance, or an infinite observation.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    checkpoint = check_checkpoint(checkpoint, method)
    y = jnp.asarray(y)
    if y.ndim < 2:
        raise ValueError(f"y must have shape (..., T, m), got shape {y.shape}")
    ssm, y = prepare(ssm, y, validate=validate)
    if diffuse_mask is not None:
        diffuse_mask = jnp.asarray(diffuse_mask)
        if diffuse_mask.dtype != jnp.bool_:
            raise ValueError(f"diffuse_mask must be boolean, got dtype {diffuse_mask.dtype}")

    def run(ssm_, y_, mask_):
        _, n, _ = ssm_dims(ssm_, y_.shape)
        if mask_ is not None:
            steps = n if diffuse_steps is None else int(diffuse_steps)
            return filter_diffuse(ssm_, y_, mask_, steps, tail_method=method, checkpoint=checkpoint)
        if method == "sequential":
            return filter_sequential(ssm_, y_, checkpoint=checkpoint)
        if method == "sqrt":
            return filter_sqrt(ssm_, y_, checkpoint=checkpoint)
        return filter_parallel(ssm_, y_)

    if method == "sequential" and diffuse_mask is None and y.ndim > 2:
        return _sequential_panel(ssm, y, checkpoint)
    return batched(run, ssm, (y, diffuse_mask), (2, 1), y.ndim - 2)


def _sequential_panel(ssm: DiscreteSSM, y, checkpoint) -> FilterResult:
    """The sequential filter of a panel (leading batch dims of ``y``): one recursion for
    all subjects, which run as trailing axes of every array (see ``sequential``)."""
    lead = y.shape[:-2]
    k = len(lead)

    def check(ssm_, y_):  # the per-subject shape checks of the vmapped path
        ssm_dims(ssm_, y_.shape)
        return y_[0, 0]

    jax.eval_shape(lambda s, yy: batched(check, s, (yy,), (2,), k), ssm, y)
    full = DiscreteSSM(
        *[
            jnp.broadcast_to(x, lead + x.shape[-CORE_NDIM[f] :])
            for f, x in zip(DiscreteSSM._fields, ssm, strict=True)
        ]
    )
    return filter_sequential(full, y, checkpoint=checkpoint)
