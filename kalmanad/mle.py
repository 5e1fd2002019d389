"""Maximum likelihood: estimates, standard errors, Wald and profile-likelihood intervals.

:func:`fit_mle` maximises the plain log-likelihood ℓ(θ) = Σ log p(y | θ) of a model's
observed sites (the exact Kalman-filter likelihood of its
:class:`~kalmanad.distributions.LinearSDEDistribution`) over the model's own
parameters θ. Priors play no part except through their support: a parameter whose
prior lives on (0, ∞) is estimated on (0, ∞). There is no prior term and no Jacobian
term, so the optimum is the MLE on the natural scale (the optimiser works on an
unconstrained scale, θ = T(u), which moves where it searches but not where ℓ peaks).

Standard errors come from the observed information I = −∇²ℓ(θ̂), the exact Hessian on
the natural scale by forward-over-reverse differentiation (``jax.jacfwd(jax.grad(ℓ))``):
Cov(θ̂) ≈ I⁻¹. A derived quantity g(θ) gets the delta-method variance
∇g I⁻¹ ∇gᵀ (:meth:`MLEResult.delta`); :meth:`MLEResult.profile` gives profile-likelihood
intervals {θ_j : 2(ℓ̂ − max_{θ_−j} ℓ(θ_j, θ_−j)) ≤ χ²₁(level)}.

A *model* is what :func:`kalmanad.fit_nuts` takes: a :class:`kalmanad.spec.ModelSpec`
(a zoo name via :func:`kalmanad.load_model`), or a NumPyro model function called as
``model(times, y=y, inputs=inputs, **kwargs)``. Its parameters are its latent sample
sites, in the order the model samples them (a spec's ``[parameters]`` order).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.stats
from numpyro import handlers
from numpyro.distributions import ImproperUniform
from numpyro.distributions.transforms import biject_to

from kalmanad._mle_result import Derived, MLEResult, NotIdentifiedError, StartRun
from kalmanad.inference import numpyro_model_fn, observation_kwargs

__all__ = ["Derived", "MLEResult", "NotIdentifiedError", "StartRun", "fit_mle"]


@dataclass
class _Param:
    """One parameter site: name, shape, support and its flat slice."""

    name: str
    shape: tuple
    transform: Any  # unconstrained -> support (NumPyro bijection)
    start: slice


@dataclass
class _Problem:
    """The compiled objective and the bookkeeping between flat vectors and dicts."""

    params: list
    size: int
    dtype: Any
    value_and_grad: Any  # jitted: unconstrained flat u -> (−ℓ(T(u)), gradient)
    loglik: Any  # natural flat θ -> ℓ(θ) (not jitted; composed by callers)
    n_obs: int
    names: list = field(default_factory=list)
    derivatives: Any = None  # jitted: natural flat θ -> (ℓ, ∇ℓ, ∇²ℓ)

    def unravel(self, flat) -> dict:
        return {p.name: flat[p.start].reshape(p.shape) for p in self.params}

    def ravel(self, values: dict) -> np.ndarray:
        out = np.empty(self.size, np.float64)
        for p in self.params:
            out[p.start] = np.broadcast_to(np.asarray(values[p.name], np.float64), p.shape).ravel()
        return out

    def to_natural(self, u):
        parts = [p.transform(u[p.start].reshape(p.shape)).reshape(-1) for p in self.params]
        return jnp.concatenate(parts)

    def to_unconstrained(self, theta) -> np.ndarray:
        theta = jnp.asarray(theta, self.dtype)
        parts = [p.transform.inv(theta[p.start].reshape(p.shape)).reshape(-1) for p in self.params]
        return np.asarray(jnp.concatenate(parts), np.float64)


def _observed_log_likelihood(trace):
    """Σ of the observed sites' log-densities (masks and scales applied)."""
    total = 0.0
    for site in trace.values():
        if site["type"] == "sample" and site["is_observed"]:
            lp = site["fn"].log_prob(site["value"])
            if site.get("mask") is not None:
                lp = jnp.where(site["mask"], lp, 0.0)
            if site.get("scale") is not None:
                lp = site["scale"] * lp
            total = total + jnp.sum(lp)
    return total


