"""Continuous-time nonlinear SDE models.

A :class:`NonlinearSDE` holds::

    dx(t) = f(x, u, t; θ) dt + g(x, t; θ) dW(t),      W a k-dimensional Wiener process
    y_k   = h(x(t_k), u_k; θ) + e_k,                  e_k ~ N(0, R(θ))
    x(t_0) ~ N(m0, P0)

with JAX functions f (``drift``), g (``diffusion``) and h (``observation``) and a pytree
of parameters θ (``params``). Inputs u follow the linear models' convention: the input
given at t_{k-1} is held (zero-order hold) over (t_{k-1}, t_k], and h sees u_k.

The diffusion is given in one of two forms (``diffusion_form``, static):

* ``"matrix"`` (the default): ``g(x, t, θ)`` returns the (n, k) matrix G; the rate of
  the noise is G Gᵀ. The natural form for multiplicative noise (``g = σ x``).
* ``"rate"``: ``g(x, t, θ)`` returns the (n, n) symmetric PSD rate G Gᵀ itself (what a
  :class:`~kalmanad.LinearSDE` stores as ``diffusion``; a singular rate is fine).

The filters use the rate only; simulation needs a factor (taken from the rate by an
eigen-decomposition in the ``"rate"`` form).

The model is a JAX pytree: ``params``, ``initial_mean``, ``initial_cov`` and an array
``observation_noise`` are its leaves (it passes through ``jit``, ``vmap`` and ``grad``);
the functions, the diffusion form, the input count and ``max_dt`` are static. The
functions are evaluated once, abstractly (``jax.eval_shape``), in the constructor to
check the shapes they return.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kalmanad._validation import value_errors_raise
from kalmanad.linalg._checks import as_float_array
from kalmanad.model import LinearSDE, check_sym_psd, concrete_array, sym_psd_ok

__all__ = ["DIFFUSION_FORMS", "NonlinearSDE", "as_linear", "from_linear"]

#: The accepted values of ``NonlinearSDE(diffusion_form=...)``.
DIFFUSION_FORMS = ("matrix", "rate")


def _shape_struct(tree):
    """Abstract stand-ins (shape, dtype) of every leaf of ``tree``."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def _eval_shape(fn, name: str, signature: str, *args):
    try:
        out = jax.eval_shape(fn, *args)
    except Exception as err:  # the user's function failed on abstract inputs: say which
        raise ValueError(
            f"{name} could not be evaluated as {signature} on abstract inputs: "
            f"{type(err).__name__}: {err}"
        ) from err
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(f"{name} must return one array, got {type(out).__name__}")
    return out


