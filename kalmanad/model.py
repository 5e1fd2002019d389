"""Continuous-time linear SDE models.

A :class:`LinearSDE` holds the continuous-time parameters of::

    dx(t) = (A x(t) + B u(t) + c) dt + G dW(t),          GGᵀ = ``diffusion``
    y_k   = H x(t_k) + D u_k + d + e_k,   e_k ~ N(0, R),   R   = ``observation_noise``
    x(t_k) += B_imp u_k                   (impulse inputs, applied at observation times)

with the state at the first observation time ``x(t_0) ~ N(m0, P0)`` given by one of
three initialisations (a static choice, stored as pytree aux data):

* ``"known"``: ``initial_mean`` and ``initial_cov`` are given (ctsem's T0MEANS/T0VAR,
  statsmodels' known initialisation);
* ``"stationary"`` (the default when ``initial_cov`` is None): ``P0`` is the stationary
  covariance ``P∞`` solving ``A P∞ + P∞ Aᵀ + GGᵀ = 0`` and, unless ``initial_mean`` is
  given, ``m0 = -A⁻¹ c`` (inputs are taken as zero before ``t_0``). Needs a stable
  drift (every eigenvalue with negative real part);
* ``"diffuse"`` (explicitly requested): an uninformative start. See
  :func:`kalmanad.discretize.initial_moments` for the representation the filters get.

The model is a dataclass registered as a JAX pytree: every array field is a leaf
(``None`` fields stay ``None``), so it passes through ``jit``, ``vmap`` and ``grad``.
Validation happens in the constructor only: shape checks always (they are static), value
checks (NaN, symmetry, positive semi-definiteness, stability of a stationary start) only
when the arrays are concrete, never on traced values, so a model built inside a sampler
never raises. Inside a NumPyro model run the concrete checks are left out too (NumPyro
runs models eagerly, e.g. at initialisation, and must see ``-inf`` there, not an
exception); see :func:`kalmanad._validation.value_errors_raise`.
:meth:`LinearSDE.is_valid` is the traceable test the filters use to map invalid
parameters to a ``-inf`` log-likelihood; :meth:`LinearSDE.check_values` raises on them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kalmanad._validation import value_errors_raise
from kalmanad.linalg import solve_continuous_lyapunov
from kalmanad.linalg._checks import as_float_array

__all__ = ["INITIAL_STATES", "LinearSDE", "drift_is_stable"]

#: The accepted values of ``LinearSDE(initial_state=...)``.
INITIAL_STATES = ("known", "stationary", "diffuse")

# Order of the array fields: the pytree children, the constructor's keyword order.
_FIELDS = (
    "drift",
    "diffusion",
    "observation",
    "observation_noise",
    "drift_intercept",
    "observation_intercept",
    "input_effect",
    "observation_input_effect",
    "impulse_effect",
    "initial_mean",
    "initial_cov",
)


def concrete_array(x) -> np.ndarray | None:
    """``x`` as a numpy array when its value is known, ``None`` under tracing."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _stability_tol(a: np.ndarray) -> float:
    # An eigenvalue whose real part is within rounding of zero (a random-walk mode of
    # a singular drift computed as -1e-17, say) does not make the drift stable.
    return 100.0 * float(np.finfo(a.dtype).eps) * max(float(np.abs(a).max(initial=0.0)), 1e-300)


def max_real_eigenvalue(a: np.ndarray) -> float:
    return float(np.max(np.linalg.eigvals(a.astype(np.float64)).real))


def is_stable_np(a: np.ndarray) -> bool:
    """Concrete stability test (numpy eigenvalues)."""
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return False
    return max_real_eigenvalue(a) < -_stability_tol(a)