def _count_observed(trace) -> int:
    """Number of finite scalar values in the observed sites (factors excluded)."""
    n = 0
    for site in trace.values():
        value = site["value"] if site["type"] == "sample" and site["is_observed"] else None
        if value is not None:
            n += int(np.isfinite(np.asarray(value, np.float64)).sum())
    return n


def _moderate(site) -> jax.Array:
    """The support's image of 0 on the unconstrained scale (0, 1, or an interval's middle)."""
    d = site["fn"]
    shape = d.batch_shape + d.event_shape
    return biject_to(d.support)(jnp.zeros(shape, jnp.result_type(float)))


def _median(site, num: int = 1001) -> jax.Array:
    """The prior's median from a fixed-key sample; the moderate point for flat priors."""
    d = site["fn"]
    if isinstance(d, ImproperUniform):
        return _moderate(site)
    try:
        draws = d.sample(jax.random.PRNGKey(0), (num,))
    except NotImplementedError:
        return _moderate(site)
    return jnp.median(draws, axis=0).astype(jnp.result_type(float))


def _trace(fn, times, kw, choose):
    """Run the model with each latent site's value from ``choose(site)``."""

    def substitute_fn(site):
        if site["type"] == "sample" and not site["is_observed"]:
            return choose(site)
        return None

    model = handlers.substitute(handlers.seed(fn, 0), substitute_fn=substitute_fn)
    return handlers.trace(model).get_trace(times, **kw)


def _build_problem(fn, times, kw) -> tuple[_Problem, dict, dict]:
    """Find the parameter sites, compile −ℓ on the unconstrained scale."""
    medians: dict = {}

    def choose(site):
        medians[site["name"]] = _median(site)
        return medians[site["name"]]

    tr = _trace(fn, times, kw, choose)
    params, offset, names, moderate = [], 0, [], {}
    for name, site in tr.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["cond_indep_stack"]:
            raise ValueError(
                f"parameter site {name!r} lies inside a plate (per-subject random effects): "
                "maximum likelihood here estimates fixed parameters only; the random effects "
                "would have to be integrated out. Use fit_nuts, or a model without them"
            )
        d = site["fn"]
        if d.support.event_dim != 0 or getattr(d, "is_discrete", False):
            raise ValueError(
                f"parameter {name!r} has support {d.support}: fit_mle handles element-wise "
                "continuous supports (real, positive, intervals)"
            )
        shape = tuple(jnp.shape(site["value"]))
        size = math.prod(shape)
        params.append(_Param(name, shape, biject_to(d.support), slice(offset, offset + size)))
        names += [name] if shape == () else [f"{name}[{i}]" for i in np.ndindex(shape)]
        moderate[name] = _moderate(site)
        offset += size
    if not params:
        raise ValueError("the model has no parameters (no latent sample sites) to estimate")
    n_obs = _count_observed(tr)
    if n_obs == 0:
        raise ValueError("the model has no observed values (pass y)")
    dtype = jnp.result_type(float)

    def loglik(theta):
        values = {p.name: theta[p.start].reshape(p.shape) for p in params}
        return _observed_log_likelihood(_trace(fn, times, kw, lambda s: values[s["name"]]))

    problem = _Problem(params, offset, dtype, None, loglik, n_obs, names)

    def objective(u):
        return -loglik(problem.to_natural(u))

    problem.value_and_grad = jax.jit(jax.value_and_grad(objective))
    problem.derivatives = _derivatives_fn(loglik)
    return problem, medians, moderate


# The compiled problems of recent fits, keyed by the model function, the float type and
# a digest of the data: fitting the same model to the same data again (a warm call,
# other starts) reuses the compiled gradient and Hessian instead of compiling anew.
_PROBLEMS: OrderedDict = OrderedDict()
_PROBLEMS_KEPT = 4


