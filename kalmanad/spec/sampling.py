"""The NumPyro side of a spec: priors, subject-level parameters and data layouts."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.transforms import biject_to

from kalmanad.spec.data import to_panel

__all__ = ["covariate_arrays", "observation_arrays", "sample_parameters"]


def sample_parameters(spec, n_subjects=None, covariates=None) -> dict:
    """NumPyro: sample the priors (and subject effects); return build()'s params.

    ``covariates``: name -> (S,) arrays (see :func:`covariate_arrays`), or None.
    """
    priors = spec.priors
    values = {x: numpyro.sample(x, prior) for x, prior in priors.items()}
    if n_subjects is None or not spec.is_hierarchical:
        return values
    s = int(n_subjects)
    u = {}  # unconstrained subject values of varying parameters
    transforms = {}
    for x in spec.varying_parameters:
        t = biject_to(priors[x].support)
        transforms[x] = t
        u[x] = jnp.broadcast_to(t.inv(values[x]), (s,))
    re = spec.random_effects
    if re is not None:
        r = len(re.parameters)
        sd = jnp.stack([numpyro.sample(f"{x}_sd", re.sd_priors[x].make()) for x in re.parameters])
        if re.lkj is not None and r > 1:
            chol = numpyro.sample("re_corr_cholesky", dist.LKJCholesky(r, re.lkj))
            numpyro.deterministic("re_corr", chol @ chol.T)
            scale_tril = sd[:, None] * chol
        else:
            scale_tril = jnp.diag(sd)
        with numpyro.plate("subjects", s):
            z = numpyro.sample("re_z", dist.Normal(0.0, 1.0).expand([r]).to_event(1))
        delta = z @ scale_tril.T  # (S, R): delta_s = diag(sd) L z_s
        for i, x in enumerate(re.parameters):
            u[x] = u[x] + delta[:, i]
    if spec.covariates is not None:
        if covariates is None:
            raise ValueError(
                f"{spec.name}: the model has covariates {', '.join(spec.covariate_names)}: "
                "pass covariates"
            )
        for x, covs in spec.covariates.effects.items():
            for c in covs:
                beta = numpyro.sample(f"{c}_on_{x}", spec.covariates.prior.make())
                u[x] = u[x] + beta * covariates[c]
    for x in spec.varying_parameters:
        values[x] = numpyro.deterministic(f"{x}_subject", transforms[x](u[x]))
    return values


def covariate_arrays(spec, covariates, n_subjects) -> dict | None:
    """Per-subject covariates as name -> (S,) float arrays (None without covariates)."""
    if not spec.covariates:
        return None
    if covariates is None:
        raise ValueError(
            f"{spec.name}: the model needs covariates {', '.join(spec.covariate_names)} "
            f"for each of the {n_subjects} subjects"
        )
    if isinstance(covariates, Mapping):
        missing = [c for c in spec.covariate_names if c not in covariates]
        if missing:
            raise ValueError(f"{spec.name}: missing covariate(s) {', '.join(missing)}")
        out = {c: jnp.asarray(covariates[c]) for c in spec.covariate_names}
    else:
        arr = jnp.asarray(covariates)
        if arr.ndim != 2 or arr.shape[1] != len(spec.covariate_names):
            raise ValueError(
                f"covariates must be a mapping or an (S, {len(spec.covariate_names)}) array "
                f"with columns {', '.join(spec.covariate_names)}, got shape {arr.shape}"
            )
        out = {c: arr[:, i] for i, c in enumerate(spec.covariate_names)}
    for c, v in out.items():
        if v.shape != (n_subjects,):
            raise ValueError(
                f"covariate {c!r} must have one value per subject, shape ({n_subjects},), "
                f"got {v.shape}"
            )
        if not jnp.issubdtype(v.dtype, jnp.floating):
            out[c] = v.astype(jnp.result_type(float))
    return out


def observation_arrays(spec, times, y, inputs, subject, covariates):
    """The data of :meth:`ModelSpec.numpyro_model` in a layout the distribution takes.

    Long-format data with ``subject`` ids are packed with :func:`to_panel`; times and
    inputs become float arrays (concrete ones stay numpy) and ``y`` is checked.

    Returns:
        ``(times, y, inputs, covariates, n_subjects)``; n_subjects is None for one
        series.
    """
    if subject is not None:
        times, y, inputs, covariates = _panel(spec, times, y, inputs, subject, covariates)
    # Concrete times stay numpy: the distribution then finds the distinct step
    # sizes once, outside the traced computation.
    times = times if isinstance(times, jax.Array) else np.asarray(times, dtype=float)
    if inputs is not None and not isinstance(inputs, jax.Array):
        inputs = np.asarray(inputs, dtype=float)
    if times.ndim not in (1, 2):
        raise ValueError(f"times must be (T,) or (S, T), got shape {times.shape}")
    n_subjects = times.shape[0] if times.ndim == 2 else None
    if spec.is_hierarchical and n_subjects is None:
        varying = ", ".join(spec.varying_parameters)
        raise ValueError(
            f"{spec.name} has subject-varying parameters ({varying}): "
            "pass several subjects (subject ids, or (S, T) times)"
        )
    if y is not None:
        y = jnp.asarray(y)
        expected = (*times.shape, spec.m)
        if y.shape != expected:
            raise ValueError(
                f"y must have shape {expected} (times {times.shape}, m={spec.m} manifest "
                f"variables {', '.join(spec.manifest)}), got {y.shape}"
            )
    return times, y, inputs, covariates, n_subjects


def _panel(spec, times, y, inputs, subject, covariates):
    """Long-format data (times (N,), subject ids) as padded per-subject arrays."""
    if jnp.ndim(times) != 1:
        raise ValueError("with subject ids, times must be (N,) in long format")
    n_rows = np.shape(times)[0]
    y_long = np.full((n_rows, spec.m), np.nan) if y is None else y
    cov_long = None
    if covariates is not None:
        if not isinstance(covariates, Mapping):
            raise ValueError("with subject ids, covariates must be a mapping name -> (N,)")
        cov_long = {c: covariates[c] for c in spec.covariate_names if c in covariates}
    panel = to_panel(times, y_long, subject, inputs, cov_long)
    y = None if y is None else panel.y
    covariates = panel.covariates if covariates is not None else None
    return panel.times, y, panel.inputs, covariates
