"""Inference workflows: NUTS posteriors, MAP estimates with a Laplace approximation,
and the derived quantities scientists report (smoothed states, forecasts, the
discrete-time effects of the drift as a function of the time interval).

A *model* here is either a :class:`kalmanad.spec.ModelSpec` (from
:func:`kalmanad.load_model`) or any NumPyro model function called as
``model(times, y=y, inputs=inputs, **kwargs)`` that observes its data with
:class:`kalmanad.distributions.LinearSDEDistribution`.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions import Distribution
from numpyro.infer import MCMC, NUTS, init_to_median
from numpyro.infer.util import initialize_model

from kalmanad.distributions import LinearSDEDistribution, NonlinearSDEDistribution
from kalmanad.linalg import expm
from kalmanad.statespace import forecast, rts_smoother

__all__ = [
    "MAPResult",
    "discrete_time_effects",
    "fit_map",
    "fit_nuts",
    "forecast_draws",
    "pointwise_log_likelihood",
    "sde_draws",
    "smoothed_states",
]


def numpyro_model_fn(model):
    numpyro_model = getattr(model, "numpyro_model", None)
    if numpyro_model is not None:
        return numpyro_model
    if callable(model):
        return model
    raise TypeError(
        "model must be a kalmanad ModelSpec (see kalmanad.load_model) or a NumPyro model "
        f"function, got {type(model).__name__}"
    )


def _init_strategy(model):
    """NumPyro's start for ``model``: a spec's own (its ``start`` values, else the prior
    median), the prior median for a plain NumPyro model."""
    if getattr(model, "numpyro_model", None) is not None and hasattr(model, "init_strategy"):
        return model.init_strategy()
    return init_to_median(num_samples=15)


def observation_kwargs(y, inputs, kwargs):
    out = dict(kwargs)
    out["y"] = None if y is None else np.asarray(y)
    if inputs is not None:
        out["inputs"] = np.asarray(inputs)
    return out


def _unwrap(fn: Distribution):
    """The SDE distribution (linear or nonlinear) inside NumPyro wrappers (plates,
    masks, to_event)."""
    while not isinstance(fn, LinearSDEDistribution | NonlinearSDEDistribution):
        inner = getattr(fn, "base_dist", None)
        if inner is None:
            return None
        fn = inner
    return fn


def sde_draws(model, samples: dict, times, y=None, inputs=None, **kwargs) -> dict:
    """Replay ``model`` at each posterior draw and collect its SDE observation sites.

    Args:
        model: a ModelSpec or NumPyro model function.
        samples: dict of arrays with a leading draw axis (e.g. ``mcmc.get_samples()``).
        times, y, inputs, kwargs: the model's data, as for :func:`fit_nuts`.

    Returns:
        ``{site_name: LinearSDEDistribution}`` whose model fields carry a leading draw
        axis (e.g. ``drift`` of shape (draws, [subjects,] n, n)).
    """
    first = sde_draws_single(
        model, jax.tree.map(lambda v: v[0], samples), times, y, inputs, **kwargs
    )
    if not first:
        raise ValueError("the model has no observed LinearSDEDistribution site")
    return jax.vmap(lambda d: sde_draws_single(model, d, times, y, inputs, **kwargs))(samples)


def pointwise_log_likelihood(model, samples: dict, times, y, inputs=None, **kwargs) -> dict:
    """Per-observation-time log-likelihood at each draw, for LOO/WAIC.

    Returns ``{site: array (draws, [subjects,] T)}``: entry t is the one-step-ahead
    predictive log-density log p(y_t | y_<t, θ) (0 for a fully missing row).
    """
    y = np.asarray(y)

    def one(draw):
        dists = sde_draws_single(model, draw, times, y, inputs, **kwargs)
        return {k: d.pointwise_log_prob(y) for k, d in dists.items()}

    return jax.jit(jax.vmap(one))(samples)


def sde_draws_single(model, draw: dict, times, y=None, inputs=None, **kwargs) -> dict:
    """:func:`sde_draws` for a single draw (no leading draw axis)."""
    fn = numpyro_model_fn(model)
    kw = observation_kwargs(y, inputs, kwargs)
    tr = handlers.trace(handlers.substitute(handlers.seed(fn, 0), draw)).get_trace(times, **kw)
    return {
        name: _unwrap(site["fn"])
        for name, site in tr.items()
        if site["type"] == "sample" and site["is_observed"] and _unwrap(site["fn"]) is not None
    }


# NumPyro's per-transition fields that ArviZ names and uses (bfmi needs the energy).
_SAMPLE_STATS = (
    "diverging",
    "num_steps",
    "accept_prob",
    "energy",
    "potential_energy",
    "adapt_state.step_size",
)


def _map_start(fn, times, kw, *, num_chains: int, dense_mass: bool, seed: int, init_strategy=None):
    """NUTS's start from the posterior mode: ``(mode, init_params, inverse_mass_matrix)``.

    Each chain starts at its own draw of the Laplace approximation N(mode, H⁻¹) in the
    unconstrained space, so the chains stay distinct for R-hat; a draw where the density
    or its gradient is not finite is replaced by the next (up to 10 per chain), then by
    the mode. Without a Laplace approximation (H not positive definite, warned) every
    chain starts at the mode. ``init_params`` is an unconstrained dict, with a leading
    (num_chains,) axis when num_chains > 1 (NumPyro's ``MCMC.run`` convention). The
    initial inverse mass matrix is H⁻¹, (k, k), or its diagonal (k,) without
    ``dense_mass``; None without a Laplace approximation (NumPyro's identity).
    """
    found = _find_mode(
        fn,
        times,
        kw,
        seed=seed,
        num_starts=1,
        laplace=True,
        maxiter=1000,
        init_strategy=init_strategy,
    )
    mode = np.asarray(found.flat, np.float64)
    starts = np.repeat(mode[None], num_chains, axis=0)
    if found.chol is not None:
        candidates = _laplace_draws(found, 10 * num_chains, np.random.default_rng([seed, 1]))
        valid = []
        for x in candidates:
            v, g = found.value_and_grad(jnp.asarray(x, found.flat.dtype))
            if np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g))):
                valid.append(x)
                if len(valid) == num_chains:
                    break
        if valid:
            starts[: len(valid)] = np.stack(valid)
    starts = jnp.asarray(starts, found.flat.dtype)
    init_params = found.unravel(starts[0]) if num_chains == 1 else jax.vmap(found.unravel)(starts)
    inverse_mass_matrix = None
    if found.cov is not None:
        cov = found.cov if dense_mass else np.diag(found.cov)
        inverse_mass_matrix = jnp.asarray(cov, found.flat.dtype)
    return found, init_params, inverse_mass_matrix


def fit_nuts(
    model,
    times,
    y,
    inputs=None,
    *,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    chain_method: str = "vectorized",
    seed: int = 0,
    progress_bar: bool = True,
    target_accept_prob: float = 0.8,
    dense_mass: bool = False,
    max_tree_depth: int = 10,
    init: str = "median",
    pointwise: bool = True,
    **model_kwargs: Any,
):
    """Sample the posterior with NUTS and return an ArviZ ``InferenceData``.

    Args:
        model: a ModelSpec or a NumPyro model function ``model(times, y=..., inputs=...)``.
        times: (T,) or (S, T) observation times (concrete).
        y: (T, m) or (S, T, m) observations, NaN = missing.
        inputs: optional (…, T, p) inputs.
        num_warmup, num_samples, num_chains: NUTS settings (per chain).
        chain_method: ``"vectorized"`` (one device, chains vmapped), ``"parallel"``
            (one device per chain) or ``"sequential"``.
        seed: the PRNG seed; the run is reproducible given it.
        target_accept_prob, max_tree_depth: NUTS settings.
        dense_mass: adapt a dense (k, k) mass matrix instead of a diagonal one; worth it
            when the posterior has strong correlations (a CT-VAR's drift entries).
        init: where the chains start.

            - ``"median"``: the prior median (NumPyro's ``init_to_median``), and an
              identity initial inverse mass matrix.
            - ``"map"``: first :func:`fit_map` (one L-BFGS run from the prior median),
              then each chain starts at its own draw from the Laplace approximation
              N(mode, H⁻¹) in the unconstrained space (draws with an invalid density are
              redrawn), and warm-up starts from H⁻¹ (its diagonal without
              ``dense_mass``) as the inverse mass matrix. This removes the long early
              warm-up of a far start (on a 100-subject CT-VAR panel, the first 50
              warm-up iterations took 6033 leapfrog steps from the prior median and 378
              from the mode) and costs one optimisation. The mode's log density and
              the optimiser's success are kept in ``posterior.attrs``.
        pointwise: also store the per-time log-likelihood (``log_likelihood`` group)
            for ``arviz.loo``.

    Returns:
        ``arviz.InferenceData`` with groups posterior, sample_stats (ArviZ's names:
        ``diverging``, ``n_steps``, ``tree_depth``, ``acceptance_rate``, ``energy`` for
        ``arviz.bfmi``, ``lp``, ``step_size``), observed_data and (when ``pointwise``)
        log_likelihood with dims (chain, draw, [subject,] time). ``posterior.attrs``
        records ``init`` and ``sampling_time`` (seconds of warm-up and sampling,
        compilation included, without the MAP).
    """
    import arviz as az

    if init not in ("median", "map"):
        raise ValueError(f"init must be 'median' or 'map', got {init!r}")
    fn = numpyro_model_fn(model)
    kw = observation_kwargs(y, inputs, model_kwargs)
    init_params, start, attrs = None, {}, {"init": init}
    if init == "map":
        found, init_params, inverse_mass_matrix = _map_start(
            fn,
            times,
            kw,
            num_chains=num_chains,
            dense_mass=dense_mass,
            seed=seed,
            init_strategy=_init_strategy(model),
        )
        if inverse_mass_matrix is not None:
            start["inverse_mass_matrix"] = inverse_mass_matrix
        attrs["map_log_density"] = -float(found.result.fun)
        attrs["map_success"] = int(bool(found.result.success))
    kernel = NUTS(
        fn,
        target_accept_prob=target_accept_prob,
        dense_mass=dense_mass,
        max_tree_depth=max_tree_depth,
        init_strategy=_init_strategy(model),
        **start,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
    )
    t0 = time.perf_counter()
    mcmc.run(
        jax.random.PRNGKey(seed),
        times,
        init_params=init_params,
        extra_fields=_SAMPLE_STATS,
        **kw,
    )
    jax.block_until_ready(mcmc.get_samples())
    attrs["sampling_time"] = time.perf_counter() - t0
    idata = az.from_numpyro(mcmc, log_likelihood=False)
    idata.posterior.attrs.update(attrs)
    if pointwise:
        samples = mcmc.get_samples(group_by_chain=False)
        ll = pointwise_log_likelihood(model, samples, times, y, inputs, **model_kwargs)
        groups, dims = {}, {}
        for name, arr in ll.items():
            arr = np.asarray(arr).reshape((num_chains, num_samples, *arr.shape[1:]))
            groups[name] = arr
            dims[name] = (["subject"] if arr.ndim == 4 else []) + ["time"]
        idata.add_groups(log_likelihood=groups, dims=dims)
    return idata


class MAPResult(NamedTuple):
    """A posterior mode and its Laplace (Gaussian) approximation.

    Attributes:
        params: constrained parameter values at the mode (dict).
        unconstrained: the mode in NumPyro's unconstrained space (dict).
        log_density: log joint density (unnormalised posterior) at the mode, in the
            unconstrained space (includes the log-Jacobian of the transforms).
        cov: Laplace covariance in the unconstrained space, (k, k), the inverse Hessian
            of the negative log density at the mode (None when not positive definite);
            rows and columns in ``names`` order.
        draws: constrained draws from the Laplace approximation (dict of (num_draws, ...)
            arrays), or None.
        success: whether the optimiser reported convergence.
        message: the optimiser's message.
        names: the unconstrained coordinates that index ``cov``'s rows and columns, in
            the order the model samples its sites (a spec's ``[parameters]`` order):
            a site's name, or ``name[i]`` / ``name[i, j]`` for the entries of a
            non-scalar site.
    """

    params: dict
    unconstrained: dict
    log_density: float
    cov: np.ndarray | None
    draws: dict | None
    success: bool
    message: str
    names: tuple = ()


def _hessian_by_gradient_differences(value_and_grad, x) -> np.ndarray:
    """Symmetrised Hessian (k, k) by central differences of an exact gradient.

    Column i is ``(g(x + hᵢeᵢ) − g(x − hᵢeᵢ)) / 2hᵢ`` with ``hᵢ = ε^{1/3} max(1, |xᵢ|)``:
    truncation O(h²) and rounding O(ε/h) balance at a relative error of about ε^{2/3}
    (1e-11 in float64), ample for a Laplace approximation. Reusing the compiled gradient
    costs 2k gradient evaluations and no compilation, where ``jax.hessian`` through a
    long scan would compile a forward-over-reverse program for minutes on CPU.
    """
    x = np.asarray(x)
    dtype = x.dtype
    k = x.shape[0]
    h = np.finfo(dtype).eps ** (1.0 / 3.0) * np.maximum(1.0, np.abs(x))
    hess = np.empty((k, k), np.float64)
    for i in range(k):
        step = np.zeros(k, dtype)
        step[i] = h[i]
        g_plus = np.asarray(value_and_grad(jnp.asarray(x + step))[1], np.float64)
        g_minus = np.asarray(value_and_grad(jnp.asarray(x - step))[1], np.float64)
        hess[:, i] = (g_plus - g_minus) / (2.0 * h[i])
    return 0.5 * (hess + hess.T)


def _model_order(tree: dict, order) -> tuple:
    """Names of ``ravel_pytree(tree)``'s coordinates in the model's order.

    ``ravel_pytree`` lays a dict out by sorted key; this gives ``(names, perm)`` with
    ``names`` the coordinates in the model's ``order`` (``site`` or ``site[i, j]``) and
    ``perm`` the indices that take the flat vector to that order (``flat[perm]``).
    """
    starts, offset = {}, 0
    for k in sorted(tree):
        starts[k] = offset
        offset += int(np.size(tree[k]))
    names, perm = [], []
    for k in order:
        shape = tuple(np.shape(tree[k]))
        for j, i in enumerate(np.ndindex(shape)):
            names.append(k if shape == () else f"{k}[{', '.join(map(str, i))}]")
            perm.append(starts[k] + j)
    return tuple(names), np.asarray(perm, dtype=int)


class _Mode(NamedTuple):
    """What fit_map's optimisation leaves for its callers (fit_map, fit_nuts' MAP start)."""

    flat: jax.Array  # (k,) the mode in the flattened unconstrained space
    result: Any  # scipy's OptimizeResult of the best start
    unravel: Any  # flat (k,) -> unconstrained dict
    postprocess_fn: Any  # unconstrained dict -> constrained dict
    value_and_grad: Any  # jitted flat -> (potential energy, gradient)
    cov: np.ndarray | None  # (k, k) Laplace covariance H⁻¹, None if H is not PD
    chol: np.ndarray | None  # (k, k) lower Cholesky factor of H
    names: tuple  # (k,) the coordinates' names in the model's order ...
    perm: np.ndarray  # (k,) ... at these flat indices: flat[perm] is in that order


def _find_mode(fn, times, kw, *, seed, num_starts, laplace, maxiter, init_strategy=None) -> _Mode:
    keys = jax.random.split(jax.random.PRNGKey(seed), num_starts + 1)
    init0 = initialize_model(
        keys[0],
        fn,
        model_args=(times,),
        model_kwargs=kw,
        init_strategy=init_strategy or init_to_median(num_samples=15),
    )
    potential_fn, postprocess_fn = init0.potential_fn, init0.postprocess_fn
    z0 = init0.param_info.z
    order = [name for name in init0.model_trace if name in z0]
    order += [name for name in z0 if name not in order]
    names, perm = _model_order(z0, order)
    flat0, unravel = ravel_pytree(z0)
    dtype = flat0.dtype

    def objective(flat):
        return potential_fn(unravel(flat))

    value_and_grad = jax.jit(jax.value_and_grad(objective))

    invalid_points = [0]

    def scipy_fun(x):
        v, g = value_and_grad(jnp.asarray(x, dtype))
        v, g = float(v), np.asarray(g, dtype=np.float64)
        if not np.isfinite(v):  # an invalid parameter (e.g. an unstable drift): -inf density
            invalid_points[0] += 1
            return np.inf, np.zeros_like(g)
        return v, np.where(np.isfinite(g), g, 0.0)

    def minimize(x0):
        invalid_points[0] = 0
        res = scipy.optimize.minimize(
            scipy_fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter}
        )
        if invalid_points[0]:
            # L-BFGS-B's line search interpolates through an infinite trial value to a
            # zero step and then reports convergence where it stands (from a prior median
            # whose first trial step made a drift unstable, it "converged" at the start).
            # BFGS's Wolfe line search backtracks from such a value instead: resume there.
            polished = scipy.optimize.minimize(
                scipy_fun, res.x, jac=True, method="BFGS", options={"maxiter": maxiter}
            )
            if polished.fun <= res.fun:
                res = polished
        return res

    starts = [np.asarray(flat0, np.float64)]
    for k in keys[1:num_starts]:
        starts.append(np.asarray(jax.random.uniform(k, flat0.shape, minval=-2.0, maxval=2.0)))
    best = None
    for x0 in starts:
        res = minimize(x0)
        if best is None or res.fun < best.fun:
            best = res
    mode = jnp.asarray(best.x, dtype)
    cov = chol = None
    if laplace:
        hess = _hessian_by_gradient_differences(value_and_grad, mode)
        try:
            chol = np.linalg.cholesky(hess)
            cov = np.linalg.inv(hess)
        except np.linalg.LinAlgError:
            chol = None
            warnings.warn(
                "the Hessian at the mode is not positive definite: no Laplace approximation "
                "(the mode may be on a ridge or the optimiser did not converge)",
                stacklevel=3,
            )
    return _Mode(mode, best, unravel, postprocess_fn, value_and_grad, cov, chol, names, perm)


def _laplace_draws(found: _Mode, num_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(num_draws, k) draws of N(mode, H⁻¹): x = mode + L⁻ᵀ z, cov (L Lᵀ)⁻¹ = H⁻¹."""
    z = rng.standard_normal((num_draws, found.flat.shape[0]))
    return np.asarray(found.flat, np.float64) + np.linalg.solve(found.chol.T, z.T).T


def fit_map(
    model,
    times,
    y,
    inputs=None,
    *,
    seed: int = 0,
    num_starts: int = 4,
    laplace: bool = True,
    num_draws: int = 1000,
    maxiter: int = 1000,
    **model_kwargs: Any,
) -> MAPResult:
    """Maximum a posteriori estimate by L-BFGS, with a Laplace approximation.

    The negative log joint density in NumPyro's unconstrained space is minimised with
    ``scipy.optimize.minimize(method="L-BFGS-B")`` on the jitted exact gradient, from
    ``num_starts`` initial points (the prior median, then uniform draws in (-2, 2) on
    the unconstrained scale); the best optimum wins. The Laplace approximation is the
    Gaussian N(mode, H⁻¹) in the unconstrained space, H the Hessian by central
    differences of the exact (already compiled) gradient; its draws are mapped back to
    the constrained space. ``cov`` is labelled by ``names`` in the model's order.

    This is not maximum likelihood, even with flat priors: the density maximised is
    the posterior in the unconstrained space, which includes the log-Jacobian of each
    transform. With an improper uniform prior on a positive parameter (``exp``
    transform) the mode moves from the MLE (a normal sd comes out as √(Σy²/(n−1))
    instead of √(Σy²/n)), and ``cov`` is on the unconstrained scale. For maximum
    likelihood with standard errors on the natural scale use
    :func:`kalmanad.mle.fit_mle`.

    Where a run meets an invalid point (density -inf, e.g. a trial step that makes
    the drift unstable), it is resumed with BFGS from where L-BFGS-B stopped:
    L-BFGS-B's line search does not recover from an infinite trial value.
    """
    found = _find_mode(
        numpyro_model_fn(model),
        times,
        observation_kwargs(y, inputs, model_kwargs),
        seed=seed,
        num_starts=num_starts,
        laplace=laplace,
        maxiter=maxiter,
        init_strategy=_init_strategy(model),
    )
    unconstrained = found.unravel(found.flat)
    draws = None
    if found.cov is not None and num_draws:
        flat = _laplace_draws(found, num_draws, np.random.default_rng(seed))
        dtype = found.flat.dtype
        draws = jax.vmap(lambda f: found.postprocess_fn(found.unravel(jnp.asarray(f, dtype))))(flat)
    return MAPResult(
        params=found.postprocess_fn(unconstrained),
        unconstrained=unconstrained,
        log_density=-float(found.result.fun),
        cov=None if found.cov is None else found.cov[np.ix_(found.perm, found.perm)],
        draws=draws,
        success=bool(found.result.success),
        message=str(found.result.message),
        names=found.names,
    )


def _posterior_samples(posterior) -> dict:
    """A flat dict of draws from an InferenceData, a MAPResult or a dict."""
    if isinstance(posterior, MAPResult):
        if posterior.draws is None:
            return jax.tree.map(lambda v: jnp.asarray(v)[None], posterior.params)
        return posterior.draws
    group = getattr(posterior, "posterior", None)
    if group is not None:
        return {
            k: jnp.asarray(v.values.reshape((-1, *v.values.shape[2:])))
            for k, v in group.data_vars.items()
        }
    return posterior


def _linear_site(draws: dict, site: str):
    d = draws[site]
    if isinstance(d, NonlinearSDEDistribution):
        raise TypeError(
            f"site {site!r} is a nonlinear SDE: smoothing and forecasting are available for "
            "linear SDEs only (use kalmanad.nonlinear.nonlinear_filter for filtered moments)"
        )
    return d


def smoothed_states(
    model,
    posterior,
    times,
    y,
    inputs=None,
    *,
    site: str = "y",
    max_draws: int | None = 200,
    **model_kwargs,
):
    """RTS-smoothed latent states at each posterior draw.

    Returns ``(means, covs)`` with shapes (draws, [subjects,] T, n) and (…, T, n, n).
    ``max_draws`` thins the posterior evenly to bound the cost.
    """
    samples = _thin(_posterior_samples(posterior), max_draws)
    y = np.asarray(y)

    def one(draw):
        d = _linear_site(sde_draws_single(model, draw, times, y, inputs, **model_kwargs), site)
        res = rts_smoother(d.model, d.times, y, d.inputs)
        return res.smoothed_mean, res.smoothed_cov

    return jax.jit(jax.vmap(one))(samples)


def forecast_draws(
    model,
    posterior,
    times,
    y,
    new_times,
    inputs=None,
    new_inputs=None,
    *,
    site: str = "y",
    max_draws: int | None = 200,
    **model_kwargs,
):
    """Forecasts at ``new_times`` (after the last observation) at each posterior draw.

    Returns the :class:`kalmanad.filter.Forecast` fields with a leading draw axis:
    observation means (draws, [S,] T_new, m) and covariances (…, m, m), and the same
    for the states. Predictive bands combine these over draws (a Gaussian mixture).
    """
    samples = _thin(_posterior_samples(posterior), max_draws)
    y = np.asarray(y)

    def one(draw):
        d = _linear_site(sde_draws_single(model, draw, times, y, inputs, **model_kwargs), site)
        return forecast(d.model, d.times, y, new_times, inputs=d.inputs, new_inputs=new_inputs)

    return jax.jit(jax.vmap(one))(samples)


def discrete_time_effects(drift, dts):
    """Discrete-time auto- and cross-effects exp(A Δt) over a grid of intervals.

    ctsem's signature output: entry [..., k, i, j] is the expected change in state i
    at time t + Δt_k per unit of state j at time t, all else held at zero.

    Args:
        drift: (..., n, n) drift matrices (e.g. posterior draws).
        dts: (K,) time intervals.

    Returns:
        (..., K, n, n) array of e^{A Δt_k}.
    """
    drift = jnp.asarray(drift)
    dts = jnp.asarray(dts, drift.dtype)
    return expm(drift[..., None, :, :] * dts[:, None, None])


def _thin(samples: dict, max_draws: int | None) -> dict:
    n = len(next(iter(jax.tree.leaves(samples))))
    if max_draws is None or n <= max_draws:
        return samples
    idx = np.linspace(0, n - 1, max_draws).round().astype(int)
    return jax.tree.map(lambda v: jnp.asarray(v)[idx], samples)