def _digest(x, h) -> bool:
    """Feed ``x`` (data: arrays, numbers, strings, mappings, sequences) into the hash
    ``h``; False for anything else (a traced array, an object): then nothing is cached."""
    if x is None or isinstance(x, (bool, int, float, str)):
        h.update(f"{type(x).__name__}:{x!r};".encode())
        return True
    if isinstance(x, Mapping):
        return all(h.update(f"{k!r}=".encode()) or _digest(x[k], h) for k in sorted(x, key=repr))
    if isinstance(x, (list, tuple)):
        h.update(f"seq{len(x)}".encode())
        return all(_digest(v, h) for v in x)
    if isinstance(x, (np.ndarray, np.generic)) or (
        isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
    ):
        a = np.asarray(x)
        if a.dtype == object:
            return False
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        return True
    return False


def _problem_for(fn, times, kw) -> tuple:
    """:func:`_build_problem`, reusing a recent one built for the same model and data."""
    h = hashlib.sha256()
    try:
        key = (fn, str(jnp.result_type(float)), hash(fn))
    except TypeError:
        key = None
    if key is not None and _digest(times, h) and _digest(kw, h):
        key = (*key, h.hexdigest())
        if key in _PROBLEMS:
            _PROBLEMS.move_to_end(key)
            return _PROBLEMS[key]
        built = _build_problem(fn, times, kw)
        _PROBLEMS[key] = built
        while len(_PROBLEMS) > _PROBLEMS_KEPT:
            _PROBLEMS.popitem(last=False)
        return built
    return _build_problem(fn, times, kw)


# ----------------------------------------------------------------------------- starts
def _start_values(problem: _Problem, start, defaults: dict) -> dict:
    """A start as name -> value: the user's (a mapping, a pandas Series) over defaults."""
    known = {p.name for p in problem.params}
    items = dict(start.items()) if hasattr(start, "items") else None
    if items is None:
        arr = np.asarray(start, np.float64)
        if arr.shape != (problem.size,):
            raise ValueError(
                f"a start must be a mapping name -> value or a vector of {problem.size} values "
                f"in the order {', '.join(problem.names)}; got shape {arr.shape}"
            )
        return problem.unravel(arr)
    unknown = [k for k in items if k not in known]
    if unknown:
        raise ValueError(
            f"start values for unknown parameter(s) {', '.join(map(str, unknown))}; the "
            f"model's free parameters are {', '.join(p.name for p in problem.params)}"
        )
    out = dict(defaults)
    for p in problem.params:
        if p.name in items:
            v = np.asarray(items[p.name], np.float64)
            try:
                out[p.name] = np.broadcast_to(v, p.shape)
            except ValueError:
                raise ValueError(
                    f"start value for {p.name!r} has shape {v.shape}, the parameter {p.shape}"
                ) from None
    return out


def _user_starts(start) -> list:
    if start is None:
        return []
    if hasattr(start, "items") or (np.ndim(start) == 1 and not _is_list_of_mappings(start)):
        return [start]
    return list(start)


def _is_list_of_mappings(start) -> bool:
    return isinstance(start, (list, tuple)) and all(hasattr(s, "items") for s in start)


def _finite(problem: _Problem, u) -> bool:
    v, g = problem.value_and_grad(jnp.asarray(u, problem.dtype))
    return bool(np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g))))


def _starts(problem, start, medians, moderate, num_starts, seed) -> list:
    """Unconstrained start vectors: the user's, the prior median, the moderate point,
    then seeded N(0, 1) perturbations of the first (redrawn while the density is not
    finite, up to 20 times)."""
    named = [_start_values(problem, s, medians) for s in _user_starts(start)]
    defaults = [medians, moderate]
    for d in defaults:
        if len(named) >= num_starts:
            break
        named.append(d)
    starts = []
    for values in named:
        u = problem.to_unconstrained(problem.ravel(values))
        outside = [
            f"{p.name}={np.asarray(values[p.name]).tolist()} (support: {p.transform.codomain})"
            for p in problem.params
            if not np.all(np.isfinite(u[p.start]))
        ]
        if outside:
            raise ValueError(f"start value outside its parameter's support: {', '.join(outside)}")
        starts.append(u)
    rng = np.random.default_rng(seed)
    base = starts[0]
    while len(starts) < num_starts:
        for _ in range(20):
            u = base + rng.standard_normal(problem.size)
            if _finite(problem, u):
                break
        starts.append(u)
    return starts[:num_starts] if start is None else starts


