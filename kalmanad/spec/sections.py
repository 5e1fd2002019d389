"""The sections of a spec other than its matrices: names, parameters, derived
quantities, the initial state, random effects, covariates and the data set.

Each ``parse_*`` function validates one section (errors name the file, section and
key through the :class:`~kalmanad.spec.cells.Parser`) and returns plain values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpyro.distributions as dist

from kalmanad.spec.cells import Parser
from kalmanad.spec.errors import suggest
from kalmanad.spec.expressions import CONSTANTS, FUNCTIONS, Expression, check_identifier
from kalmanad.spec.priors import Prior, parse_call, parse_prior, positive_support

__all__ = [
    "DATA_KEYS",
    "DYNAMICS_KEYS",
    "INITIAL_KEYS",
    "MEASUREMENT_KEYS",
    "MODEL_KEYS",
    "SECTIONS",
    "Covariates",
    "DataSpec",
    "RandomEffects",
    "check_keys",
    "check_sections",
    "parse_covariates",
    "parse_data",
    "parse_derived",
    "parse_initial_state",
    "parse_names",
    "parse_parameters",
    "parse_random_effects",
]

SECTIONS = (
    "model",
    "parameters",
    "derived",
    "dynamics",
    "measurement",
    "initial",
    "random_effects",
    "covariates",
    "data",
    "equations",
)
MODEL_KEYS = (
    "name",
    "title",
    "description",
    "latent",
    "manifest",
    "inputs",
    "time_unit",
    "references",
)
DYNAMICS_KEYS = (
    "drift",
    "intercept",
    "diffusion",
    "diffusion_sd",
    "input_effect",
    "impulse_effect",
)
MEASUREMENT_KEYS = ("loadings", "intercept", "noise", "noise_sd", "input_effect")
INITIAL_KEYS = ("state", "mean", "cov", "sd", "diffuse_scale")
DATA_KEYS = (
    "file",
    "time",
    "subject",
    "columns",
    "description",
    "source",
    "license",
    "truth",
    "seed",
)
# LinearSDE / ctsem names people may try, and the key they mean.
_ALIASES = {
    "observation": "loadings",
    "lambda": "loadings",
    "observation_noise": "noise",
    "manifestvar": "noise_sd",
    "drift_intercept": "intercept",
    "cint": "intercept",
    "observation_intercept": "intercept",
    "manifestmeans": "intercept",
    "observation_input_effect": "input_effect",
    "tdpredeffect": "impulse_effect",
    "initial_mean": "mean",
    "initial_cov": "cov",
    "t0means": "mean",
    "t0var": "sd",
    "priors": "parameters",
    "params": "parameters",
    "transformed": "derived",
}


def check_keys(parser, table, allowed, where):
    if not isinstance(table, Mapping):
        raise parser.error(where, f"expected a table, got {table!r}")
    for k in table:
        if k not in allowed:
            hint = suggest(k, allowed)
            if not hint and k.lower() in _ALIASES and _ALIASES[k.lower()] in allowed:
                hint = f" (did you mean {_ALIASES[k.lower()]!r}?)"
            raise parser.error(where, f"unknown key {k!r}{hint}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class RandomEffects:
    parameters: tuple
    sd_priors: dict  # name -> Prior
    lkj: float | None  # LKJ concentration, None = independent


@dataclass(frozen=True)
class Covariates:
    names: tuple
    effects: dict  # param -> tuple of covariate names
    prior: Prior


@dataclass(frozen=True)
class DataSpec:
    """The ``[data]`` section: the default data file and how its columns map.

    Attributes:
        file: path of the CSV (relative to the spec's folder), or None.
        time: name of the time column.
        subject: name of the subject column, or None.
        columns: variable name -> CSV column for manifest, input and covariate
            variables whose column name differs.
        description, source, license: free text about the data set.
        truth: the true parameter values of simulated data (site name -> value).
        seed: the seed it was simulated with, or None.
    """

    file: str | None = None
    time: str = "time"
    subject: str | None = None
    columns: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""
    license: str = ""
    truth: dict = field(default_factory=dict)
    seed: int | None = None


def check_sections(p: Parser, d) -> None:
    """A spec is a table whose keys are known sections (with a did-you-mean)."""
    if not isinstance(d, Mapping):
        raise p.error(None, f"a spec must be a table/dict, got {type(d).__name__}")
    for key in d:
        if key not in SECTIONS:
            hint = suggest(key, SECTIONS)
            if not hint and key.lower() in _ALIASES:
                hint = f" (did you mean {_ALIASES[key.lower()]!r}?)"
            raise p.error(None, f"unknown section [{key}]{hint}; sections: {', '.join(SECTIONS)}")


# ------------------------------------------------------------------- names, parameters


def parse_names(p: Parser, names, where, what, required) -> tuple:
    """A list of distinct identifiers (variables, covariates)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise p.error(where, f"expected a list of names, got {names!r}")
    if required and not names:
        raise p.error(where, f"needs at least one {what}")
    out = tuple(check_identifier(x, what, p.failer(where)) for x in names)
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        raise p.error(where, f"duplicate name(s): {', '.join(dup)}")
    return out


def _check_new_name(p: Parser, name, where) -> None:
    check_identifier(name, "name", p.failer(where))
    if name in FUNCTIONS or name in CONSTANTS:
        raise p.error(where, f"{name!r} is a built-in function or constant; choose another name")


def parse_parameters(p: Parser, parameters) -> tuple[dict, dict, dict, dict]:
    """``[parameters]``: free parameters with priors, and fixed ones with values.

    A free parameter's table may give ``start``, a start value in its prior's support
    (used by :meth:`ModelSpec.init_strategy`).

    Returns:
        ``(priors, constants, descriptions, starts)``: name -> :class:`Prior`, name ->
        float, name -> description (every parameter) and name -> start value (the free
        parameters that give one), each in spec order.
    """
    if not isinstance(parameters, Mapping) or not parameters:
        raise p.error("[parameters]", "give at least one parameter with its prior")
    priors: dict[str, Prior] = {}
    constants: dict[str, float] = {}
    descriptions: dict[str, str] = {}
    starts: dict[str, float] = {}
    for pname, entry in parameters.items():
        where = f"[parameters] {pname}"
        _check_new_name(p, pname, where)
        desc, start = "", None
        if isinstance(entry, Mapping) and not isinstance(entry, dist.Distribution):
            check_keys(p, entry, ("prior", "value", "description", "start"), where)
            if ("prior" in entry) == ("value" in entry):
                raise p.error(where, "give exactly one of 'prior' or 'value'")
            if "start" in entry and "prior" not in entry:
                raise p.error(f"{where}.start", "a start value is for a free parameter (a prior)")
            desc = str(entry.get("description", ""))
            start = entry.get("start")
            entry = entry.get("prior", entry.get("value"))
        if isinstance(entry, (int, float)) and not isinstance(entry, bool):
            if not math.isfinite(entry):
                raise p.error(where, f"a fixed value must be finite, got {entry!r}")
            constants[pname] = float(entry)
        else:
            priors[pname] = parse_prior(entry, source=p.source, where=where)
        if start is not None:
            starts[pname] = _start_value(p, start, priors[pname], f"{where}.start")
        descriptions[pname] = desc
    if not priors:
        raise p.error("[parameters]", "every parameter is fixed: nothing to infer")
    return priors, constants, descriptions, starts


def _start_value(p: Parser, value, prior: Prior, where) -> float:
    """A start value: a finite number inside the prior's support."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise p.error(where, f"a start value must be a finite number, got {value!r}")
    if not bool(prior.make().support(float(value))):
        raise p.error(where, f"start value {value:g} is outside the support of {prior.text}")
    return float(value)


def parse_derived(p: Parser, derived, parameters) -> tuple[dict, dict, list]:
    """``[derived]``: named expressions of parameters and of each other.

    Args:
        derived: the section (None for none).
        parameters: the names of the free and fixed parameters.

    Returns:
        ``(expressions, descriptions, order)``: name -> :class:`Expression`, name ->
        description, and the names in an order that evaluates dependencies first.
    """
    derived = dict(derived or {})
    known = set(parameters) | set(derived)
    expressions: dict[str, Expression] = {}
    descriptions: dict[str, str] = {}
    for dname, entry in derived.items():
        where = f"[derived] {dname}"
        if dname in parameters:
            raise p.error(where, f"{dname!r} is already a parameter")
        _check_new_name(p, dname, where)
        desc = ""
        if isinstance(entry, Mapping):
            check_keys(p, entry, ("expression", "description"), where)
            if "expression" not in entry:
                raise p.error(where, "missing 'expression'")
            desc, entry = str(entry.get("description", "")), entry["expression"]
        expressions[dname] = p.expr(entry, known - {dname}, where)
        descriptions[dname] = desc
    return expressions, descriptions, _toposort(p, expressions)


def _toposort(p: Parser, derived: dict) -> list:
    order, state = [], {}

    def visit(name, chain):
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = " -> ".join([*chain[chain.index(name) :], name])
            raise p.error(f"[derived] {name}", f"circular definition: {cycle}")
        state[name] = "active"
        for dep in sorted(derived[name].names):
            if dep in derived:
                visit(dep, [*chain, name])
        state[name] = "done"
        order.append(name)

    for name in derived:
        visit(name, [])
    return order


# ----------------------------------------------------------------------- initial state


def parse_initial_state(p: Parser, initial) -> tuple[dict, str, float]:
    """``[initial]``'s keys, its kind of start and diffuse scale (not its matrices).

    Returns:
        ``(the section as a dict, state, diffuse_scale)``.
    """
    initial = dict(initial or {})
    check_keys(p, initial, INITIAL_KEYS, "[initial]")
    if "cov" in initial and "sd" in initial:
        raise p.error("[initial]", "give 'cov' or 'sd', not both")
    has_cov = "cov" in initial or "sd" in initial
    state = initial.get("state", "known" if has_cov else "stationary")
    if state not in ("stationary", "diffuse", "known"):
        raise p.error(
            "[initial] state", f"must be 'stationary', 'diffuse' or 'known', got {state!r}"
        )
    if state == "known" and not has_cov:
        raise p.error("[initial]", "a known initial state needs 'cov' or 'sd' (and 'mean')")
    if state != "known" and has_cov:
        raise p.error("[initial]", f"a {state} initial state takes no 'cov'/'sd' (it is implied)")
    if "diffuse_scale" in initial and state != "diffuse":
        raise p.error("[initial] diffuse_scale", "only applies to state = 'diffuse'")
    scale = initial.get("diffuse_scale", 1e6)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise p.error("[initial] diffuse_scale", f"must be a positive number, got {scale!r}")
    return initial, state, float(scale)


# ------------------------------------------------------------------------- hierarchy


def _check_free(p: Parser, name, where, priors, constants) -> None:
    """``name`` is a free parameter (it may vary by subject)."""
    if name in constants:
        raise p.error(where, f"{name!r} is fixed; it cannot vary")
    if name not in priors:
        raise p.error(where, f"unknown parameter {name!r}{suggest(str(name), priors)}")


def parse_random_effects(p: Parser, table, priors, constants) -> RandomEffects | None:
    """``[random_effects]`` (None when absent); ``priors``/``constants`` of the parameters."""
    if table is None:
        return None
    where = "[random_effects]"
    check_keys(p, table, ("parameters", "sd_prior", "correlation_prior"), where)
    names = table.get("parameters")
    if not isinstance(names, list) or not names:
        raise p.error(f"{where} parameters", "give a non-empty list of parameter names")
    for x in names:
        _check_free(p, x, f"{where} parameters", priors, constants)
    if len(set(names)) != len(names):
        raise p.error(f"{where} parameters", "a parameter is listed twice")
    sds = _sd_priors(p, table.get("sd_prior", "HalfNormal(1)"), names, f"{where} sd_prior")
    lkj = _lkj(p, table.get("correlation_prior", "LKJ(2)"), f"{where} correlation_prior")
    return RandomEffects(tuple(names), sds, lkj)


def _sd_priors(p: Parser, sd, names, where) -> dict:
    """The prior of each random effect's standard deviation (one, or a table by name)."""
    if isinstance(sd, Mapping):
        for key in sd:
            if key not in names:
                raise p.error(where, f"{key!r} has no random effect{suggest(key, names)}")
        default = "HalfNormal(1)"
        sds = {
            x: parse_prior(sd.get(x, default), source=p.source, where=f"{where}.{x}") for x in names
        }
    else:
        prior = parse_prior(sd, source=p.source, where=where)
        sds = dict.fromkeys(names, prior)
    for x, prior in sds.items():
        if not positive_support(prior):
            raise p.error(where, f"the prior of {x}_sd must be positive, got {prior.text!r}")
    return sds


def _lkj(p: Parser, corr, where) -> float | None:
    """The LKJ concentration of ``correlation_prior``, or None for ``"none"``."""
    if isinstance(corr, str) and corr.strip().lower() == "none":
        return None
    if not isinstance(corr, str):
        raise p.error(where, f"expected 'LKJ(eta)' or 'none', got {corr!r}")
    _, args, kwargs = parse_call(corr, {"LKJ": None}, "correlation prior", p.failer(where))
    if kwargs or len(args) != 1 or not args[0] > 0:
        raise p.error(where, f"expected LKJ(eta) with one concentration eta > 0, got {corr!r}")
    return args[0]


def parse_covariates(p: Parser, table, priors, constants, variables) -> Covariates | None:
    """``[covariates]`` (None when absent); ``variables``: the model's variable names."""
    if table is None:
        return None
    where = "[covariates]"
    check_keys(p, table, ("names", "effects", "prior"), where)
    effects, order = _effects(p, table.get("effects"), f"{where} effects", priors, constants)
    if "names" in table:
        names = parse_names(p, table["names"], f"{where} names", "covariate", required=True)
        for c in order:
            if c not in names:
                raise p.error(
                    f"{where} effects", f"covariate {c!r} is not in names{suggest(c, names)}"
                )
        for c in names:
            if c not in order:
                raise p.error(f"{where} names", f"covariate {c!r} acts on no parameter")
    else:
        names = tuple(order)
    clash = set(names) & set(variables)
    if clash:
        raise p.error(f"{where}", f"covariate name(s) also used as variables: {sorted(clash)}")
    prior = parse_prior(table.get("prior", "Normal(0, 1)"), source=p.source, where=f"{where} prior")
    return Covariates(names, effects, prior)


def _effects(p: Parser, effects, where, priors, constants) -> tuple[dict, list]:
    """``effects``: parameter -> covariates acting on it, and the covariates in order."""
    if not isinstance(effects, Mapping) or not effects:
        raise p.error(where, "give a table parameter = [covariates]")
    out, order = {}, []
    for param, covs in effects.items():
        _check_free(p, param, where, priors, constants)
        if isinstance(covs, str):
            covs = [covs]
        if not isinstance(covs, list) or not covs:
            raise p.error(f"{where}.{param}", f"expected a list of covariates, got {covs!r}")
        for c in covs:
            check_identifier(c, "covariate", p.failer(f"{where}.{param}"))
            if c not in order:
                order.append(c)
        if len(set(covs)) != len(covs):
            raise p.error(f"{where}.{param}", "a covariate is listed twice")
        out[param] = tuple(covs)
    return out, order


# ------------------------------------------------------------------------------ data


def parse_data(p: Parser, table, variables) -> DataSpec:
    """``[data]``; ``variables``: the manifest, input and covariate names."""
    if table is None:
        return DataSpec()
    check_keys(p, table, DATA_KEYS, "[data]")
    cols = dict(table.get("columns", {}))
    for var, c in cols.items():
        if var not in variables:
            raise p.error(
                "[data] columns",
                f"{var!r} is not a manifest, input or covariate{suggest(var, variables)}",
            )
        if not isinstance(c, str):
            raise p.error(f"[data] columns.{var}", f"expected a column name, got {c!r}")
    subject = table.get("subject")
    truth = dict(table.get("truth", {}))
    for key in ("file", "time", "subject", "description", "source", "license"):
        if key in table and not isinstance(table[key], str):
            raise p.error(f"[data] {key}", f"expected a string, got {table[key]!r}")
    return DataSpec(
        file=table.get("file"),
        time=table.get("time", "time"),
        subject=subject,
        columns=cols,
        description=table.get("description", ""),
        source=table.get("source", ""),
        license=table.get("license", ""),
        truth=truth,
        seed=table.get("seed"),
    )