@jax.tree_util.register_pytree_with_keys_class
@dataclasses.dataclass(init=False, eq=False, repr=False)
class NonlinearSDE:
    """A continuous-time nonlinear SDE observed with Gaussian noise (a JAX pytree).

    Args:
        drift: f(x (n,), u (p,), t (), params) -> (n,).
        diffusion: g(x (n,), t (), params) -> (n, k) diffusion matrix G (the default
            ``diffusion_form="matrix"``), or (n, n) rate GGᵀ (``diffusion_form="rate"``).
        observation: h(x (n,), u (p,), params) -> (m,).
        observation_noise: R, an (m, m) symmetric PSD array, or a function
            R(params) -> (m, m).
        initial_mean: (n,) mean m0 of x(t_0).
        initial_cov: (n, n) covariance P0 of x(t_0) (symmetric PSD).
        params: any pytree of arrays θ passed to the functions (default: empty dict).
        n_inputs: p, the number of input columns (static; default 0, then u has shape (0,)).
        diffusion_form: ``"matrix"`` or ``"rate"`` (static), see the module docstring.
        max_dt: the longest sub-step of the filters' prediction between observations
            (static; a positive float, default 0.1 in the model's time unit). See
            :mod:`kalmanad.nonlinear` for how to choose it.

    Raises:
        ValueError: a function that cannot be evaluated on inputs of the stated shapes
            or returns the wrong shape (the message names it), initial moments or R of
            the wrong shape, a bad option; with concrete arrays also a NaN/inf entry or
            a non-symmetric or indefinite covariance (left to the log-density, ``-inf``,
            while a NumPyro model runs).
    """

    params: Any
    initial_mean: jax.Array
    initial_cov: jax.Array
    observation_noise: jax.Array | None
    drift: Callable = dataclasses.field(metadata={"static": True})
    diffusion: Callable = dataclasses.field(metadata={"static": True})
    observation: Callable = dataclasses.field(metadata={"static": True})
    noise_fn: Callable | None = dataclasses.field(metadata={"static": True})
    n_inputs: int = dataclasses.field(default=0, metadata={"static": True})
    diffusion_form: str = dataclasses.field(default="matrix", metadata={"static": True})
    max_dt: float = dataclasses.field(default=0.1, metadata={"static": True})

    def __init__(
        self,
        drift: Callable,
        diffusion: Callable,
        observation: Callable,
        observation_noise,
        initial_mean,
        initial_cov,
        params=None,
        *,
        n_inputs: int = 0,
        diffusion_form: str = "matrix",
        max_dt: float = 0.1,
    ):
        for name, fn in (("drift", drift), ("diffusion", diffusion), ("observation", observation)):
            if not callable(fn):
                raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
        if diffusion_form not in DIFFUSION_FORMS:
            raise ValueError(
                f"diffusion_form must be one of {DIFFUSION_FORMS}, got {diffusion_form!r}"
            )
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, (int, np.integer)):
            raise ValueError(f"n_inputs must be a non-negative integer, got {n_inputs!r}")
        if n_inputs < 0:
            raise ValueError(f"n_inputs must be a non-negative integer, got {n_inputs}")
        max_dt = float(max_dt)
        if not (math.isfinite(max_dt) and max_dt > 0):
            raise ValueError(f"max_dt must be a positive finite number, got {max_dt}")
        params = {} if params is None else params
        params = jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jnp.asarray(a), params)
        m0 = as_float_array(initial_mean, "initial_mean")
        if m0.ndim != 1 or m0.shape[0] == 0:
            raise ValueError(f"initial_mean must have shape (n,) with n >= 1, got {m0.shape}")
        n = m0.shape[0]
        p0 = as_float_array(initial_cov, "initial_cov")
        if p0.shape != (n, n):
            raise ValueError(
                f"initial_cov has shape {p0.shape} but expected ({n}, {n}) (n={n} from "
                "initial_mean)"
            )
        if callable(observation_noise):
            noise_fn, r = observation_noise, None
        else:
            noise_fn, r = None, as_float_array(observation_noise, "observation_noise")
        dtype = jnp.result_type(m0, p0, *([] if r is None else [r]))
        m0, p0 = m0.astype(dtype), p0.astype(dtype)
        r = None if r is None else r.astype(dtype)

        object.__setattr__(self, "params", params)
        object.__setattr__(self, "initial_mean", m0)
        object.__setattr__(self, "initial_cov", p0)
        object.__setattr__(self, "observation_noise", r)
        object.__setattr__(self, "drift", drift)
        object.__setattr__(self, "diffusion", diffusion)
        object.__setattr__(self, "observation", observation)
        object.__setattr__(self, "noise_fn", noise_fn)
        object.__setattr__(self, "n_inputs", int(n_inputs))
        object.__setattr__(self, "diffusion_form", diffusion_form)
        object.__setattr__(self, "max_dt", max_dt)
        self._check_functions()
        if value_errors_raise():
            self.check_values()

    # -- pytree protocol (unflattening bypasses __init__: tracers pass through) ----------
    _LEAVES = ("params", "initial_mean", "initial_cov", "observation_noise")
    _STATIC = (
        "drift",
        "diffusion",
        "observation",
        "noise_fn",
        "n_inputs",
        "diffusion_form",
        "max_dt",
    )

    def tree_flatten_with_keys(self):
        children = tuple((jax.tree_util.GetAttrKey(k), getattr(self, k)) for k in self._LEAVES)
        return children, tuple(getattr(self, k) for k in self._STATIC)

    def tree_flatten(self):
        return tuple(getattr(self, k) for k in self._LEAVES), tuple(
            getattr(self, k) for k in self._STATIC
        )

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for k, v in zip(cls._LEAVES, children, strict=True):
            object.__setattr__(obj, k, v)
        for k, v in zip(cls._STATIC, aux, strict=True):
            object.__setattr__(obj, k, v)
        return obj

    def __setattr__(self, name, value):
        raise AttributeError("NonlinearSDE is immutable; use model.replace(...)")

    def __repr__(self) -> str:
        name = getattr(self.drift, "__name__", "f")
        return (
            f"NonlinearSDE(drift={name}, n_states={self.n_states}, n_obs={self.n_obs}, "
            f"n_inputs={self.n_inputs}, diffusion_form={self.diffusion_form!r}, "
            f"max_dt={self.max_dt})"
        )

    def replace(self, **changes: Any) -> NonlinearSDE:
        """A validated copy with some fields changed (constructor keywords)."""
        kwargs = {
            "drift": self.drift,
            "diffusion": self.diffusion,
            "observation": self.observation,
            "observation_noise": self.noise_fn or self.observation_noise,
            "initial_mean": self.initial_mean,
            "initial_cov": self.initial_cov,
            "params": self.params,
            "n_inputs": self.n_inputs,
            "diffusion_form": self.diffusion_form,
            "max_dt": self.max_dt,
        }
        unknown = set(changes) - set(kwargs)
        if unknown:
            raise TypeError(f"NonlinearSDE has no field(s) {sorted(unknown)}")
        kwargs.update(changes)
        return NonlinearSDE(**kwargs)

    # -- sizes -------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        """n, the state dimension."""
        return self.initial_mean.shape[-1]

    @property
    def n_obs(self) -> int:
        """m, the observation dimension (from the shape h returns)."""
        return self._shapes()[1]

    @property
    def n_noise(self) -> int:
        """k, the number of Wiener processes (n in the ``"rate"`` form)."""
        return self._shapes()[2]

    @property
    def dtype(self):
        return self.initial_mean.dtype

    # -- evaluation --------------------------------------------------------------------
    def drift_at(self, x, u, t):
        """f(x, u, t; θ), (n,)."""
        return self.drift(x, u, t, self.params)

    def rate_at(self, x, t):
        """The diffusion rate G(x, t) G(x, t)ᵀ (n, n), symmetrised."""
        g = self.diffusion(x, t, self.params)
        q = g @ g.T if self.diffusion_form == "matrix" else g
        return 0.5 * (q + q.T)

    def factor_at(self, x, t):
        """A diffusion matrix G(x, t) with G Gᵀ the rate: (n, k) (``"rate"``: (n, n),
        from an eigen-decomposition, negative eigenvalues clipped to 0)."""
        g = self.diffusion(x, t, self.params)
        if self.diffusion_form == "matrix":
            return g
        lam, vec = jnp.linalg.eigh(0.5 * (g + g.T))
        return vec * jnp.sqrt(jnp.maximum(lam, 0.0))[None, :]

    def observe(self, x, u):
        """h(x, u; θ), (m,)."""
        return self.observation(x, u, self.params)

    def noise_cov(self):
        """R (m, m), symmetrised."""
        r = self.noise_fn(self.params) if self.noise_fn is not None else self.observation_noise
        return 0.5 * (r + r.T)

    # -- checks ------------------------------------------------------------------------
    def _abstract_args(self):
        n, p = self.n_states, self.n_inputs
        x = jax.ShapeDtypeStruct((n,), self.dtype)
        u = jax.ShapeDtypeStruct((p,), self.dtype)
        t = jax.ShapeDtypeStruct((), self.dtype)
        return x, u, t, _shape_struct(self.params)

    def _shapes(self):
        """(n, m, k) read from the functions' abstract outputs."""
        x, u, t, params = self._abstract_args()
        hx = jax.eval_shape(self.observation, x, u, params)
        g = jax.eval_shape(self.diffusion, x, t, params)
        return self.n_states, hx.shape[0], g.shape[-1]

    def _check_functions(self) -> None:
        n, p = self.n_states, self.n_inputs
        x, u, t, params = self._abstract_args()
        fx = _eval_shape(
            self.drift, "drift", f"f(x ({n},), u ({p},), t (), params)", x, u, t, params
        )
        if fx.shape != (n,):
            raise ValueError(f"drift must return shape (n,) = ({n},), got {fx.shape}")
        g = _eval_shape(self.diffusion, "diffusion", f"g(x ({n},), t (), params)", x, t, params)
        if self.diffusion_form == "matrix" and (g.ndim != 2 or g.shape[0] != n):
            raise ValueError(
                f"diffusion (diffusion_form='matrix') must return the (n, k) = ({n}, k) "
                f"matrix G, got shape {g.shape}"
            )
        if self.diffusion_form == "rate" and g.shape != (n, n):
            raise ValueError(
                f"diffusion (diffusion_form='rate') must return the (n, n) = ({n}, {n}) rate "
                f"GGᵀ, got shape {g.shape}"
            )
        hx = _eval_shape(
            self.observation, "observation", f"h(x ({n},), u ({p},), params)", x, u, params
        )
        if hx.ndim != 1 or hx.shape[0] == 0:
            raise ValueError(f"observation must return shape (m,) with m >= 1, got {hx.shape}")
        m = hx.shape[0]
        if self.noise_fn is not None:
            r = _eval_shape(self.noise_fn, "observation_noise", "R(params)", params)
            r_shape = r.shape
        else:
            r_shape = self.observation_noise.shape
        if tuple(r_shape) != (m, m):
            raise ValueError(
                f"observation_noise has shape {tuple(r_shape)} but expected ({m}, {m}) "
                f"(m={m} from the observation function's output)"
            )

    def is_valid(self) -> jax.Array:
        """Whether the parameter values define a proper model (boolean scalar, traceable).

        True when every leaf is finite and R and P0 are symmetric PSD (to ``sqrt(eps)``
        relative). The filters return ``-inf`` where this is False. Carries no gradient.
        """
        ok = jnp.asarray(True)
        for v in jax.tree.leaves((self.params, self.initial_mean, self.initial_cov)):
            v = jax.lax.stop_gradient(v)
            if jnp.issubdtype(jnp.result_type(v), jnp.inexact):
                ok = ok & jnp.all(jnp.isfinite(v))
        r = jax.lax.stop_gradient(self.noise_cov())
        ok = ok & jnp.all(jnp.isfinite(r)) & sym_psd_ok(jnp.where(jnp.isfinite(r), r, 0.0))
        ok = ok & sym_psd_ok(jax.lax.stop_gradient(self.initial_cov))
        if isinstance(self.params, LinearSDE):  # from_linear: e.g. a stationary start's drift
            ok = ok & self.params.is_valid()
        return ok

    def check_values(self) -> NonlinearSDE:
        """Raise ``ValueError`` naming the first invalid concrete value; return ``self``."""
        leaves = jax.tree_util.tree_leaves_with_path(self.params)
        for path, v in leaves:
            x = concrete_array(v)
            if x is not None and np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
                raise ValueError(f"params{jax.tree_util.keystr(path)} must be finite, got {x}")
        for name in ("initial_mean", "initial_cov"):
            x = concrete_array(getattr(self, name))
            if x is not None and not np.all(np.isfinite(x)):
                raise ValueError(f"{name} must be finite, got {x}")
        p0 = concrete_array(self.initial_cov)
        if p0 is not None:
            check_sym_psd("initial_cov", p0)
        if all(concrete_array(v) is not None for v in jax.tree.leaves(self.params)):
            r = concrete_array(self.noise_cov())
            if r is not None:
                if not np.all(np.isfinite(r)):
                    raise ValueError(f"observation_noise must be finite, got {r}")
                check_sym_psd("observation_noise", r)
        return self