# -------------------------------------------------------------------------- optimiser
def _scipy_fun(vg, dtype, fixed=None):
    """scipy's (value, gradient) in float64; an invalid point is +inf with a zero gradient.

    ``fixed = (index, value)`` holds one unconstrained coordinate fixed (profiles)."""

    def fun(x):
        u = x if fixed is None else np.insert(x, fixed[0], fixed[1])
        v, g = vg(jnp.asarray(u, dtype))
        v, g = float(v), np.asarray(g, np.float64)
        if fixed is not None:
            g = np.delete(g, fixed[0])
        if not np.isfinite(v):
            return np.inf, np.zeros_like(g)
        return v, np.where(np.isfinite(g), g, 0.0)

    return fun


def _minimize(fun, x0, maxiter):
    """L-BFGS-B to tight tolerances; resumed with BFGS after an invalid trial point
    (L-BFGS-B's line search stops at a zero step after an infinite value)."""
    opts = {"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20}
    res = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", options=opts)
    if not res.success or not np.isfinite(res.fun):
        polished = scipy.optimize.minimize(
            fun, res.x, jac=True, method="BFGS", options={"maxiter": maxiter, "gtol": 1e-9}
        )
        if polished.fun <= res.fun:
            polished.nit += res.nit
            res = polished
    return res


def _derivatives_fn(loglik):
    """Jitted θ -> (ℓ, ∇ℓ, ∇²ℓ): the Hessian forward-over-reverse, one program."""

    def grad_with_aux(theta):
        value, grad = jax.value_and_grad(loglik)(theta)
        return grad, (value, grad)

    def derivatives(theta):
        hess, (value, grad) = jax.jacfwd(grad_with_aux, has_aux=True)(theta)
        return value, grad, hess

    return jax.jit(derivatives)


def _newton_polish(problem, derivatives, theta, steps: int = 4):
    """Newton steps on ℓ(θ) at the natural scale, halving to stay in the support
    and to increase ℓ. Returns (θ, ℓ, ∇ℓ, ∇²ℓ) at the final point."""

    def at(t):
        return [np.asarray(a, np.float64) for a in derivatives(jnp.asarray(t, problem.dtype))]

    value, grad, hess = at(theta)
    for _ in range(steps):
        try:
            step = np.linalg.solve(-hess, grad)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)) or not grad @ step > 1e-20:  # no ascent left
            break
        for _ in range(30):
            trial = theta + step
            if np.all(np.isfinite(problem.to_unconstrained(trial))):
                new = at(trial)
                if np.isfinite(new[0]) and new[0] >= value:
                    theta, (value, grad, hess) = trial, new
                    break
            step = step / 2
        else:
            break
    return theta, float(value), grad, hess


def _run_start(problem, u0, maxiter) -> tuple:
    fun = _scipy_fun(problem.value_and_grad, problem.dtype)
    v0 = fun(u0)[0]
    if not np.isfinite(v0):
        return None, StartRun(
            start=problem.unravel(np.asarray(problem.to_natural(jnp.asarray(u0)))),
            minus2ll=math.inf,
            converged=False,
            message="the log-likelihood is not finite at this start",
            iterations=0,
        )
    res = _minimize(fun, u0, maxiter)
    theta0 = np.asarray(problem.to_natural(jnp.asarray(u0, problem.dtype)), np.float64)
    run = StartRun(
        start=problem.unravel(theta0),
        minus2ll=2.0 * float(res.fun),
        converged=bool(res.success),
        message=str(res.message),
        iterations=int(res.nit),
    )
    return res, run