def drift_is_stable(drift) -> jax.Array:
    """Whether every eigenvalue of ``drift`` has a negative real part (a boolean array).

    Args:
        drift: (n, n) drift matrix A, concrete or traced.

    Returns:
        A boolean scalar array. For a concrete drift the eigenvalues are computed in
        numpy (``max Re λ < -100·eps·max|A|``, so a singular drift is never stable).
        For a traced drift (inside ``jit``/``grad``, e.g. a NUTS proposal) the test is
        Lyapunov's theorem, which needs only GPU-available operations: A is stable iff
        ``A P + P Aᵀ = -I`` has a symmetric positive-definite solution; the solution is
        accepted when it is finite, satisfies the equation to a relative residual of
        ``sqrt(eps)`` and its smallest eigenvalue is positive. The result carries no
        gradient.
    """
    shape = np.shape(drift)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"drift must be a square (n, n) matrix, got shape {shape}")
    a_np = concrete_array(drift)
    if a_np is not None:
        if np.iscomplexobj(a_np):
            raise TypeError(f"drift must be real, got dtype {a_np.dtype}")
        return np.bool_(is_stable_np(a_np))
    a = as_float_array(drift, "drift")
    a = jax.lax.stop_gradient(a)
    n = a.shape[-1]
    eye = jnp.eye(n, dtype=a.dtype)
    p = solve_continuous_lyapunov(a, -eye)
    p = 0.5 * (p + p.T)
    resid = a @ p + p @ a.T + eye
    scale = jnp.linalg.norm(a) * jnp.linalg.norm(p) + 1.0
    eps = jnp.finfo(a.dtype).eps
    ok_resid = jnp.linalg.norm(resid) <= jnp.sqrt(eps) * scale
    p_safe = jnp.where(jnp.all(jnp.isfinite(p)), p, eye)
    ok_pd = jnp.linalg.eigvalsh(p_safe)[0] > 0
    return jnp.all(jnp.isfinite(p)) & ok_resid & ok_pd & jnp.all(jnp.isfinite(a))


def sym_psd_ok(x: jax.Array) -> jax.Array:
    """Traceable test: finite, symmetric and positive semi-definite to ``sqrt(eps)``."""
    eps = jnp.finfo(x.dtype).eps
    finite = jnp.all(jnp.isfinite(x))
    xs = jnp.where(finite, x, jnp.zeros_like(x))
    scale = jnp.max(jnp.abs(xs))
    tol = jnp.sqrt(eps) * scale
    sym = jnp.max(jnp.abs(xs - xs.T)) <= tol
    psd = jnp.linalg.eigvalsh(0.5 * (xs + xs.T))[0] >= -tol
    return finite & sym & psd