# ---------------------------------------------------------------------------------------
# linear models as NonlinearSDEs
# ---------------------------------------------------------------------------------------
# Module-level functions (not closures): their identity is stable, so two conversions
# share the static part of the pytree and a jitted filter compiles once for both.
def _linear_drift(x, u, t, p: LinearSDE):
    return p.drift @ x + p.drift_intercept + p.input_effect @ u


def _linear_rate(x, t, p: LinearSDE):
    return p.diffusion


def _linear_observation(x, u, p: LinearSDE):
    return p.observation @ x + p.observation_intercept + p.observation_input_effect @ u


def _linear_noise(p: LinearSDE):
    return p.observation_noise


def from_linear(model: LinearSDE, *, max_dt: float = 0.1) -> NonlinearSDE:
    """The :class:`NonlinearSDE` of a :class:`~kalmanad.LinearSDE` (same law).

    ``params`` is the linear model itself; the functions are the affine maps
    ``f = A x + c + B u``, the rate ``GGᵀ`` (``diffusion_form="rate"``) and
    ``h = H x + d + D u``. The initial moments are those the linear filters use
    (:func:`kalmanad.discretize.initial_moments`: the stationary start is solved here).
    :func:`as_linear` recovers the linear model, so a front end can send it to the
    exact linear filter; the nonlinear filters on it reproduce the exact
    log-likelihood too (to rounding, for any ``max_dt``).

    Raises:
        ValueError: a diffuse start (no proper Gaussian initial state), or concrete
            nonzero impulse effects (not part of the nonlinear model).
    """
    from kalmanad.discretize import initial_moments

    if not isinstance(model, LinearSDE):
        raise TypeError(f"model must be a kalmanad.LinearSDE, got {type(model).__name__}")
    if model.initial_state == "diffuse":
        raise ValueError(
            "a diffuse initial state has no proper Gaussian form for the nonlinear filters: "
            "give initial_mean and initial_cov (a known start)"
        )
    imp = concrete_array(model.impulse_effect)
    if imp is not None and np.any(imp != 0):
        raise ValueError("impulse effects are not supported by NonlinearSDE (impulse_effect != 0)")
    m0, p0 = initial_moments(model)
    return NonlinearSDE(
        drift=_linear_drift,
        diffusion=_linear_rate,
        observation=_linear_observation,
        observation_noise=_linear_noise,
        initial_mean=m0,
        initial_cov=p0,
        params=model,
        n_inputs=model.n_inputs,
        diffusion_form="rate",
        max_dt=max_dt,
    )


def as_linear(model: NonlinearSDE) -> LinearSDE | None:
    """The :class:`~kalmanad.LinearSDE` behind a model built by :func:`from_linear`
    (with its initial moments as a known start), else None.

    A front end calls it to send a linear model to the exact linear filter.
    """
    if not isinstance(model, NonlinearSDE):
        raise TypeError(f"model must be a NonlinearSDE, got {type(model).__name__}")
    linear = (
        model.drift is _linear_drift
        and model.diffusion is _linear_rate
        and model.observation is _linear_observation
        and model.noise_fn is _linear_noise
        and isinstance(model.params, LinearSDE)
    )
    if not linear:
        return None
    return model.params.replace(
        initial_mean=model.initial_mean, initial_cov=model.initial_cov, initial_state="known"
    )
