"""The model spec: :class:`ModelSpec` validates a spec and builds models from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from kalmanad.model import LinearSDE
from kalmanad.spec import sampling
from kalmanad.spec.cells import (
    Cells,
    Companion,
    Field,
    Parser,
    StationarySD,
    initial_fields,
    matrix_fields,
)
from kalmanad.spec.data import DataError, ModelData, read_csv, read_header
from kalmanad.spec.errors import SpecError
from kalmanad.spec.expressions import ANY, NONNEG, POS, Expression, sign
from kalmanad.spec.priors import positive_support
from kalmanad.spec.render import describe
from kalmanad.spec.sections import (
    DYNAMICS_KEYS,
    MEASUREMENT_KEYS,
    MODEL_KEYS,
    DataSpec,
    check_keys,
    check_sections,
    parse_covariates,
    parse_data,
    parse_derived,
    parse_initial_state,
    parse_names,
    parse_parameters,
    parse_random_effects,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["DataSpec", "ModelSpec"]


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
        starts: start values of free parameters, name -> value (see
            :meth:`init_strategy`).
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
        self._parse_variables(p, latent, manifest, inputs)
        self._priors, self.constants, self.parameter_descriptions, self.starts = parse_parameters(
            p, parameters
        )
        self.parameters = tuple(self._priors)
        self.derived, self.derived_descriptions, self._derived_order = parse_derived(
            p, derived, {**self._priors, **self.constants}
        )
        known = set(self.parameters) | set(self.constants) | set(self.derived)
        check_keys(p, dynamics, DYNAMICS_KEYS, "[dynamics]")
        check_keys(p, measurement, MEASUREMENT_KEYS, "[measurement]")
        self._fields: dict[str, Field] = matrix_fields(p, dynamics, measurement, known)
        initial, self.initial_state, self.diffuse_scale = parse_initial_state(p, initial)
        self._fields.update(initial_fields(p, initial, known))
        self._check_companions(p)
        self._check_variances(p)
        self._check_constant_drift(p)
        self._check_used(p)
        self.random_effects = parse_random_effects(p, random_effects, self._priors, self.constants)
        variables = set(self.latent) | set(self.manifest) | set(self.inputs)
        self.covariates = parse_covariates(p, covariates, self._priors, self.constants, variables)
        self._check_site_names(p)
        variables = set(self.manifest) | set(self.inputs) | set(self.covariate_names)
        self.data = parse_data(p, data, variables)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | Path | None = None) -> ModelSpec:
        """Build a spec from a dict laid out like the TOML file (sections as keys).

        With an ``[equations]`` section (``text = "..."``: the model as equations,
        :func:`~kalmanad.spec.equations.from_equations`) the spec takes only
        ``[model]``'s texts and ``[data]`` besides: the equations give the variables,
        parameters and matrices.
        """
        p = Parser(str(source) if source is not None else "<dict>")
        check_sections(p, d)
        model = d.get("model", {})
        check_keys(p, model, MODEL_KEYS, "[model]")
        if "equations" in d:
            from kalmanad.spec.equations import from_equations_section

            return from_equations_section(p, d, model, source)
        for section in ("parameters", "dynamics", "measurement"):
            if section not in d:
                raise p.error(None, f"missing section [{section}]")
        kwargs = {k: model[k] for k in MODEL_KEYS if k in model}
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
    def from_equations(cls, text: str, **kwargs) -> ModelSpec:
        """A spec from a model written as equations (see
        :func:`~kalmanad.spec.equations.from_equations`, which takes the same arguments)."""
        from kalmanad.spec.equations import from_equations

        return from_equations(text, **kwargs)

    @classmethod
    def from_toml(cls, path: str | Path) -> ModelSpec:
        """Read and validate a spec file: TOML, or equations when it ends in ``.kal``."""
        path = Path(path)
        if path.suffix == ".kal":
            from kalmanad.spec.equations import from_equations, read_equations

            return from_equations(read_equations(path), source=path)
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
    def _parse_variables(self, p, latent, manifest, inputs) -> None:
        """``[model]``'s latent, manifest and input names: valid, distinct, declared."""
        self.latent = parse_names(p, latent, "[model] latent", "latent variable", required=True)
        self.manifest = parse_names(
            p, manifest, "[model] manifest", "manifest variable", required=True
        )
        self.inputs = parse_names(p, inputs, "[model] inputs", "input", required=False)
        clash = set(self.latent) & set(self.manifest) | set(self.inputs) & (
            set(self.latent) | set(self.manifest)
        )
        if clash:
            raise p.error("[model]", f"variable name(s) used twice: {', '.join(sorted(clash))}")
        self.n, self.m, self.k = len(self.latent), len(self.manifest), len(self.inputs)
        p.declare_variables(self.latent, self.manifest, self.inputs)

    # ----------------------------------------------------------------------- checks
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

    def _check_companions(self, p) -> None:
        """Companion factors must be provably positive (every draw is then stable)."""
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

    def _check_used(self, p) -> None:
        """Every free parameter appears in a matrix or a derived quantity."""
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

    # ------------------------------------------------------------------- properties
    @property
    def priors(self) -> dict[str, dist.Distribution]:
        """Free parameter name -> its prior (fresh NumPyro distribution objects)."""
        return {k: v.make() for k, v in self._priors.items()}

    @property
    def cells(self) -> dict:
        """Model field name -> its parsed matrix or vector field, in spec order."""
        return dict(self._fields)

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
                LinearSDE rejects (e.g. a stationary start with an unstable drift),
                except inside a NumPyro model run. Traced or batched values never
                raise: use ``model.is_valid()``.
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
        return sampling.sample_parameters(self, n_subjects, covariates)

    def sample_prior(self, key, n_subjects: int | None = None, covariates=None) -> dict:
        """One draw of the parameters from the prior, ready for :meth:`build`.

        Args:
            key: a JAX PRNG key (vmap over keys for many draws).
            n_subjects: for hierarchical specs, draw subject-level values of the
                varying parameters ((S,) arrays); None gives population values.
            covariates: per-subject covariates (name -> (S,)), needed with
                ``n_subjects`` when the spec has covariates.
        """
        cov = None
        if n_subjects is not None:
            cov = sampling.covariate_arrays(self, covariates, n_subjects)
        return numpyro.handlers.seed(self._sample_parameters, key)(n_subjects, cov)

    def init_strategy(self, num_samples: int = 15):
        """A NumPyro init strategy: the :attr:`starts` where given, else the prior median.

        For ``NUTS(..., init_strategy=spec.init_strategy())`` or ``fit_map``. A site with
        a start value starts there; every other site as NumPyro's
        ``init_to_median(num_samples=num_samples)`` starts it.
        """
        from numpyro.infer import init_to_median

        median = init_to_median(num_samples=num_samples)
        starts = dict(self.starts)
        if not starts:
            return median

        def strategy(site=None):
            if site is None:
                return strategy
            if site["type"] == "sample" and not site["is_observed"] and site["name"] in starts:
                shape = site["fn"].shape(site["kwargs"].get("sample_shape", ()))
                return jnp.full(shape, starts[site["name"]])
            return median(site)

        return strategy

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

        times, y, inputs, covariates, n_subjects = sampling.observation_arrays(
            self, times, y, inputs, subject, covariates
        )
        cov = None
        if n_subjects is not None:
            cov = sampling.covariate_arrays(self, covariates, n_subjects)
        values = self._sample_parameters(n_subjects, cov)
        # Inside this NumPyro model run an invalid draw is left to the distribution's
        # -inf (kalmanad._validation), never raised.
        model = self.build(values)
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
    def data_columns(self):
        """The data file's column of each manifest, input and covariate (dicts)."""
        cols = self.data.columns
        manifest = {x: cols.get(x, x) for x in self.manifest}
        inputs = {x: cols.get(x, x) for x in self.inputs}
        covs = {x: cols.get(x, x) for x in self.covariate_names}
        return manifest, inputs, covs

    def _time_column(self, header: list) -> str:
        """The spec's time column, or "time" when the file has that and not the spec's."""
        time = self.data.time
        if time not in header and "time" in header:
            time = "time"
        return time

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
        manifest, inputs, covs = self.data_columns()
        header = read_header(path)
        time = self._time_column(header) if time is None else time
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
        _, inputs, _ = self.data_columns()
        time = self._time_column(read_header(path)) if time is None else time
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

    def describe(self) -> str:
        """A readable multi-line summary: variables, parameters with priors, the model as
        equations (the ``.kal`` language) and its matrices."""
        return describe(self)