@jax.tree_util.register_pytree_with_keys_class
@dataclasses.dataclass(init=False, eq=False, repr=False)
class LinearSDE:
    """A continuous-time linear SDE observed with Gaussian noise (a JAX pytree).

    Args:
        drift: (n, n) drift matrix A.
        diffusion: (n, n) diffusion *rate* GGᵀ (symmetric positive semi-definite; a
            singular rate, as in an integrated random walk, is fine).
        observation: (m, n) observation matrix H.
        observation_noise: (m, m) measurement-noise covariance R (symmetric PSD).
        drift_intercept: (n,) continuous intercept c. Default zeros.
        observation_intercept: (m,) observation intercept d. Default zeros.
        input_effect: (n, p) effect B of zero-order-hold inputs on the drift.
        observation_input_effect: (m, p) effect D of inputs on the observations.
        impulse_effect: (n, p) effect B_imp of an input that jumps the state at an
            observation time (ctsem's time-dependent predictors): x(t_k) += B_imp u_k.
            The three input effects default to zeros with the number of columns p of
            whichever of them is given (p = 0 when none is).
        initial_mean: (n,) mean of x(t_0). Default: zeros for ``"known"`` and
            ``"diffuse"``, the stationary mean ``-A⁻¹ c`` for ``"stationary"``.
        initial_cov: (n, n) covariance of x(t_0) (symmetric PSD). Giving it selects the
            ``"known"`` initialisation.
        initial_state: ``"known"``, ``"stationary"`` or ``"diffuse"``; static. Default:
            ``"known"`` when ``initial_cov`` is given, ``"stationary"`` otherwise.
        diffuse_scale: the variance κ of the large-variance representation of a
            diffuse start (P0 = κ I); static. Default 1e6, statsmodels'
            ``approximate_diffuse`` default. κ is only the ``initial_cov`` of
            :func:`~kalmanad.discretize_model`'s DiscreteSSM: the filters (every
            ``method``) and the smoother use the exact diffuse initialisation,
            forecasts the exact filter, and simulation starts at ``initial_mean``.

    Raises:
        ValueError: a field of the wrong shape (the message names it and the shapes);
            with concrete arrays also a NaN/inf entry, a non-symmetric or indefinite
            covariance, or a stationary start with an unstable drift (these value
            errors are left to the log-density, ``-inf``, while a NumPyro model runs).

    All fields are promoted to one common floating dtype (integers to JAX's default
    float). The model is immutable; :meth:`replace` returns a validated copy.

    Example::

        model = LinearSDE(drift=[[-0.5]], diffusion=[[1.0]],
                          observation=[[1.0]], observation_noise=[[0.1]])
        model.initial_state            # 'stationary'
    """

    drift: jax.Array
    diffusion: jax.Array
    observation: jax.Array
    observation_noise: jax.Array
    drift_intercept: jax.Array
    observation_intercept: jax.Array
    input_effect: jax.Array
    observation_input_effect: jax.Array
    impulse_effect: jax.Array
    initial_mean: jax.Array | None
    initial_cov: jax.Array | None
    initial_state: str = dataclasses.field(default="stationary", metadata={"static": True})
    diffuse_scale: float = dataclasses.field(default=1e6, metadata={"static": True})

    def __init__(
        self,
        drift,
        diffusion,
        observation,
        observation_noise,
        drift_intercept=None,
        observation_intercept=None,
        input_effect=None,
        observation_input_effect=None,
        impulse_effect=None,
        initial_mean=None,
        initial_cov=None,
        *,
        initial_state: str | None = None,
        diffuse_scale: float = 1e6,
    ):
        given = {
            "drift": drift,
            "diffusion": diffusion,
            "observation": observation,
            "observation_noise": observation_noise,
            "drift_intercept": drift_intercept,
            "observation_intercept": observation_intercept,
            "input_effect": input_effect,
            "observation_input_effect": observation_input_effect,
            "impulse_effect": impulse_effect,
            "initial_mean": initial_mean,
            "initial_cov": initial_cov,
        }
        arrays = {k: (None if v is None else as_float_array(v, k)) for k, v in given.items()}
        initial_state = _resolve_initial_state(initial_state, arrays["initial_cov"])
        diffuse_scale = float(diffuse_scale)
        if not (np.isfinite(diffuse_scale) and diffuse_scale > 0):
            raise ValueError(f"diffuse_scale must be a positive finite number, got {diffuse_scale}")

        _check_shapes(arrays)
        n = arrays["drift"].shape[0]
        m = arrays["observation"].shape[0]
        p = next(
            (
                arrays[k].shape[1]
                for k in ("input_effect", "observation_input_effect", "impulse_effect")
                if arrays[k] is not None
            ),
            0,
        )
        dtype = jnp.result_type(*(v for v in arrays.values() if v is not None))
        arrays = {k: (None if v is None else v.astype(dtype)) for k, v in arrays.items()}
        zeros = {
            "drift_intercept": (n,),
            "observation_intercept": (m,),
            "input_effect": (n, p),
            "observation_input_effect": (m, p),
            "impulse_effect": (n, p),
        }
        for k, shape in zeros.items():
            if arrays[k] is None:
                arrays[k] = jnp.zeros(shape, dtype)
        if arrays["initial_mean"] is None and initial_state != "stationary":
            arrays["initial_mean"] = jnp.zeros((n,), dtype)

        for k in _FIELDS:
            object.__setattr__(self, k, arrays[k])
        object.__setattr__(self, "initial_state", initial_state)
        object.__setattr__(self, "diffuse_scale", diffuse_scale)
        if value_errors_raise():
            self.check_values()

    # -- pytree protocol: the array fields are the children, the two static fields the
    # aux data. Unflattening bypasses ``__init__``: JAX rebuilds pytrees with tracers,
    # batching sentinels or None leaves, which must pass through unvalidated.
    def tree_flatten_with_keys(self):
        children = tuple((jax.tree_util.GetAttrKey(k), getattr(self, k)) for k in _FIELDS)
        return children, (self.initial_state, self.diffuse_scale)

    def tree_flatten(self):
        return self._arrays, (self.initial_state, self.diffuse_scale)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for k, v in zip(_FIELDS, children, strict=True):
            object.__setattr__(obj, k, v)
        object.__setattr__(obj, "initial_state", aux[0])
        object.__setattr__(obj, "diffuse_scale", aux[1])
        return obj

    def __setattr__(self, name, value):
        raise AttributeError("LinearSDE is immutable; use model.replace(...)")

    def __delattr__(self, name):
        raise AttributeError("LinearSDE is immutable; use model.replace(...)")

    @property
    def _arrays(self) -> tuple:
        """The array fields in ``_FIELDS`` order."""
        return tuple(getattr(self, k) for k in _FIELDS)

    def __repr__(self) -> str:
        def show(v):
            if v is None:
                return "None"
            return f"{type(v).__name__}{tuple(getattr(v, 'shape', ()))}"

        inner = ", ".join(f"{k}={show(v)}" for k, v in zip(_FIELDS, self._arrays, strict=True))
        return f"LinearSDE({inner}, initial_state={self.initial_state!r})"

    def replace(self, **changes: Any) -> LinearSDE:
        """A validated copy with some fields changed (``initial_state`` re-derived
        from ``initial_cov`` unless given)."""
        kwargs = {k: v for k, v in zip(_FIELDS, self._arrays, strict=True)}
        kwargs["diffuse_scale"] = self.diffuse_scale
        if "initial_state" not in changes and "initial_cov" not in changes:
            kwargs["initial_state"] = self.initial_state
        if changes.get("initial_state") in ("stationary", "diffuse"):
            kwargs.setdefault("initial_cov", None)
            if "initial_cov" not in changes:
                kwargs["initial_cov"] = None
        if self.initial_state == "stationary" and "initial_mean" not in changes:
            kwargs["initial_mean"] = self.initial_mean
        kwargs.update(changes)
        return LinearSDE(**kwargs)

    # -- sizes -----------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        """n, the state dimension."""
        return self.drift.shape[-1]

    @property
    def n_obs(self) -> int:
        """m, the observation dimension."""
        return self.observation.shape[-2]

    @property
    def n_inputs(self) -> int:
        """p, the number of input columns (0 when the model has no inputs)."""
        return self.input_effect.shape[-1]

    @property
    def dtype(self):
        return self.drift.dtype

    # -- checks ------------------------------------------------------------------------
    def is_stable(self) -> jax.Array:
        """Whether the drift is stable (see :func:`drift_is_stable`); traceable."""
        return drift_is_stable(self.drift)

    def check_stable(self) -> LinearSDE:
        """Raise ``ValueError`` when the drift is concretely unstable; return ``self``.

        Does nothing for a traced drift (use :meth:`is_stable` there).
        """
        a = concrete_array(self.drift)
        if a is not None and not is_stable_np(a):
            lam = max_real_eigenvalue(a) if np.all(np.isfinite(a)) else float("nan")
            raise ValueError(
                f"drift is not stable: the largest real part of its eigenvalues is {lam:.6g} "
                f"(must be < 0)"
            )
        return self

    def is_valid(self) -> jax.Array:
        """Whether the parameter values define a proper model (boolean scalar, traceable).

        True when every field is finite, ``diffusion``, ``observation_noise`` and a
        given ``initial_cov`` are symmetric positive semi-definite (to ``sqrt(eps)``
        relative), and the drift is stable when the start is stationary. For use
        inside samplers: the filters return a ``-inf`` log-likelihood where this is
        False. Carries no gradient.
        """
        ok = jnp.asarray(True)
        for v in self._arrays:
            if v is not None:
                ok = ok & jnp.all(jnp.isfinite(jax.lax.stop_gradient(v)))
        for name in ("diffusion", "observation_noise", "initial_cov"):
            v = getattr(self, name)
            if v is not None:
                ok = ok & sym_psd_ok(jax.lax.stop_gradient(v))
        if self.initial_state == "stationary":
            ok = ok & self.is_stable()
        return ok

    def check_values(self) -> LinearSDE:
        """Raise ``ValueError`` naming the first invalid concrete value; return ``self``.

        The checks :meth:`is_valid` makes, with a message: every field finite;
        ``diffusion``, ``observation_noise`` and a given ``initial_cov`` symmetric
        positive semi-definite (to ``sqrt(eps)`` relative); a stable drift for a
        stationary start. A batched model (leading dims on its fields, e.g. built
        under ``jax.vmap``) is checked subject by subject and the message names the
        subject's index. Traced fields are not checked (use :meth:`is_valid` there).
        """
        batch = tuple(np.shape(self.drift)[:-2])
        if not batch:
            self._check_one()
            return self
        if any(concrete_array(v) is None for v in self._arrays if v is not None):
            return self
        arrays = jax.tree.map(np.asarray, self)  # one device-to-host copy per field
        for index in np.ndindex(*batch):
            one = jax.tree.map(lambda x, i=index: x[i], arrays)
            try:
                one._check_one()
            except ValueError as err:
                raise ValueError(f"subject {index} of the batched model: {err}") from None
        return self

    def _check_one(self) -> None:
        """:meth:`check_values` of an unbatched model."""
        for name, v in zip(_FIELDS, self._arrays, strict=True):
            if v is None:
                continue
            x = concrete_array(v)
            if x is None:
                continue
            if not np.all(np.isfinite(x)):
                bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
                raise ValueError(
                    f"{name} must be finite, got {x[bad]} at index {bad} (shape {x.shape})"
                )
            if name in ("diffusion", "observation_noise", "initial_cov"):
                check_sym_psd(name, x)
        if self.initial_state == "stationary":
            a = concrete_array(self.drift)
            if a is not None and not is_stable_np(a):
                raise ValueError(
                    "a stationary initial state needs a stable drift, but the largest real "
                    f"part of the eigenvalues of drift is {max_real_eigenvalue(a):.6g} "
                    "(must be < 0); give initial_mean and initial_cov, or pass "
                    "initial_state='diffuse'"
                )