# ---------------------------------------------------------------------------- fit_mle
def fit_mle(
    model,
    times,
    y,
    inputs=None,
    *,
    start=None,
    num_starts: int = 3,
    seed: int = 0,
    maxiter: int = 2000,
    level: float = 0.95,
    agree_tol: float = 1e-2,
    se: bool = True,
    **model_kwargs: Any,
) -> MLEResult:
    """Maximum-likelihood estimates of a model's parameters, with standard errors.

    Maximises ℓ(θ), the sum of the log-densities of the model's observed sites (the
    exact Kalman-filter log-likelihood; NaN observations are missing and drop out),
    over the parameters' supports; priors contribute nothing else. Each start runs
    ``scipy.optimize.minimize(method="L-BFGS-B")`` on the unconstrained scale θ = T(u)
    with the jitted exact gradient (compiled once for all starts), then up to four
    Newton steps on ℓ(θ) with the exact Hessian. The best start wins.

    Args:
        model: a ModelSpec (:func:`kalmanad.load_model`) or a NumPyro model function
            ``model(times, y=..., inputs=..., **model_kwargs)``.
        times: (T,) or (S, T) observation times; long format with ``subject=`` ids.
        y: (T, m) or (S, T, m) observations, NaN = missing.
        inputs: optional (…, T, k) inputs.
        start: start values on the natural scale: a mapping name -> value (ctsem's
            named ``inits`` as a dict or a pandas Series; missing names take the
            default), a vector in the order of :attr:`MLEResult.names`, or a list of
            such (one start each). Given starts are all run, before the defaults.
            Default: a spec's own ``start`` values, where it has any.
        num_starts: number of starts without ``start``: the prior median (the moderate
            point below for a flat prior), the moderate point T(0) (0 for real, 1 for
            positive, the middle of an interval), then seeded N(0, I) perturbations of
            the first on the unconstrained scale.
        seed: seed of those perturbations.
        maxiter: iteration limit of each optimiser run.
        level: confidence level of the Wald intervals in the summary.
        agree_tol: starts whose −2LL exceed the best by more than this are reported
            with a warning (different optima).
        se: check the observed information and invert it for standard errors: a
            singular or indefinite one raises :class:`NotIdentifiedError` naming the
            parameters involved (``err.result`` holds the estimates). With
            ``se=False`` the Hessian is still computed (``result.hessian``), neither
            checked nor inverted.
        model_kwargs: passed to the model (``subject=``, ``covariates=``, ...).

    Warns when starts reach different optima, and when the estimate of a bounded
    parameter is on the edge of its support (the Newton step points outside it).

    Returns:
        :class:`MLEResult`: estimates in the model's parameter order, −2LL, AIC =
        −2LL + 2k, BIC = −2LL + k log n (n = observed scalar values, k = free
        parameters), standard errors, and the runs of every start.
    """
    fn = numpyro_model_fn(model)
    kw = observation_kwargs(y, inputs, model_kwargs)
    problem, medians, moderate = _problem_for(fn, times, kw)
    if start is None and getattr(model, "starts", None):
        start = dict(model.starts)
    starts = _starts(problem, start, medians, moderate, max(1, int(num_starts)), seed)
    runs, best = [], None
    for u0 in starts:
        res, run = _run_start(problem, u0, maxiter)
        runs.append(run)
        if res is not None and np.isfinite(res.fun) and (best is None or res.fun < best[0].fun):
            best = (res, len(runs) - 1)
    if best is None:
        raise ValueError(
            "the log-likelihood is not finite at any start (e.g. an unstable drift with a "
            "stationary start): give start values with start={name: value, ...}"
        )
    res, best_index = best
    derivatives = problem.derivatives
    theta = np.asarray(problem.to_natural(jnp.asarray(res.x, problem.dtype)), np.float64)
    theta, loglik, grad, hess = _newton_polish(problem, derivatives, theta)
    _warn_disagreement(runs, best_index, 2.0 * res.fun, agree_tol)
    _warn_boundary(problem, theta, grad, hess)
    result = MLEResult(
        names=tuple(problem.names),
        shapes={p.name: p.shape for p in problem.params},
        estimate=theta,
        log_likelihood=loglik,
        n=problem.n_obs,
        grad=grad,
        starts=runs,
        best_start=best_index,
        message=str(res.message),
        status=int(res.status),
        iterations=int(res.nit),
        optimizer_success=bool(res.success),
        level=level,
        model_name=getattr(model, "name", getattr(fn, "__name__", "model")),
        tolerance=max(1e-6, 10 * float(jnp.finfo(problem.dtype).eps) * (1 + abs(loglik))),
        _loglik=problem.loglik,
        hessian=hess,
        _derivatives=derivatives,
        _unravel=problem.unravel,
    )
    result._profile_fn = lambda index, lvl: _profile_bounds(problem, result, index, lvl, maxiter)
    if se:
        result.compute_covariance()
    return result


