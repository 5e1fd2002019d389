r"""Exact discretisation of a continuous-time linear SDE.

Over a step of length Δ the SDE ``dx = (A x + B u + c) dt + G dW`` with the input held
constant (zero-order hold) gives, exactly::

    x(t + Δ) = Ad x(t) + Fd [1; u] + w,   w ~ N(0, Qd)
    Ad = e^{AΔ}
    Fd = ∫₀^Δ e^{As} ds [c, B]         (never formed as A⁻¹(Ad - I): A may be singular)
    Qd = ∫₀^Δ e^{As} GGᵀ e^{Aᵀs} ds

These are the blocks of Van Loan's exponential
``expm([[A, GGᵀ, W], [0, -Aᵀ, 0], [0, 0, 0]] Δ) = [[Ad, Qd e^{-AᵀΔ}, Fd], …]`` with W = [c, B].

Routes (``method=``):

``"van_loan"`` (default; any drift: stable, unstable, singular; any step length).
    Each step is split as Δ = m H + ρ with a base length H (‖A‖H ≤ θ; θ = 2 in double,
    1 in single precision) and 0 ≤ ρ < H. The short piece E(ρ) = (Ad, Qd, Fd)(ρ) is the
    Taylor series of the three integrals; their matrix powers do not depend on Δ
    ((Aρ)^j = ρ^j A^j), so they are formed once per drift and every step costs one row of
    a (steps × 33) @ (33 × n(2n + r)) matmul. E(mH) comes from shared tables
    T_i[d] = E(d 32^i H), d < 32, built once per drift by composing
    ``E(a + b) = (Ad_b Ad_a, Qd_b + Ad_b Qd_a Ad_bᵀ, Fd_b + Ad_b Fd_a)``. That recursion
    sums positive semi-definite terms: no cancellation for short steps and no overflow
    for long ones (unlike the textbook block exponential at Δ, whose e^{-AᵀΔ} block grows
    like e^{|λ|Δ} and, for a stiff drift, loses the slow modes to the fast ones). Steps
    with ‖A‖Δ ≳ 2·10⁶ θ are not covered and give NaN.
    With one state (n = 1) the integrals have a closed form, used instead:
    ``Ad = e^{aΔ}``, ``Qd = qΔ φ(2aΔ)``, ``Fd = Δ φ(aΔ) W`` with ``φ(x) = (eˣ − 1)/x``
    evaluated through ``expm1`` (exact to rounding for every step; NaN only where
    ``e^{2aΔ}`` overflows). It costs a few element-wise operations per step.
``"van_loan_expm"``
    The same composition, with E(ρ) from ``kalmanad.linalg.expm`` of the Van Loan block per
    step. An independent implementation (tests compare the two); slower.
``"stationary"`` (stable drift only).
    ``Qd = P∞ - Ad P∞ Adᵀ`` with ``A P∞ + P∞ Aᵀ + GGᵀ = 0``: one Lyapunov solve for all
    steps and one n×n (with forcing (n+1+p)×(n+1+p)) ``kalmanad.linalg.expm`` per step.
    The subtraction cancels for short steps: the relative error of Qd grows like
    eps·‖P∞‖/‖Qd‖ ≈ eps/(2|λ|Δ). Measured for the scalar OU process (a = -1, against the
    closed form; ``benchmarks/bench_discretize.py``): in float64 1e-13 at aΔ = -1e-3 and
    1e-8 at -1e-8, in float32 6e-5 at -1e-3 and O(1) at -1e-8, while both Van Loan routes
    stay at rounding level (≤ 4e-16 in float64, ≤ 2e-7 in float32) for all steps.

Cost (``benchmarks/bench_discretize.py``: a 4×4 drift over 2000 distinct steps, value and
gradient): the default route takes about 0.1× the time of JAX's own AD through a per-step
``jax.scipy.linalg.expm`` of the Van Loan block. Gradients are JAX's AD through these
matmul-only formulas (exact derivatives of what was computed); nothing in the route has a
data-dependent loop, so reverse mode stores no padding. The only branch is a ``cond`` that
skips the higher tables when every step has ‖A‖Δ < 32·θ; under ``vmap`` over drifts it
evaluates both sides.

Steps, inputs and the discrete model (:func:`discretize_model`). For observation times
t_0 ≤ t_1 ≤ … ≤ t_{T-1} and inputs u_k given at t_k (T, p):

* step 0 is the zero-length step to t_0: transition I, covariance 0,
  offset B_imp u_0 (an impulse at the first time);
* step k ≥ 1 covers (t_{k-1}, t_k] with Δ_k = t_k - t_{k-1} (0 for tied times):
  ``offset_k = Φ₁(Δ_k)(c + B u_{k-1}) + B_imp u_k`` with Φ₁(Δ) = ∫₀^Δ e^{As} ds — the
  input is held at its value at the start of the interval (zero-order hold, u_{k-1})
  and the impulse is applied at t_k, after the drift step;
* ``observation_offset_k = d + D u_k``.

With concrete times (the usual case: times are data, not parameters) the distinct step
sizes are found once with numpy (:func:`step_grid`), each is discretised once, and the
results are gathered to the T steps (when fewer than half the steps are repeats, as for
irregular times, each step is discretised in place instead: the gather, and the
scatter-add that reverses it, would cost more than the repeats save). With traced
times (``jit`` with times as an argument, ``vmap`` over times) every step is
discretised separately — the same numbers, more work; pass ``grid=step_grid(times)``
from outside to keep the dedupe.

Panels: ``times`` may have leading batch dims (S, T) for subjects sharing one model; the
outputs then carry them. Ragged panels are padded to a common T by repeating each
subject's last time (zero steps: transition I, covariance 0), inputs with zeros and
observations with NaN (the filters ignore all-NaN rows), so padding changes nothing.
For subject-specific parameters ``jax.vmap`` over the model and ``grid.index`` with
``grid = step_grid(all_times)`` built once outside::

    grid = step_grid(times)                                   # times (S, T), numpy
    ssm = jax.vmap(lambda m, t, i: discretize_model(m, t, grid=StepGrid(grid.dt, i)))(
        models, times, grid.index)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad._discretize_routes import longest_van_loan_step, route
from kalmanad.linalg import solve_continuous_lyapunov
from kalmanad.linalg._checks import as_float_array
from kalmanad.linalg._util import symmetrize
from kalmanad.model import (
    LinearSDE,
    concrete_array,
    drift_is_stable,
    is_stable_np,
    max_real_eigenvalue,
)
from kalmanad.ssm import DiscreteSSM

__all__ = [
    "METHODS",
    "StepGrid",
    "check_times",
    "default_grid",
    "discretize",
    "discretize_augmented",
    "discretize_model",
    "discretize_step",
    "initial_moments",
    "longest_van_loan_step",
    "step_grid",
    "step_grid_rows",
]

#: The accepted values of ``method=``.
METHODS = ("van_loan", "van_loan_expm", "stationary")


# Full precision for every product: on GPUs a float32 product at JAX's default precision
# may run in TF32 (about 3 digits); no effect on CPU or in float64.
_HI = lax.Precision.HIGHEST


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _check_drift_diffusion(drift, diffusion):
    a = as_float_array(drift, "drift")
    q = as_float_array(diffusion, "diffusion")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"drift must be a square (n, n) matrix with n >= 1, got shape {a.shape}")
    if q.shape != a.shape:
        raise ValueError(
            f"diffusion has shape {q.shape} but drift is {a.shape}: expected {a.shape}"
        )
    return a, q


def _check_dt(dt):
    dt_c = concrete_array(dt)
    if dt_c is not None:
        dt_c = np.asarray(dt_c, dtype=np.float64)
        if not np.all(np.isfinite(dt_c)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(dt_c))[0])
            raise ValueError(
                f"dt must be finite, got dt{list(bad)}={dt_c[bad]} (shape {dt_c.shape})"
            )
        if np.any(dt_c < 0):
            bad = tuple(int(i) for i in np.argwhere(dt_c < 0)[0])
            raise ValueError(f"dt must be >= 0, got dt{list(bad)}={dt_c[bad]} (shape {dt_c.shape})")
        return dt_c
    return None


def _require_stable(a, what: str, hint: str) -> None:
    a_c = concrete_array(a)
    if a_c is None or is_stable_np(a_c):
        return
    if not np.all(np.isfinite(a_c)):
        raise ValueError(f"{what} needs a stable drift, but drift has non-finite entries")
    raise ValueError(
        f"{what} needs a stable drift, but the largest real part of the eigenvalues of "
        f"drift is {max_real_eigenvalue(a_c):.6g} (must be < 0); {hint}"
    )


def _discretize_deduped(a, q, w, dt, dt_c, method):
    """Discretise dt (...), once per distinct value when dt is concrete (dt_c not None)."""
    if dt_c is None:
        return route(a, q, w, dt, method)
    uniq, inv = np.unique(dt_c.reshape(-1), return_inverse=True)
    if uniq.size == dt_c.size:
        return route(a, q, w, dt, method)
    out = route(a, q, w, jnp.asarray(uniq, a.dtype), method)
    idx = inv.reshape(dt_c.shape)
    return tuple(x[idx] for x in out)


# ---------------------------------------------------------------------------------------
# public: matrices
# ---------------------------------------------------------------------------------------
def discretize(drift, diffusion, dt, *, method: str = "van_loan"):
    """Exact discretisation ``(Ad, Qd)`` of ``dx = A x dt + G dW`` over steps ``dt``.

    ``Ad = e^{AΔ}`` and ``Qd = ∫₀^Δ e^{As} GGᵀ e^{Aᵀs} ds`` (symmetrised) for every Δ in
    ``dt``. See the module docstring for the routes, their accuracy and cost.

    Args:
        drift: (n, n) drift A (stable, unstable or singular for the Van Loan routes).
        diffusion: (n, n) diffusion rate GGᵀ.
        dt: step sizes, any shape (...), ≥ 0. When concrete, each distinct value is
            discretised once.
        method: ``"van_loan"`` (default, any drift), ``"van_loan_expm"`` (the same with
            ``kalmanad.linalg.expm`` per step) or ``"stationary"`` (stable drift only;
            loses accuracy for steps much shorter than the fastest time scale). With a
            traced drift nothing checks stability: an unstable drift then gives
            meaningless (finite) ``"stationary"`` results.

    Returns:
        ``(Ad, Qd)``, each of shape (..., n, n). Δ = 0 gives exactly (I, 0).

    Raises:
        ValueError: wrong shapes, an unknown method; with concrete values negative or
            non-finite dt, or ``method="stationary"`` with an unstable drift.
    """
    ad, qd, _ = discretize_augmented(drift, diffusion, dt, None, method=method)
    return ad, qd


def discretize_augmented(drift, diffusion, dt, forcing=None, *, method: str = "van_loan"):
    """``(Ad, Qd, Fd)`` with ``Fd = ∫₀^Δ e^{As} ds · forcing`` from one augmented exponential.

    ``Fd`` is the discrete effect of constant forcing columns W over a step: for
    ``dx = (A x + W v) dt + G dW`` with v held constant, ``x(t+Δ) = Ad x(t) + Fd v + w``.
    It comes from the exponential of ``[[A, W], [0, 0]]Δ`` (inside the Van Loan block),
    never from ``A⁻¹`` — A may be singular (A = 0 gives ``Fd = Δ W``).

    Args:
        drift: (n, n) drift A.
        diffusion: (n, n) diffusion rate GGᵀ.
        dt: step sizes (...), ≥ 0.
        forcing: (n, r) forcing columns W (e.g. ``[c, B]``), or None (r = 0).
        method: as in :func:`discretize`.

    Returns:
        ``(Ad, Qd, Fd)`` of shapes (..., n, n), (..., n, n), (..., n, r).
    """
    _check_method(method)
    a, q = _check_drift_diffusion(drift, diffusion)
    n = a.shape[0]
    if forcing is None:
        w = jnp.zeros((n, 0), a.dtype)
    else:
        w = as_float_array(forcing, "forcing")
        if w.ndim != 2 or w.shape[0] != n:
            raise ValueError(
                f"forcing has shape {w.shape} but drift is {a.shape}: expected ({n}, r)"
            )
    dtype = jnp.result_type(a, q, w)
    a, q, w = a.astype(dtype), q.astype(dtype), w.astype(dtype)
    dt_c = _check_dt(dt)  # on the raw input: jnp ops inside a jit trace give tracers
    dt = as_float_array(dt, "dt")
    if method == "stationary":
        _require_stable(a, "method='stationary'", "use method='van_loan'")
    dt = jnp.asarray(dt_c, dtype) if dt_c is not None else dt.astype(dtype)
    return _discretize_deduped(a, q, w, dt, dt_c, method)


def _forcing(model: LinearSDE):
    """W = [c, B] (n, 1 + p): the forcing columns of the intercept and ZOH inputs."""
    return jnp.concatenate([model.drift_intercept[:, None], model.input_effect], axis=1)


def _offsets(model: LinearSDE, fd, u_hold, u_impulse):
    """bd = Φ₁(Δ)(c + B u_hold) + B_imp u_impulse from Fd = Φ₁(Δ)[c, B]."""
    bd = fd[..., 0]
    if model.n_inputs:
        bd = bd + jnp.einsum("...ij,...j->...i", fd[..., 1:], u_hold, precision=_HI)
        bd = bd + jnp.einsum("ij,...j->...i", model.impulse_effect, u_impulse, precision=_HI)
    return bd


def discretize_step(
    model: LinearSDE,
    dt,
    inputs=None,
    impulse_inputs=None,
    *,
    method: str = "van_loan",
):
    """``(Ad, bd, Qd)`` of a model over steps ``dt`` — for simulation and forecasting.

    ``x(t + Δ) = Ad x(t) + bd + w``, ``w ~ N(0, Qd)`` with
    ``bd = Φ₁(Δ)(c + B u) + B_imp u_imp``: ``inputs`` u are held constant over the step
    (zero-order hold) and ``impulse_inputs`` u_imp jump the state at the end of it. Use
    it for arbitrary new times, e.g. forecasting at future times with future inputs; the
    discrete model of a whole observation grid is :func:`discretize_model`.

    Args:
        model: a :class:`~kalmanad.model.LinearSDE`.
        dt: step sizes (...), ≥ 0.
        inputs: (..., p) inputs held over each step, or None (zeros).
        impulse_inputs: (..., p) impulse inputs at the end of each step, or None (zeros).
        method: as in :func:`discretize`.

    Returns:
        ``(Ad, bd, Qd)`` of shapes (..., n, n), (..., n), (..., n, n).
    """
    p = model.n_inputs
    dt = as_float_array(dt, "dt")
    u = _step_inputs(inputs, "inputs", dt.shape, p, model.dtype)
    v = _step_inputs(impulse_inputs, "impulse_inputs", dt.shape, p, model.dtype)
    ad, qd, fd = discretize_augmented(
        model.drift,
        model.diffusion,
        dt,
        _forcing(model),
        method=method,
    )
    return ad, _offsets(model, fd, u, v), qd


def _step_inputs(u, name, batch, p, dtype):
    if u is None:
        return jnp.zeros((*batch, p), dtype)
    check_finite(u, name)
    u = as_float_array(u, name)
    if u.ndim < 1 or u.shape[-1] != p:
        raise ValueError(
            f"{name} has shape {u.shape} but the model has p={p} inputs: expected (..., {p})"
        )
    try:
        shape = jnp.broadcast_shapes(u.shape[:-1], tuple(batch))
    except ValueError:
        raise ValueError(
            f"{name} has shape {u.shape}, whose leading dims do not broadcast with dt "
            f"{tuple(batch)}"
        ) from None
    return jnp.broadcast_to(u, (*shape, p)).astype(dtype)


def check_finite(x, name):
    xc = concrete_array(x)
    if xc is not None and not np.all(np.isfinite(xc)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(xc))[0])
        raise ValueError(
            f"{name} must be finite, got {name}{list(bad)}={xc[bad]} (shape {xc.shape})"
        )


# ---------------------------------------------------------------------------------------
# times
# ---------------------------------------------------------------------------------------
class StepGrid(NamedTuple):
    """The distinct step sizes of an observation grid and where each step finds its own.

    Attributes:
        dt: (U,) the distinct step sizes (0 included: step 0 has Δ = 0); or, when
            ``index`` is None, the (..., T) step size of every step, discretised in place.
        index: (..., T) integer index into ``dt`` of every step (``times.shape``), or None.
    """

    dt: jax.Array | np.ndarray
    index: jax.Array | np.ndarray


def _fmt_index(batch_idx, k):
    return ", ".join(str(int(i)) for i in (*batch_idx, k))


def check_times(times) -> np.ndarray | None:
    """Validate observation times (..., T); return them as float64 numpy when concrete.

    Raises ``ValueError`` for a scalar or empty time axis, and, for concrete times, for a
    NaN/inf entry or a decrease along the last axis (ties are allowed: a zero step).
    Returns None for traced times (nothing can be checked).
    """
    shape = np.shape(times)
    if len(shape) < 1 or shape[-1] == 0:
        raise ValueError(f"times must have shape (..., T) with T >= 1, got shape {shape}")
    tc = concrete_array(times)
    if tc is None:
        return None
    t = np.asarray(tc, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        bad = np.argwhere(~np.isfinite(t))[0]
        raise ValueError(
            f"times must be finite, got times[{_fmt_index(bad[:-1], bad[-1])}]={t[tuple(bad)]}"
        )
    dec = np.diff(t, axis=-1) < 0
    if np.any(dec):
        bad = np.argwhere(dec)[0]
        b, k = tuple(bad[:-1]), int(bad[-1]) + 1
        raise ValueError(
            f"times must be non-decreasing; times[{_fmt_index(b, k)}]={t[(*b, k)]} < "
            f"times[{_fmt_index(b, k - 1)}]={t[(*b, k - 1)]}"
        )
    return t


def step_grid(times, *, rtol: float = 8.0) -> StepGrid:
    """The distinct step sizes of concrete times (..., T) and the index of every step.

    Steps are Δ_0 = 0 and Δ_k = t_k - t_{k-1}, computed in float64 numpy. Step sizes that
    differ by no more than ``rtol · eps64 · max|t|`` — the rounding noise of the
    differences themselves, e.g. the steps of ``np.arange(0, 10, 0.1)`` — are merged
    (chained between neighbours, replaced by their mean; 0 stays exactly 0), so a regular
    grid has one step size. Call it once outside ``jit``/``vmap`` and pass the result as
    ``discretize_model(..., grid=...)`` when the times will be traced there.

    Returns:
        :class:`StepGrid` with numpy ``dt`` (U,) float64 and ``index`` (..., T) int32.
    """
    t = check_times(times)
    if t is None:
        raise ValueError("step_grid needs concrete times (call it outside jit/vmap)")
    dt = np.diff(t, axis=-1, prepend=t[..., :1])
    uniq, inv = np.unique(dt.reshape(-1), return_inverse=True)
    tol = rtol * np.finfo(np.float64).eps * float(np.max(np.abs(t)))
    new_group = np.concatenate([[True], np.diff(uniq) > tol])
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    counts = np.diff(np.append(starts, uniq.size))
    reps = np.add.reduceat(uniq, starts) / counts
    if uniq[0] == 0.0:
        reps[0] = 0.0
    index = group[inv].reshape(dt.shape).astype(np.int32)
    return StepGrid(dt=reps, index=index)


def default_grid(times) -> StepGrid | None:
    """The grid :func:`discretize_model` uses for ``times`` (..., T) when given none.

    ``None`` for traced times. For concrete times, :func:`step_grid`: ``dt`` (U,) the
    distinct steps, ``index`` (..., T). But when fewer than half the steps repeat
    (irregular times, 2U > T), ``StepGrid(dt, None)`` with ``dt`` (..., T) the merged
    step Δ_k = t_k − t_{k−1} (Δ_0 = 0) of every position, discretised in place:
    gathering the distinct steps back to every position would cost more than it saves
    (a gather forward, a scatter-add in reverse mode). Either way every step is
    discretised at its merged size, so the numbers are the same. Pass it as
    ``grid=`` where the times will be traced.
    """
    if concrete_array(times) is None:
        return None
    grid = step_grid(times)  # (which validates the times)
    if 2 * grid.dt.size > grid.index.size:
        return StepGrid(grid.dt[grid.index], None)
    return grid


def step_grid_rows(times, *, rtol: float = 8.0) -> StepGrid:
    """:func:`step_grid` of each row of concrete times (R, T) separately.

    For subject-specific models (one drift per subject), each subject only needs the
    distinct steps of its own row; a panel-wide grid would make every subject
    discretise every step of the panel (S·U instead of at most S·T exponentials).
    Rows with fewer distinct steps are padded with Δ = 0 (exactly (I, 0, 0)).

    Returns:
        :class:`StepGrid` with ``dt`` (R, U_max) and ``index`` (R, T).
    """
    t = check_times(times)
    if t is None or t.ndim != 2:
        raise ValueError("step_grid_rows needs concrete times of shape (R, T)")
    grids = [step_grid(row, rtol=rtol) for row in t]
    width = max(g.dt.size for g in grids)
    dt = np.zeros((t.shape[0], width))
    for r, g in enumerate(grids):
        dt[r, : g.dt.size] = g.dt
    return StepGrid(dt=dt, index=np.stack([g.index for g in grids]))


# ---------------------------------------------------------------------------------------
# the initial state
# ---------------------------------------------------------------------------------------
def initial_moments(model: LinearSDE):
    """Mean and covariance ``(m0, P0)`` of the state at the first observation time.

    * ``"known"``: the model's ``initial_mean`` and ``initial_cov``.
    * ``"stationary"``: ``P0 = P∞`` from ``A P∞ + P∞ Aᵀ = -GGᵀ`` (one Lyapunov solve) and
      ``m0 = -A⁻¹ c`` (a linear solve, legitimate because a stable A is invertible;
      inputs are taken as zero before t_0) unless ``initial_mean`` was given. With a
      *traced* drift that is not stable (a sampler's proposal) the solves use -I in place
      of A so that everything stays finite; such parameters are invalid and
      :meth:`LinearSDE.is_valid` is False — the filters must map them to a ``-inf``
      log-likelihood. A concrete unstable drift raises ``ValueError``.
    * ``"diffuse"``: ``m0 = initial_mean`` (zeros by default) and ``P0 = κ I`` with
      κ = ``model.diffuse_scale`` (default 1e6, statsmodels' ``approximate_diffuse``
      variance). This is the large-variance representation of a diffuse start; a filter
      that implements the exact diffuse initialisation (or removes the κ-dependent terms
      in the limit) recognises it by the static flag ``model.initial_state == "diffuse"``
      and must treat all n states as diffuse.

    Returns:
        ``(m0, P0)`` of shapes (n,), (n, n).
    """
    n = model.n_states
    dtype = model.dtype
    if model.initial_state == "known":
        return model.initial_mean, model.initial_cov
    if model.initial_state == "diffuse":
        return model.initial_mean, model.diffuse_scale * jnp.eye(n, dtype=dtype)
    a = model.drift
    a_c = concrete_array(a)
    eye = jnp.eye(n, dtype=dtype)
    if a_c is not None:
        _require_stable(
            a,
            "a stationary initial state",
            "give initial_mean and initial_cov, or initial_state='diffuse'",
        )
        a_safe = a
    else:
        a_safe = jnp.where(drift_is_stable(a), a, -eye)
    p0 = symmetrize(solve_continuous_lyapunov(a_safe, -model.diffusion))
    if model.initial_mean is not None:
        m0 = model.initial_mean
    else:
        m0 = jnp.linalg.solve(a_safe, -model.drift_intercept[:, None])[:, 0]
    return m0, p0


# ---------------------------------------------------------------------------------------
# the discrete model
# ---------------------------------------------------------------------------------------
def _model_inputs(inputs, t_shape, p: int, dtype):
    """The inputs (..., T, p) as an array of ``dtype`` (zeros (..., T, 0) without inputs)."""
    T = t_shape[-1]
    if inputs is None:
        if p:
            raise ValueError(
                f"the model has p={p} inputs (input effects with {p} columns): pass inputs of "
                f"shape (..., T, {p}) = (..., {T}, {p})"
            )
        return jnp.zeros((*t_shape, 0), dtype)
    u = as_float_array(inputs, "inputs")
    if u.ndim < 2 or u.shape[-2:] != (T, p):
        raise ValueError(
            f"inputs has shape {u.shape} but times is {t_shape} and the model has p={p} "
            f"inputs: expected (..., {T}, {p})"
        )
    check_finite(inputs, "inputs")
    return u.astype(dtype)


def _step_triples(model: LinearSDE, times, t_shape, grid: StepGrid | None, method: str):
    """``(Ad, Qd, Fd)`` of every step (..., T, ·, ·): from the grid's distinct steps
    (gathered by ``grid.index``), the grid's per-step sizes, or the traced times."""
    a, q, w, dtype = model.drift, model.diffusion, _forcing(model), model.dtype
    if grid is not None and grid.index is None:  # every step in place, at its given size
        if np.shape(grid.dt) != t_shape:
            raise ValueError(
                f"grid.dt has shape {np.shape(grid.dt)} but times is {t_shape} (grid.index is None)"
            )
        return route(a, q, w, jnp.asarray(grid.dt, dtype), method)
    if grid is not None:
        index = jnp.asarray(grid.index)
        if index.shape != t_shape:
            raise ValueError(f"grid.index has shape {index.shape} but times is {t_shape}")
        ad_u, qd_u, fd_u = route(a, q, w, jnp.asarray(grid.dt, dtype), method)
        return ad_u[index], qd_u[index], fd_u[index]
    t = as_float_array(times, "times").astype(dtype)
    dt = jnp.concatenate([jnp.zeros_like(t[..., :1]), jnp.diff(t, axis=-1)], axis=-1)
    return route(a, q, w, dt, method)


def discretize_model(
    model: LinearSDE,
    times,
    inputs=None,
    *,
    method: str = "van_loan",
    grid: StepGrid | None = None,
) -> DiscreteSSM:
    """The :class:`~kalmanad.ssm.DiscreteSSM` of a model observed at ``times``.

    Implements the step and input convention of the module docstring: step 0 is the
    zero-length step to t_0 (I, B_imp u_0, 0); step k ≥ 1 has
    ``Ad = e^{AΔ_k}``, ``offset = Φ₁(Δ_k)(c + B u_{k-1}) + B_imp u_k`` and ``Qd(Δ_k)``;
    observations ``y_k = H x_k + d + D u_k + e_k``. Initial moments from
    :func:`initial_moments`.

    Args:
        model: a :class:`~kalmanad.model.LinearSDE` (unbatched; ``jax.vmap`` for several).
        times: (..., T) non-decreasing observation times (leading dims: subjects).
        inputs: (..., T, p) inputs u_k at the observation times, or None for a model
            without inputs (p = 0). Leading dims broadcast with those of ``times``.
        method: as in :func:`discretize`.
        grid: a :class:`StepGrid` from :func:`step_grid` (may be traced, e.g. its
            ``index`` vmapped). Default: computed here when ``times`` is concrete;
            with traced times and no grid, every step is discretised separately.

    Returns:
        A :class:`~kalmanad.ssm.DiscreteSSM` whose per-step arrays have leading dims
        ``batch + (T,)`` and whose initial moments are broadcast to ``batch``, where
        ``batch`` is the broadcast of the leading dims of ``times`` and ``inputs``.

    Raises:
        ValueError: wrong shapes of times/inputs, inputs missing for a model with inputs,
            an unknown method; with concrete values unsorted or non-finite times,
            non-finite inputs.
    """
    _check_method(method)
    if not isinstance(model, LinearSDE):
        raise TypeError(f"model must be a LinearSDE, got {type(model).__name__}")
    n, m, p = model.n_states, model.n_obs, model.n_inputs
    dtype = model.dtype
    t_c = check_times(times)
    t_shape = tuple(np.shape(times))  # (np: times may be a list)
    T = t_shape[-1]

    u = _model_inputs(inputs, t_shape, p, dtype)
    try:
        batch = jnp.broadcast_shapes(t_shape[:-1], u.shape[:-2])
    except ValueError:
        raise ValueError(
            f"inputs has shape {u.shape}, whose leading dims do not broadcast with times {t_shape}"
        ) from None
    if method == "stationary":
        _require_stable(model.drift, "method='stationary'", "use method='van_loan'")

    if grid is None and t_c is not None:
        grid = default_grid(t_c)
    ad, qd, fd = _step_triples(model, times, t_shape, grid, method)

    # ZOH: step k holds u_{k-1}; step 0 has Δ = 0 (Fd = 0), any value works there.
    u_hold = jnp.concatenate([u[..., :1, :], u[..., :-1, :]], axis=-2)
    offset = _offsets(model, fd, u_hold, u)
    obs_offset = model.observation_intercept
    if model.n_inputs:  # no zero-size einsum: nothing to add, and shard_map rejects it
        obs_offset = obs_offset + jnp.einsum(
            "ij,...j->...i", model.observation_input_effect, u, precision=_HI
        )
    m0, p0 = initial_moments(model)

    def bcast(x, core):
        return jnp.broadcast_to(x, (*batch, *core))

    return DiscreteSSM(
        transition=bcast(ad, (T, n, n)),
        offset=bcast(offset, (T, n)),
        transition_cov=bcast(qd, (T, n, n)),
        observation=bcast(model.observation, (T, m, n)),
        observation_offset=bcast(obs_offset, (T, m)),
        observation_cov=bcast(model.observation_noise, (T, m, m)),
        initial_mean=bcast(m0, (n,)),
        initial_cov=bcast(p0, (n, n)),
    )
