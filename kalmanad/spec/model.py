"""The model spec: :class:`ModelSpec` parses and validates a spec and builds from it."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.transforms import biject_to

from kalmanad.model import LinearSDE
from kalmanad.spec.cells import Cells, Companion, Field, Parser, StationarySD
from kalmanad.spec.data import DataError, ModelData, first_row, read_csv, to_panel
from kalmanad.spec.errors import SpecError, suggest
from kalmanad.spec.expressions import (
    ANY,
    CONSTANTS,
    FUNCTIONS,
    NONNEG,
    POS,
    Expression,
    check_identifier,
    sign,
)
from kalmanad.spec.priors import Prior, parse_call, parse_prior, positive_support

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["DataSpec", "ModelSpec"]

_SECTIONS = (
    "model",
    "parameters",
    "derived",
    "dynamics",
    "measurement",
    "initial",
    "random_effects",
    "covariates",
    "data",
)
_MODEL_KEYS = (
    "name",
    "title",
    "description",
    "latent",
    "manifest",
    "inputs",
    "time_unit",
    "references",
)
_DYNAMICS_KEYS = (
    "drift",
    "intercept",
    "diffusion",
    "diffusion_sd",
    "input_effect",
    "impulse_effect",
)
_MEASUREMENT_KEYS = ("loadings", "intercept", "noise", "noise_sd", "input_effect")
_INITIAL_KEYS = ("state", "mean", "cov", "sd", "diffuse_scale")
_DATA_KEYS = (
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


def _check_keys(parser, table, allowed, where):
    if not isinstance(table, Mapping):
        raise parser.error(where, f"expected a table, got {table!r}")
    for k in table:
        if k not in allowed:
            hint = suggest(k, allowed)
            if not hint and k.lower() in _ALIASES and _ALIASES[k.lower()] in allowed:
                hint = f" (did you mean {_ALIASES[k.lower()]!r}?)"
            raise parser.error(where, f"unknown key {k!r}{hint}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class _RandomEffects:
    parameters: tuple
    sd_priors: dict  # name -> Prior
    lkj: float | None  # LKJ concentration, None = independent


@dataclass(frozen=True)
class _Covariates:
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


class ModelSpec:
    """A parsed and validated continuous-time model spec.

    Build one from a TOML file (:func:`load_model`), a dict with the TOML layout
    (:meth:`from_dict`), or keyword sections::

        spec = ModelSpec(
            latent=["x"], manifest=["y"],
            parameters={"theta": "LogNormal(0, 1)", "sigma": "HalfNormal(1)",
                        "noise": "HalfNormal(1)"},
            dynamics={"drift": [["-theta"]], "diffusion_sd": [["sigma"]]},
            measurement={"loadings": [[1]], "noise_sd": [["noise"]]},
        )
        model = spec.build({"theta": 0.5, "sigma": 1.0, "noise": 0.1})

    Priors may also be NumPyro distribution objects. See the module docstring for the
    format of every section.

    Attributes:
        name, title, description: text.
        latent, manifest, inputs: variable names (tuples); n, m, k their counts.
        parameters: names of the free (sampled) parameters, in spec order.
        constants: fixed parameters, name -> value.
        derived: derived quantities, name -> :class:`Expression`.
        data: the :class:`DataSpec`.
        source: the spec file, or None.
    """

    def __init__(
        self,
        *,
        latent: Sequence[str],
        manifest: Sequence[str],
        parameters: Mapping[str, Any],
        dynamics: Mapping[str, Any],
        measurement: Mapping[str, Any],
        inputs: Sequence[str] = (),
        derived: Mapping[str, Any] | None = None,
        initial: Mapping[str, Any] | None = None,
        random_effects: Mapping[str, Any] | None = None,
        covariates: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        name: str | None = None,
        title: str = "",
        description: str = "",
        time_unit: str = "",
        references: Sequence[str] = (),
        source: str | Path | None = None,
    ):
        p = Parser(str(source) if source is not None else "<spec>")
        self.source = Path(source) if source is not None and str(source) != "<dict>" else None
        self._base_dir = self.source.parent if self.source is not None else Path.cwd()
        self.name = name or (self.source.stem if self.source is not None else "model")
        self.title = str(title)
        self.description = str(description)
        self.time_unit = str(time_unit)
        self.references = tuple(references)

        self.latent = self._names(p, latent, "[model] latent", "latent variable", required=True)
        self.manifest = self._names(
            p, manifest, "[model] manifest", "manifest variable", required=True
        )
        self.inputs = self._names(p, inputs, "[model] inputs", "input", required=False)
        clash = set(self.latent) & set(self.manifest) | set(self.inputs) & (
            set(self.latent) | set(self.manifest)
        )
        if clash:
            raise p.error("[model]", f"variable name(s) used twice: {', '.join(sorted(clash))}")
        n, m, k = len(self.latent), len(self.manifest), len(self.inputs)
        self.n, self.m, self.k = n, m, k
        p.declare_variables(self.latent, self.manifest, self.inputs)

        # -- parameters -------------------------------------------------------------
        if not isinstance(parameters, Mapping) or not parameters:
            raise p.error("[parameters]", "give at least one parameter with its prior")
        self._priors: dict[str, Prior] = {}
        self.constants: dict[str, float] = {}
        self.parameter_descriptions: dict[str, str] = {}
        for pname, entry in parameters.items():
            where = f"[parameters] {pname}"
            self._check_new_name(p, pname, where)
            desc = ""
            if isinstance(entry, Mapping) and not isinstance(entry, dist.Distribution):
                _check_keys(p, entry, ("prior", "value", "description"), where)
                if ("prior" in entry) == ("value" in entry):
                    raise p.error(where, "give exactly one of 'prior' or 'value'")
                desc = str(entry.get("description", ""))
                entry = entry.get("prior", entry.get("value"))
            if isinstance(entry, (int, float)) and not isinstance(entry, bool):
                if not math.isfinite(entry):
                    raise p.error(where, f"a fixed value must be finite, got {entry!r}")
                self.constants[pname] = float(entry)
            else:
                self._priors[pname] = parse_prior(entry, source=p.source, where=where)
            self.parameter_descriptions[pname] = desc
        self.parameters = tuple(self._priors)
        if not self.parameters:
            raise p.error("[parameters]", "every parameter is fixed: nothing to infer")

        # -- derived ------------------------------------------------------------------
        derived = dict(derived or {})
        names_all = set(self.parameters) | set(self.constants) | set(derived)
        self.derived: dict[str, Expression] = {}
        self.derived_descriptions: dict[str, str] = {}
        for dname, entry in derived.items():
            where = f"[derived] {dname}"
            if dname in self._priors or dname in self.constants:
                raise p.error(where, f"{dname!r} is already a parameter")
            self._check_new_name(p, dname, where)
            desc = ""
            if isinstance(entry, Mapping):
                _check_keys(p, entry, ("expression", "description"), where)
                if "expression" not in entry:
                    raise p.error(where, "missing 'expression'")
                desc, entry = str(entry.get("description", "")), entry["expression"]
            self.derived[dname] = p.expr(entry, names_all - {dname}, where)
            self.derived_descriptions[dname] = desc
        self._derived_order = self._toposort(p)

        # -- matrices -----------------------------------------------------------------
        known = names_all
        self._fields: dict[str, Field] = {}
        lat = f"latent: {', '.join(self.latent)}"
        man = f"manifest: {', '.join(self.manifest)}"
        inp = f"inputs: {', '.join(self.inputs)}"
        _check_keys(p, dynamics, _DYNAMICS_KEYS, "[dynamics]")
        _check_keys(p, measurement, _MEASUREMENT_KEYS, "[measurement]")

        def add(section, table, key, target, shape, labels, factor=False, required=False):
            where = f"[{section}] {key}"
            if key not in table:
                if required:
                    raise p.error(f"[{section}]", f"missing {key!r}")
                return
            value = table[key]
            spec = p.matrix(
                value,
                shape,
                where,
                known,
                labels=labels,
                free_cols=factor,
                key=key,
            )
            self._fields[target] = Field(key, target, where, spec, factor, value)

        def one_of(section, table, a, b, required):
            if a in table and b in table:
                raise p.error(f"[{section}]", f"give {a!r} or {b!r}, not both")
            if required and a not in table and b not in table:
                raise p.error(f"[{section}]", f"missing {a!r} (or {b!r})")

        add("dynamics", dynamics, "drift", "drift", (n, n), (lat, lat), required=True)
        add("dynamics", dynamics, "intercept", "drift_intercept", (n,), (lat, ""))
        one_of("dynamics", dynamics, "diffusion", "diffusion_sd", True)
        add("dynamics", dynamics, "diffusion", "diffusion", (n, n), (lat, lat))
        add("dynamics", dynamics, "diffusion_sd", "diffusion", (n, n), (lat, ""), factor=True)
        add(
            "measurement", measurement, "loadings", "observation", (m, n), (man, lat), required=True
        )
        add("measurement", measurement, "intercept", "observation_intercept", (m,), (man, ""))
        one_of("measurement", measurement, "noise", "noise_sd", True)
        add("measurement", measurement, "noise", "observation_noise", (m, m), (man, man))
        add(
            "measurement",
            measurement,
            "noise_sd",
            "observation_noise",
            (m, m),
            (man, ""),
            factor=True,
        )
        for section, table, key, target, rows in (
            ("dynamics", dynamics, "input_effect", "input_effect", n),
            ("dynamics", dynamics, "impulse_effect", "impulse_effect", n),
            ("measurement", measurement, "input_effect", "observation_input_effect", m),
        ):
            if key in table and k == 0:
                raise p.error(
                    f"[{section}] {key}", "the model declares no inputs: add [model] inputs = [...]"
                )
            labels = (lat if rows == n else man, inp)
            add(section, table, key, target, (rows, k), labels)

        # -- initial state ------------------------------------------------------------
        initial = dict(initial or {})
        _check_keys(p, initial, _INITIAL_KEYS, "[initial]")
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
            raise p.error(
                "[initial]", f"a {state} initial state takes no 'cov'/'sd' (it is implied)"
            )
        if "diffuse_scale" in initial and state != "diffuse":
            raise p.error("[initial] diffuse_scale", "only applies to state = 'diffuse'")
        self.initial_state = state
        scale = initial.get("diffuse_scale", 1e6)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise p.error("[initial] diffuse_scale", f"must be a positive number, got {scale!r}")
        self.diffuse_scale = float(scale)
        add("initial", initial, "mean", "initial_mean", (n,), (lat, ""))
        add("initial", initial, "cov", "initial_cov", (n, n), (lat, lat))
        add("initial", initial, "sd", "initial_cov", (n, n), (lat, ""), factor=True)

        # -- stability guarantee of companion factors ------------------------------------
        for f in self._fields.values():
            if isinstance(f.spec, Companion):
                for where, e in f.spec.positive_cells:
                    if sign(e.tree, self._name_sign) != POS:
                        raise p.error(
                            where,
                            f"AR factor coefficient {e.text!r} must be positive for every "
                            "parameter value so that every draw is stable: use a positive "
                            "constant, a parameter with a positive prior (LogNormal, "
                            "HalfNormal, Gamma, ...) or exp(...)/softplus(...); or give "
                            "'coefficients' for an unconstrained polynomial",
                        )

        self._check_variances(p)
        self._check_constant_drift(p)

        # -- unused parameters ---------------------------------------------------------
        used = set()
        for f in self._fields.values():
            used |= f.names
        for e in self.derived.values():
            used |= e.names
        for pname in self.parameters:
            if pname not in used:
                raise p.error(
                    f"[parameters] {pname}",
                    "declared but not used in any matrix or derived quantity",
                )

        # -- hierarchy ------------------------------------------------------------------
        self.random_effects = self._parse_random_effects(p, random_effects)
        self.covariates = self._parse_covariates(p, covariates)
        self._check_site_names(p)

        # -- data ----------------------------------------------------------------------
        self.data = self._parse_data(p, data)
        self._build_traced = jax.jit(self.build)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | Path | None = None) -> ModelSpec:
        """Build a spec from a dict laid out like the TOML file (sections as keys)."""
        p = Parser(str(source) if source is not None else "<dict>")
        if not isinstance(d, Mapping):
            raise p.error(None, f"a spec must be a table/dict, got {type(d).__name__}")
        for key in d:
            if key not in _SECTIONS:
                hint = suggest(key, _SECTIONS)
                if not hint and key.lower() in _ALIASES:
                    hint = f" (did you mean {_ALIASES[key.lower()]!r}?)"
                raise p.error(
                    None, f"unknown section [{key}]{hint}; sections: {', '.join(_SECTIONS)}"
                )
        model = d.get("model", {})
        _check_keys(p, model, _MODEL_KEYS, "[model]")
        for section in ("parameters", "dynamics", "measurement"):
            if section not in d:
                raise p.error(None, f"missing section [{section}]")
        kwargs = {k: model[k] for k in _MODEL_KEYS if k in model}
        if "latent" not in kwargs or "manifest" not in kwargs:
            raise p.error("[model]", "needs 'latent' and 'manifest' (lists of variable names)")
        return cls(
            **kwargs,
            parameters=d["parameters"],
            derived=d.get("derived"),
            dynamics=d["dynamics"],
            measurement=d["measurement"],
            initial=d.get("initial"),
            random_effects=d.get("random_effects"),
            covariates=d.get("covariates"),
            data=d.get("data"),
            source=source if source is not None else "<dict>",
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> ModelSpec:
        """Read and validate a spec file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError("file not found", source=str(path)) from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"cannot read: {e}", source=str(path)) from None
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"invalid TOML: {e}", source=str(path)) from None
        return cls.from_dict(d, source=path)

    # --------------------------------------------------------------------- parsing
    @staticmethod
    def _names(p, names, where, what, required):
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise p.error(where, f"expected a list of names, got {names!r}")
        if required and not names:
            raise p.error(where, f"needs at least one {what}")
        out = tuple(check_identifier(x, what, p.failer(where)) for x in names)
        dup = sorted({x for x in out if out.count(x) > 1})
        if dup:
            raise p.error(where, f"duplicate name(s): {', '.join(dup)}")
        return out

    @staticmethod
    def _check_new_name(p, name, where):
        check_identifier(name, "name", p.failer(where))
        if name in FUNCTIONS or name in CONSTANTS:
            raise p.error(
                where, f"{name!r} is a built-in function or constant; choose another name"
            )

    def _toposort(self, p) -> list:
        order, state = [], {}

        def visit(name, chain):
            if state.get(name) == "done":
                return
            if state.get(name) == "active":
                cycle = " -> ".join([*chain[chain.index(name) :], name])
                raise p.error(f"[derived] {name}", f"circular definition: {cycle}")
            state[name] = "active"
            for dep in sorted(self.derived[name].names):
                if dep in self.derived:
                    visit(dep, [*chain, name])
            state[name] = "done"
            order.append(name)

        for name in self.derived:
            visit(name, [])
        return order

    def _name_sign(self, name) -> int:
        if name in self._priors:
            return POS if positive_support(self._priors[name]) else ANY
        if name in self.constants:
            v = self.constants[name]
            return POS if v > 0 else (NONNEG if v == 0 else ANY)
        if name in self.derived:
            return sign(self.derived[name].tree, self._name_sign)
        return ANY  # pragma: no cover - names are validated before

    def _free_parameters(self, names) -> set:
        """The free parameters that ``names`` depend on (through derived quantities too)."""
        out: set = set()
        for name in names:
            if name in self._priors:
                out.add(name)
            elif name in self.derived:
                out |= self._free_parameters(self.derived[name].names)
        return out

    def _check_variances(self, p) -> None:
        """Variances and standard deviations must not be given negative-support priors.

        The diagonal cells of ``diffusion``, ``noise`` and ``[initial] cov`` are
        variances; those of ``diffusion_sd``, ``noise_sd`` and ``[initial] sd`` (and the
        ``sd`` of ``stationary_sd``) standard deviations. A cell that sign analysis
        cannot prove non-negative and that uses a parameter whose prior reaches below
        zero is an error naming the cell and the parameter; a negative constant
        variance is one too.
        """
        kinds = {
            "diffusion": "variance",
            "noise": "variance",
            "cov": "variance",
            "diffusion_sd": "standard deviation",
            "noise_sd": "standard deviation",
            "sd": "standard deviation",
        }
        for f in self._fields.values():
            kind = kinds.get(f.key)
            if kind is None:
                continue
            cells = []  # (where, Expression or constant)
            if isinstance(f.spec, Cells):
                dynamic = {pos: e for targets, e in f.spec.dynamic for pos in targets}
                for i in range(min(f.spec.shape)):
                    where = f.spec.wheres.get((i, i), f"{f.where}[{i}][{i}]")
                    cells.append((where, dynamic.get((i, i), float(f.spec.base[i, i]))))
            elif isinstance(f.spec, StationarySD):
                cells.append((f"{f.where}.sd", f.spec.sd))
            for where, cell in cells:
                if not isinstance(cell, Expression):
                    if kind == "variance" and cell < 0:
                        raise p.error(
                            where,
                            f"a variance cannot be negative, got {cell:g} (diagonal cells of "
                            f"{f.key!r} are variances; give {f.key}_sd for standard deviations)"
                            if f.key != "cov"
                            else f"a variance cannot be negative, got {cell:g}",
                        )
                    continue
                if sign(cell.tree, self._name_sign) >= NONNEG:
                    continue
                culprits = [
                    x
                    for x in sorted(self._free_parameters(cell.names))
                    if not positive_support(self._priors[x])
                ]
                if culprits:
                    x = culprits[0]
                    square = f", or write {x}^2" if kind == "variance" else ""
                    raise p.error(
                        where,
                        f"{kind} {cell.text!r} can be negative: {x} has the prior "
                        f"{self._priors[x].text!r}, which allows negative values; give {x} a "
                        f"positive prior (HalfNormal, LogNormal, Exponential, Gamma){square}",
                    )

    def _check_constant_drift(self, p) -> None:
        """A drift with no free parameter must be stable when the start is stationary."""
        if self.initial_state != "stationary":
            return
        drift = self._fields["drift"]
        if self._free_parameters(drift.names):
            return
        values = {x: jnp.asarray(1.0) for x in self.parameters}
        env = self._env(values, jnp.result_type(float))
        a = np.asarray(drift.value(env, jnp.result_type(float), {}), dtype=float)
        eigenvalues = np.linalg.eigvals(a)
        worst = eigenvalues[np.argmax(eigenvalues.real)]
        if worst.real >= 0:
            shown = f"{worst.real:g}" if abs(worst.imag) < 1e-12 else f"{worst:g}"
            raise p.error(
                drift.where,
                f"the drift is constant and not stable (eigenvalue {shown} has real part >= 0), "
                "so the default stationary initial state does not exist: make the drift "
                "stable (eigenvalues with negative real parts), or set [initial] "
                "state = 'diffuse' (or a known start with mean and sd)",
            )

    def _parse_random_effects(self, p, table):
        if table is None:
            return None
        where = "[random_effects]"
        _check_keys(p, table, ("parameters", "sd_prior", "correlation_prior"), where)
        names = table.get("parameters")
        if not isinstance(names, list) or not names:
            raise p.error(f"{where} parameters", "give a non-empty list of parameter names")
        for x in names:
            self._check_free(p, x, f"{where} parameters")
        if len(set(names)) != len(names):
            raise p.error(f"{where} parameters", "a parameter is listed twice")
        sd = table.get("sd_prior", "HalfNormal(1)")
        if isinstance(sd, Mapping):
            for key in sd:
                if key not in names:
                    raise p.error(
                        f"{where} sd_prior", f"{key!r} has no random effect{suggest(key, names)}"
                    )
            default = "HalfNormal(1)"
            sds = {
                x: parse_prior(sd.get(x, default), source=p.source, where=f"{where} sd_prior.{x}")
                for x in names
            }
        else:
            prior = parse_prior(sd, source=p.source, where=f"{where} sd_prior")
            sds = dict.fromkeys(names, prior)
        for x, prior in sds.items():
            if not positive_support(prior):
                raise p.error(
                    f"{where} sd_prior", f"the prior of {x}_sd must be positive, got {prior.text!r}"
                )
        corr = table.get("correlation_prior", "LKJ(2)")
        lkj = None
        if not (isinstance(corr, str) and corr.strip().lower() == "none"):
            if not isinstance(corr, str):
                raise p.error(
                    f"{where} correlation_prior", f"expected 'LKJ(eta)' or 'none', got {corr!r}"
                )
            _, args, kwargs = parse_call(
                corr, {"LKJ": None}, "correlation prior", p.failer(f"{where} correlation_prior")
            )
            if kwargs or len(args) != 1 or not args[0] > 0:
                raise p.error(
                    f"{where} correlation_prior",
                    f"expected LKJ(eta) with one concentration eta > 0, got {corr!r}",
                )
            lkj = args[0]
        return _RandomEffects(tuple(names), sds, lkj)

    def _parse_covariates(self, p, table):
        if table is None:
            return None
        where = "[covariates]"
        _check_keys(p, table, ("names", "effects", "prior"), where)
        effects = table.get("effects")
        if not isinstance(effects, Mapping) or not effects:
            raise p.error(f"{where} effects", "give a table parameter = [covariates]")
        out, order = {}, []
        for param, covs in effects.items():
            self._check_free(p, param, f"{where} effects")
            if isinstance(covs, str):
                covs = [covs]
            if not isinstance(covs, list) or not covs:
                raise p.error(
                    f"{where} effects.{param}", f"expected a list of covariates, got {covs!r}"
                )
            for c in covs:
                check_identifier(c, "covariate", p.failer(f"{where} effects.{param}"))
                if c not in order:
                    order.append(c)
            if len(set(covs)) != len(covs):
                raise p.error(f"{where} effects.{param}", "a covariate is listed twice")
            out[param] = tuple(covs)
        if "names" in table:
            names = self._names(p, table["names"], f"{where} names", "covariate", required=True)
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
        clash = set(names) & (set(self.latent) | set(self.manifest) | set(self.inputs))
        if clash:
            raise p.error(f"{where}", f"covariate name(s) also used as variables: {sorted(clash)}")
        prior = parse_prior(
            table.get("prior", "Normal(0, 1)"), source=p.source, where=f"{where} prior"
        )
        return _Covariates(names, out, prior)

    def _check_free(self, p, name, where):
        if name in self.constants:
            raise p.error(where, f"{name!r} is fixed; it cannot vary")
        if name not in self._priors:
            raise p.error(where, f"unknown parameter {name!r}{suggest(str(name), self._priors)}")

    def _check_site_names(self, p):
        taken = set(self.parameters) | set(self.constants) | set(self.derived) | {"y"}
        if "y" in set(self.parameters) | set(self.constants) | set(self.derived):
            raise p.error("[parameters]", "'y' is reserved for the observation site")
        generated = []
        if self.random_effects:
            generated += [f"{x}_sd" for x in self.random_effects.parameters]
            generated += ["re_z", "re_corr_cholesky", "re_corr"]
        if self.covariates:
            generated += [f"{c}_on_{x}" for x, cs in self.covariates.effects.items() for c in cs]
        generated += [f"{x}_subject" for x in self.varying_parameters]
        for g in generated:
            if g in taken:
                raise p.error(None, f"the name {g!r} is reserved for a generated site; rename it")

    def _parse_data(self, p, table):
        if table is None:
            return DataSpec()
        _check_keys(p, table, _DATA_KEYS, "[data]")
        cols = dict(table.get("columns", {}))
        variables = set(self.manifest) | set(self.inputs) | set(self.covariate_names)
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

    # ------------------------------------------------------------------- properties
    @property
    def priors(self) -> dict[str, dist.Distribution]:
        """Free parameter name -> its prior (fresh NumPyro distribution objects)."""
        return {k: v.make() for k, v in self._priors.items()}

    @property
    def prior_texts(self) -> dict[str, str]:
        """Free parameter name -> the prior as written."""
        return {k: v.text for k, v in self._priors.items()}

    @property
    def covariate_names(self) -> tuple:
        return self.covariates.names if self.covariates else ()

    @property
    def varying_parameters(self) -> tuple:
        """Parameters that differ between subjects (random effects or covariates)."""
        out = list(self.random_effects.parameters) if self.random_effects else []
        if self.covariates:
            out += [x for x in self.covariates.effects if x not in out]
        return tuple(x for x in self.parameters if x in out)

    @property
    def is_hierarchical(self) -> bool:
        """Whether some parameter varies by subject."""
        return bool(self.random_effects or self.covariates)

    def __repr__(self) -> str:
        return (
            f"ModelSpec({self.name!r}, latent={list(self.latent)}, manifest={list(self.manifest)}, "
            f"parameters={list(self.parameters)})"
        )

    # ------------------------------------------------------------------------ build
    def _values(self, params: Mapping[str, Any]):
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping name -> value, got {type(params).__name__}")
        missing = [x for x in self.parameters if x not in params]
        if missing:
            raise ValueError(
                f"{self.name}: missing value(s) for parameter(s) {', '.join(missing)} "
                f"(the model's parameters are {', '.join(self.parameters)})"
            )
        values = {}
        for x in self.parameters:
            v = jnp.asarray(params[x])
            if jnp.issubdtype(v.dtype, jnp.complexfloating):
                raise TypeError(f"parameter {x!r} must be real, got dtype {v.dtype}")
            if not jnp.issubdtype(v.dtype, jnp.floating):
                v = v.astype(jnp.result_type(float))
            values[x] = v
        dtype = jnp.result_type(*values.values())
        values = {x: v.astype(dtype) for x, v in values.items()}
        try:
            batch = jnp.broadcast_shapes(*(v.shape for v in values.values()))
        except ValueError:
            shapes = {x: v.shape for x, v in values.items()}
            raise ValueError(
                f"parameter values must broadcast together, got shapes {shapes}"
            ) from None
        return values, batch, dtype

    def _env(self, values, dtype):
        env = dict(values)
        for x, c in self.constants.items():
            env[x] = jnp.asarray(c, dtype)
        for x in self._derived_order:
            env[x] = jnp.asarray(self.derived[x](env), dtype)
        return env

    def _matrices_one(self, values) -> dict:
        dtype = jnp.result_type(*values.values())
        env = self._env(values, dtype)
        out: dict[str, Any] = {}
        # drift and loadings first: builders such as stationary_sd read them.
        for target in ("drift", "observation"):
            out[target] = self._fields[target].value(env, dtype, out)
        for target, f in self._fields.items():
            if target not in out:
                out[target] = f.value(env, dtype, out)
        if self.k:
            for target, rows in (
                ("input_effect", self.n),
                ("observation_input_effect", self.m),
                ("impulse_effect", self.n),
            ):
                out.setdefault(target, jnp.zeros((rows, self.k), dtype))
        return out

    def _vmapped(self, fn, params):
        values, batch, _ = self._values(params)
        if batch == ():
            return fn(values)
        values = {x: jnp.broadcast_to(v, batch) for x, v in values.items()}
        for _ in batch:
            fn = jax.vmap(fn)
        return fn(values)

    def matrices(self, params: Mapping[str, Any]) -> dict:
        """The model's matrices at parameter values, keyed by LinearSDE field name.

        Args:
            params: free parameter name -> value (scalar, or arrays with a common
                batch shape, e.g. (S,) subject values); extra keys are ignored.

        Returns:
            dict with drift (…, n, n), diffusion (…, n, n), observation (…, m, n),
            observation_noise (…, m, m) and whichever of drift_intercept,
            observation_intercept, input_effect, observation_input_effect,
            impulse_effect, initial_mean, initial_cov the spec gives (all input
            effects when it declares inputs); "…" is the batch shape.
        """
        return self._vmapped(self._matrices_one, params)

    def _build_one(self, values) -> LinearSDE:
        return LinearSDE(
            **self._matrices_one(values),
            initial_state=self.initial_state,
            diffuse_scale=self.diffuse_scale,
        )

    def build(self, params: Mapping[str, Any]) -> LinearSDE:
        """The :class:`~kalmanad.LinearSDE` at parameter values (pure jnp; jit/grad/vmap-safe).

        Args:
            params: free parameter name -> value; scalars give an unbatched model,
                arrays with a common batch shape (e.g. (S,) per-subject values) a model
                whose array fields carry that leading batch shape (built by
                ``jax.vmap``). Extra keys (e.g. other posterior sites) are ignored.

        Raises:
            ValueError: missing parameters; with concrete unbatched values, whatever
                LinearSDE rejects (e.g. a stationary start with an unstable drift).
                Traced or batched values never raise: use ``model.is_valid()``.
        """
        return self._vmapped(self._build_one, params)

    def derived_values(self, params: Mapping[str, Any]) -> dict:
        """Derived quantities at parameter values, name -> array (batched like params)."""

        def one(values):
            env = self._env(values, jnp.result_type(*values.values()))
            return {x: env[x] for x in self.derived}

        return self._vmapped(one, params)

    # -------------------------------------------------------------------- sampling
    def _sample_parameters(self, n_subjects=None, covariates=None) -> dict:
        """NumPyro: sample the priors (and subject effects); return build()'s params."""
        values = {x: numpyro.sample(x, prior.make()) for x, prior in self._priors.items()}
        if n_subjects is None or not self.is_hierarchical:
            return values
        s = int(n_subjects)
        u = {}  # unconstrained subject values of varying parameters
        transforms = {}
        for x in self.varying_parameters:
            t = biject_to(self._priors[x].make().support)
            transforms[x] = t
            u[x] = jnp.broadcast_to(t.inv(values[x]), (s,))
        re = self.random_effects
        if re is not None:
            r = len(re.parameters)
            sd = jnp.stack(
                [numpyro.sample(f"{x}_sd", re.sd_priors[x].make()) for x in re.parameters]
            )
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
        if self.covariates is not None:
            if covariates is None:
                raise ValueError(
                    f"{self.name}: the model has covariates {', '.join(self.covariate_names)}: "
                    "pass covariates"
                )
            for x, covs in self.covariates.effects.items():
                for c in covs:
                    beta = numpyro.sample(f"{c}_on_{x}", self.covariates.prior.make())
                    u[x] = u[x] + beta * covariates[c]
        for x in self.varying_parameters:
            values[x] = numpyro.deterministic(f"{x}_subject", transforms[x](u[x]))
        return values

    def _covariate_arrays(self, covariates, n_subjects) -> dict | None:
        if not self.covariates:
            return None
        if covariates is None:
            raise ValueError(
                f"{self.name}: the model needs covariates {', '.join(self.covariate_names)} "
                f"for each of the {n_subjects} subjects"
            )
        if isinstance(covariates, Mapping):
            missing = [c for c in self.covariate_names if c not in covariates]
            if missing:
                raise ValueError(f"{self.name}: missing covariate(s) {', '.join(missing)}")
            out = {c: jnp.asarray(covariates[c]) for c in self.covariate_names}
        else:
            arr = jnp.asarray(covariates)
            if arr.ndim != 2 or arr.shape[1] != len(self.covariate_names):
                raise ValueError(
                    f"covariates must be a mapping or an (S, {len(self.covariate_names)}) array "
                    f"with columns {', '.join(self.covariate_names)}, got shape {arr.shape}"
                )
            out = {c: arr[:, i] for i, c in enumerate(self.covariate_names)}
        for c, v in out.items():
            if v.shape != (n_subjects,):
                raise ValueError(
                    f"covariate {c!r} must have one value per subject, shape ({n_subjects},), "
                    f"got {v.shape}"
                )
            if not jnp.issubdtype(v.dtype, jnp.floating):
                out[c] = v.astype(jnp.result_type(float))
        return out

    def sample_prior(self, key, n_subjects: int | None = None, covariates=None) -> dict:
        """One draw of the parameters from the prior, ready for :meth:`build`.

        Args:
            key: a JAX PRNG key (vmap over keys for many draws).
            n_subjects: for hierarchical specs, draw subject-level values of the
                varying parameters ((S,) arrays); None gives population values.
            covariates: per-subject covariates (name -> (S,)), needed with
                ``n_subjects`` when the spec has covariates.
        """
        cov = self._covariate_arrays(covariates, n_subjects) if n_subjects is not None else None
        return numpyro.handlers.seed(self._sample_parameters, key)(n_subjects, cov)

    def numpyro_model(
        self,
        times,
        y=None,
        inputs=None,
        subject=None,
        covariates=None,
        method: str | None = None,
        checkpoint: int | None = None,
        mesh=None,
    ):
        """NumPyro model: sample the priors, build the SDE, observe ``y`` (site "y").

        Data layouts:

        * one series: times (T,), y (T, m) or None, inputs (T, k);
        * several subjects, padded: times (S, T), y (S, T, m), inputs (S, T, k),
          covariates name -> (S,) (or an (S, C) array); the "y" site sits in
          ``numpyro.plate("subjects", S)``;
        * several subjects, long format: times (N,), y (N, m), ``subject`` (N,) labels,
          covariates name -> (N,) constant within subject; packed with
          :func:`to_panel` (needs concrete arrays).

        Models with random effects or covariates need several subjects. NaN entries of
        ``y`` are missing. Derived quantities are recorded as deterministic sites.
        Parameter values that make no proper model (e.g. an unstable drift with a
        stationary start) are left to the distribution (a -inf log-likelihood), never
        raised. ``method``, ``checkpoint`` (long series) and ``mesh`` (subjects split
        across devices, :mod:`kalmanad.scale`) are passed to the distribution.
        """
        from kalmanad.distributions import LinearSDEDistribution

        if subject is not None:
            if jnp.ndim(times) != 1:
                raise ValueError("with subject ids, times must be (N,) in long format")
            n_rows = np.shape(times)[0]
            y_long = np.full((n_rows, self.m), np.nan) if y is None else y
            cov_long = None
            if covariates is not None:
                if not isinstance(covariates, Mapping):
                    raise ValueError("with subject ids, covariates must be a mapping name -> (N,)")
                cov_long = {c: covariates[c] for c in self.covariate_names if c in covariates}
            panel = to_panel(times, y_long, subject, inputs, cov_long)
            times, inputs = panel.times, panel.inputs
            y = None if y is None else panel.y
            covariates = panel.covariates if covariates is not None else None
        # Concrete times stay numpy: the distribution then finds the distinct step
        # sizes once, outside the traced computation.
        times = times if isinstance(times, jax.Array) else np.asarray(times, dtype=float)
        if inputs is not None and not isinstance(inputs, jax.Array):
            inputs = np.asarray(inputs, dtype=float)
        if times.ndim not in (1, 2):
            raise ValueError(f"times must be (T,) or (S, T), got shape {times.shape}")
        n_subjects = times.shape[0] if times.ndim == 2 else None
        if self.is_hierarchical and n_subjects is None:
            varying = ", ".join(self.varying_parameters)
            raise ValueError(
                f"{self.name} has subject-varying parameters ({varying}): "
                "pass several subjects (subject ids, or (S, T) times)"
            )
        if y is not None:
            y = jnp.asarray(y)
            expected = (*times.shape, self.m)
            if y.shape != expected:
                raise ValueError(
                    f"y must have shape {expected} (times {times.shape}, m={self.m} manifest "
                    f"variables {', '.join(self.manifest)}), got {y.shape}"
                )
        cov = self._covariate_arrays(covariates, n_subjects) if n_subjects is not None else None
        values = self._sample_parameters(n_subjects, cov)
        # Built under jit so that concrete draws (NumPyro's eager initial trace) are
        # never value-checked: an invalid draw must become -inf, not an exception.
        model = self._build_traced(values)
        if self.derived:
            for x, v in self.derived_values(values).items():
                numpyro.deterministic(x, v)
        kw = {} if method is None else {"method": method}
        d = LinearSDEDistribution(model, times, inputs, checkpoint=checkpoint, mesh=mesh, **kw)
        if n_subjects is None:
            return numpyro.sample("y", d, obs=y)
        with numpyro.plate("subjects", n_subjects):
            return numpyro.sample("y", d, obs=y)

    # ------------------------------------------------------------------------- data
    def _columns(self):
        cols = self.data.columns
        manifest = {x: cols.get(x, x) for x in self.manifest}
        inputs = {x: cols.get(x, x) for x in self.inputs}
        covs = {x: cols.get(x, x) for x in self.covariate_names}
        return manifest, inputs, covs

    def read_data(
        self, path: str | Path, *, time: str | None = None, subject: str | None = None
    ) -> ModelData:
        """Read a long-format CSV for this model.

        Columns: the time column (``time``; default the spec's ``[data] time``, or
        "time" when the file has no such column), one column per manifest variable,
        input and covariate (named as the variable unless ``[data] columns`` maps
        it), and an optional subject column (``subject``; default the spec's, else a
        column named "subject" if present). Other columns are ignored.
        Empty cells and NA/NaN are missing observations (allowed only in manifest
        columns).

        Raises:
            DataError: a one-line message (file, line, column) for a missing file or
                column, a non-numeric or missing time, times that decrease within a
                subject (ties are allowed), or a covariate that changes within a subject.
        """
        path = Path(path)
        manifest, inputs, covs = self._columns()
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                header = [h.strip() for h in first_row(fh)]
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []  # read_csv reports it
        if time is None:
            time = self.data.time
            if time not in header and "time" in header:
                time = "time"
        if subject is None:
            subject = self.data.subject
            if subject is None and "subject" in header:
                subject = "subject"
        if self.is_hierarchical and subject is None:
            raise DataError(
                f"{path}: {self.name} has subject-varying parameters and needs a subject "
                "column (name it 'subject' or set [data] subject)"
            )
        return read_csv(
            path, time=time, subject=subject, manifest=manifest, inputs=inputs, covariates=covs
        )

    def read_inputs(self, path: str | Path, *, time: str | None = None):
        """Read the times and input series of a long-format CSV (no observations needed).

        Columns: the time column (``time``; default as in :meth:`read_data`) and one
        column per input (named as the input unless ``[data] columns`` maps it); other
        columns are ignored. Used to simulate a model with inputs at given times.

        Returns:
            ``(times (N,), inputs (N, k))``.

        Raises:
            DataError: the model has no inputs, or any problem :meth:`read_data` reports.
        """
        path = Path(path)
        if not self.inputs:
            raise DataError(f"{path}: {self.name} has no inputs to read")
        _, inputs, _ = self._columns()
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                header = [h.strip() for h in first_row(fh)]
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []  # read_csv reports it
        if time is None:
            time = self.data.time
            if time not in header and "time" in header:
                time = "time"
        data = read_csv(path, time=time, subject=None, manifest={}, inputs=inputs, covariates={})
        return data.times, data.inputs

    def default_data(self) -> ModelData:
        """The bundled default data set (``[data] file``), read with :meth:`read_data`.

        Returns:
            :class:`ModelData` with times, y, subject (or None), inputs, covariates and
            the CSV ``path``.
        """
        if not self.data.file:
            raise DataError(f"{self.name}: the spec has no [data] file")
        return self.read_data(self._base_dir / self.data.file)

    # ------------------------------------------------------------------- describe
    def describe(self) -> str:
        """A readable multi-line summary: variables, parameters with priors, matrices."""
        summary = self.title or (self.description.strip().splitlines() or [""])[0]
        lines = [f"{self.name}: {summary}" if summary else self.name]
        lines.append(f"  latent:   {', '.join(self.latent)}")
        lines.append(f"  manifest: {', '.join(self.manifest)}")
        if self.inputs:
            lines.append(f"  inputs:   {', '.join(self.inputs)}")
        lines.append("  parameters:")
        width = max(len(x) for x in [*self._priors, *self.constants])
        pwidth = max(len(p.text) for p in self._priors.values())
        for x in self._priors:
            desc = self.parameter_descriptions.get(x, "")
            text = f"    {x:<{width}} ~ {self._priors[x].text:<{pwidth}}"
            lines.append(f"{text}   # {desc}" if desc else text.rstrip())
        for x, v in self.constants.items():
            lines.append(f"    {x:<{width}} = {v:g} (fixed)")
        if self.derived:
            lines.append("  derived:")
            for x, e in self.derived.items():
                lines.append(f"    {x} = {e.text}")
        for f in self._fields.values():
            lines.append(f"  {f.where} = {_show(f.display)}")
        lines.append(f"  initial state: {self.initial_state}")
        if self.random_effects:
            re = self.random_effects
            corr = f"LKJ({re.lkj:g})" if re.lkj is not None else "none"
            lines.append(f"  random effects: {', '.join(re.parameters)} (correlation: {corr})")
        if self.covariates:
            eff = "; ".join(f"{x} <- {', '.join(c)}" for x, c in self.covariates.effects.items())
            lines.append(f"  covariates: {eff}")
        if self.data.file:
            kind = "simulated" if self.data.truth else "real"
            lines.append(f"  default data: {self.data.file} ({kind})")
        return "\n".join(lines)


def _show(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return str(value)