def _resolve_initial_state(initial_state, initial_cov) -> str:
    if initial_state is None:
        return "stationary" if initial_cov is None else "known"
    if initial_state not in INITIAL_STATES:
        raise ValueError(f"initial_state must be one of {INITIAL_STATES}, got {initial_state!r}")
    if initial_state == "known" and initial_cov is None:
        raise ValueError("initial_state='known' needs initial_cov (and optionally initial_mean)")
    if initial_state in ("stationary", "diffuse") and initial_cov is not None:
        raise ValueError(
            f"initial_state={initial_state!r} takes no initial_cov (it is implied); drop "
            "initial_cov or use initial_state='known'"
        )
    return initial_state


def _check_shapes(arrays: dict) -> None:
    a = arrays["drift"]
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"drift must be a square (n, n) matrix with n >= 1, got shape {a.shape}")
    n = a.shape[0]
    h = arrays["observation"]
    if h.ndim != 2 or h.shape[1] != n or h.shape[0] == 0:
        raise ValueError(
            f"observation has shape {h.shape} but drift is {a.shape}: expected (m, {n}) with m >= 1"
        )
    m = h.shape[0]

    def expect(name, shape, what):
        v = arrays[name]
        if v is not None and v.shape != shape:
            raise ValueError(f"{name} has shape {v.shape} but expected {shape} ({what})")

    expect("diffusion", (n, n), f"(n, n) with n={n} from drift")
    expect("observation_noise", (m, m), f"(m, m) with m={m} from observation {h.shape}")
    expect("drift_intercept", (n,), f"(n,) with n={n} from drift")
    expect("observation_intercept", (m,), f"(m,) with m={m} from observation {h.shape}")
    expect("initial_mean", (n,), f"(n,) with n={n} from drift")
    expect("initial_cov", (n, n), f"(n, n) with n={n} from drift")

    p = None
    p_from = None
    for name, rows in (
        ("input_effect", n),
        ("observation_input_effect", m),
        ("impulse_effect", n),
    ):
        v = arrays[name]
        if v is None:
            continue
        if v.ndim != 2 or v.shape[0] != rows:
            dim = "n" if rows == n else "m"
            raise ValueError(
                f"{name} has shape {v.shape} but expected ({dim}, p) with {dim}={rows}"
            )
        if p is None:
            p, p_from = v.shape[1], name
        elif v.shape[1] != p:
            raise ValueError(
                f"{name} has shape {v.shape} but {p_from} has {p} input columns: "
                "all input effects need the same p"
            )


def check_sym_psd(name: str, x: np.ndarray) -> None:
    eps = float(np.finfo(x.dtype).eps)
    scale = float(np.abs(x).max(initial=0.0))
    tol = np.sqrt(eps) * scale
    asym = float(np.abs(x - x.T).max(initial=0.0))
    if asym > tol:
        i, j = np.unravel_index(np.argmax(np.abs(x - x.T)), x.shape)
        raise ValueError(
            f"{name} must be symmetric, but {name}[{i}, {j}]={x[i, j]:.6g} and "
            f"{name}[{j}, {i}]={x[j, i]:.6g} (shape {x.shape})"
        )
    lam = float(np.linalg.eigvalsh(0.5 * (x + x.T).astype(np.float64))[0])
    if lam < -tol:
        raise ValueError(
            f"{name} must be positive semi-definite, but its smallest eigenvalue is "
            f"{lam:.6g} (shape {x.shape})"
        )