def _warn_disagreement(runs, best_index, best_m2ll, tol) -> None:
    others = [
        (i, r.minus2ll)
        for i, r in enumerate(runs)
        if i != best_index and np.isfinite(r.minus2ll) and r.minus2ll - best_m2ll > tol
    ]
    if others:
        listed = ", ".join(f"start {i}: {v:.4f}" for i, v in others)
        warnings.warn(
            f"starts reached different optima: the best (start {best_index}) has "
            f"-2LL = {best_m2ll:.4f}, others {listed}; the best is reported (see "
            "result.starts; give start values near the expected solution to check)",
            stacklevel=3,
        )


def _support_bounds(param) -> tuple:
    """(lower, upper) of a parameter's support (None where unbounded)."""
    support = param.transform.codomain
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)


def _warn_boundary(problem, theta, grad, hess) -> None:
    """Warn where ℓ still rises towards the edge of a bounded parameter's support.

    At an interior maximum the score ∂ℓ/∂θⱼ vanishes (after the Newton polish, to
    ~1e-8 of its scale √|∂²ℓ/∂θⱼ²|); a clearly non-zero score pointing out of the
    support means the maximum is on the boundary (e.g. a variance at 0).
    """
    edge = []
    for p in problem.params:
        lower, upper = _support_bounds(p)
        for i in range(p.start.start, p.start.stop):
            scale = math.sqrt(abs(hess[i, i])) or 1.0
            z = grad[i] / scale
            if (lower is not None and z < -1e-3) or (upper is not None and z > 1e-3):
                edge.append(f"{problem.names[i]} = {theta[i]:.3g}")
    if edge:
        warnings.warn(
            f"the log-likelihood still increases towards the edge of the support of "
            f"{', '.join(edge)}: the maximum is on the boundary (e.g. a variance of 0); "
            "Wald standard errors and intervals do not hold there (profile intervals do; "
            "or fix the parameter)",
            stacklevel=3,
        )


def _profile_bounds(problem, result, index: int, level: float, maxiter: int):
    """The profile-likelihood interval of flat parameter ``index`` (see MLEResult.profile)."""
    target = scipy.stats.chi2.ppf(level, 1) / 2.0
    loglik_hat = result.log_likelihood
    u_hat = problem.to_unconstrained(result.estimate)
    k = problem.size
    # The Wald half-width, mapped to the unconstrained scale, sets the first step.
    se = result.se[index] if result.se is not None else 1.0
    dtheta = np.asarray(jax.jacfwd(problem.to_natural)(jnp.asarray(u_hat, problem.dtype)))
    scale = abs(float(dtheta[index, index])) or 1.0
    step0 = 2.0 * se / scale if np.isfinite(se) and se > 0 else 1.0
    warm = {"x": np.delete(u_hat, index)}

    def drop(u_j):
        """ℓ̂ − max over the others with u_j fixed, minus the target drop."""
        if k == 1:
            v = float(problem.value_and_grad(jnp.asarray([u_j], problem.dtype))[0])
        else:
            fun = _scipy_fun(problem.value_and_grad, problem.dtype, fixed=(index, u_j))
            res = _minimize(fun, warm["x"], maxiter)
            v = float(res.fun)
            if np.isfinite(v):
                warm["x"] = res.x
        return (loglik_hat + v) - target if np.isfinite(v) else math.inf

    bounds = []
    for sign in (-1.0, 1.0):
        warm["x"] = np.delete(u_hat, index)
        inner, step, found = u_hat[index], step0, None
        for _ in range(40):
            outer = u_hat[index] + sign * step
            if drop(outer) > 0:
                found = outer
                break
            inner, step = outer, step * 2.0
        if found is None:
            bounds.append(-math.inf if sign < 0 else math.inf)
            continue
        warm["x"] = np.delete(u_hat, index)
        lo, hi = sorted((inner, found))
        root = scipy.optimize.brentq(drop, lo, hi, xtol=1e-10, rtol=1e-12)
        u = u_hat.copy()
        u[index] = root
        bounds.append(float(np.asarray(problem.to_natural(jnp.asarray(u, problem.dtype)))[index]))
    return tuple(bounds)
