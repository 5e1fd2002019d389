"""Matrix cells and structured-matrix builders.

A matrix of a spec is given cell by cell (:class:`Cells`: constant cells in a numpy
base, expression cells set on top) or by a builder (:data:`BUILDERS`); :class:`Field`
is one such matrix with the LinearSDE field it fills. :class:`Parser` turns the
values written in a spec into these, naming the file, field and cell in every error.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from kalmanad.models import ar_from_factors, companion, ma_from_factors, stationary_sd_diffusion
from kalmanad.spec.errors import SpecError, suggest
from kalmanad.spec.expressions import Expression, parse_expression

__all__ = [
    "BUILDERS",
    "Cells",
    "Companion",
    "Field",
    "MALoadings",
    "Parser",
    "StationarySD",
    "initial_fields",
    "matrix_fields",
]


class Cells:
    """A matrix or vector given cell by cell: constant base + dynamic cells."""

    def __init__(self, shape, base: np.ndarray, dynamic: list, wheres: dict | None = None):
        self.shape = shape
        self.base = base  # float64 numpy array of constant cells
        self.dynamic = dynamic  # [(positions [(i, j), ...], Expression)]
        self.wheres = wheres or {}  # position -> field and cell, for error messages

    @property
    def expressions(self):
        return [e for _, e in self.dynamic]

    def value(self, env, dtype, context):
        out = jnp.asarray(self.base, dtype)
        if not self.dynamic:
            return out
        positions, values = [], []
        for pos, expr in self.dynamic:
            v = jnp.asarray(expr(env), dtype)
            for p in pos:
                positions.append(p)
                values.append(v)
        idx = tuple(np.array(ax) for ax in zip(*positions, strict=True))
        return out.at[idx].set(jnp.stack(values))


class Field:
    """One matrix of the spec: its cells or builder, and whether it is a factor."""

    def __init__(self, key: str, target: str, where: str, spec, factor: bool, display):
        self.key = key  # spec key, e.g. "diffusion_sd"
        self.target = target  # LinearSDE field, e.g. "diffusion"
        self.where = where
        self.spec = spec  # Cells or a builder
        self.factor = factor  # value X gives X Xᵀ
        self.display = display  # the raw spec value, for describe()

    @property
    def names(self) -> frozenset:
        return frozenset().union(*(e.names for e in self.spec.expressions))

    def value(self, env, dtype, context):
        x = self.spec.value(env, dtype, context)
        if self.factor:
            x = x @ jnp.swapaxes(x, -1, -2)
        return x


def _shape_text(shape) -> str:
    return "×".join(str(s) for s in shape)


class Parser:
    """Parses one spec (carries the source name for error messages)."""

    def __init__(self, source: str):
        self.source = source
        self.hints: dict[str, str] = {}
        self.latent: tuple = ()
        self.manifest: tuple = ()
        self.inputs: tuple = ()

    def declare_variables(self, latent, manifest, inputs) -> None:
        """The model's variables: builders read them, and a cell naming one gets a hint."""
        self.latent, self.manifest, self.inputs = tuple(latent), tuple(manifest), tuple(inputs)
        for kind, names in (("latent", latent), ("manifest", manifest), ("input", inputs)):
            for x in names:
                self.hints[x] = (
                    f"{x!r} is a {kind} variable: cells hold parameters, the matrices "
                    "multiply the variables"
                )

    def error(self, where, problem) -> SpecError:
        return SpecError(problem, source=self.source, where=where)

    def failer(self, where):
        return lambda problem: self.error(where, problem)

    def expr(self, value, known, where) -> Expression:
        return parse_expression(value, known, source=self.source, where=where, hints=self.hints)

    # -- matrices ------------------------------------------------------------------------
    def matrix(self, value, shape, where, known, *, labels, free_cols=False, key=None):
        """Parse a matrix/vector value into Cells or a builder.

        shape: (r,) or (r, c); with free_cols the column count is taken from the value.
        labels: (row_label, col_label) texts for error messages.
        key: the spec key (e.g. "drift"); a builder applies where its ``target`` is the key.
        """
        if isinstance(value, Mapping):
            return self._table(value, shape, where, known, labels, free_cols, key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return self._single(value, shape, where, known, free_cols)
        if not isinstance(value, list):
            raise self.error(where, f"expected a list, a table or a cell, got {value!r}")
        is_vec = len(shape) == 1
        if len(value) != shape[0]:
            raise self.error(
                where,
                f"expected {shape[0]} {'entries' if is_vec else 'rows'} ({labels[0]}), "
                f"got {len(value)}",
            )
        if is_vec:
            return self._vector(value, shape, where, known)
        return self._rows(value, shape, where, known, labels, free_cols)

    def _table(self, value, shape, where, known, labels, free_cols, key):
        """``{ builder = ... }`` or ``{ diagonal | lower | symmetric = ... }``."""
        if "builder" in value:
            return self.builder(value, shape, where, known, key)
        if len(value) != 1:
            raise self.error(
                where,
                "a matrix table takes exactly one of 'diagonal', 'lower', 'symmetric' "
                f"or 'builder', got keys {sorted(value)}",
            )
        ((form, body),) = value.items()
        if form not in ("diagonal", "lower", "symmetric"):
            forms = ("diagonal", "lower", "symmetric", "builder")
            raise self.error(
                where,
                f"unknown matrix form {form!r}{suggest(form, forms)}; "
                "use diagonal, lower, symmetric or builder",
            )
        if len(shape) == 1:
            raise self.error(where, f"'{form}' is for matrices; this is a vector: give a list")
        n = shape[0]
        if not free_cols and shape[1] != n:
            raise self.error(
                where, f"'{form}' needs a square matrix; this one is {_shape_text(shape)}"
            )
        return self.structured(form, body, n, f"{where}.{form}", known, labels)

    def _single(self, value, shape, where, known, free_cols):
        """One cell: the number 0 (all zeros), or the value of a 1×1 matrix or 1-vector."""
        is_vec = len(shape) == 1
        if value == 0 and not isinstance(value, str):
            out_shape = (shape[0], shape[0]) if free_cols else shape
            return Cells(out_shape, np.zeros(out_shape), [])
        single = shape == (1,) or (shape[0] == 1 and (free_cols or shape[1] == 1))
        if not single:
            hint = " (write a list)" if is_vec else " (write rows, or { diagonal = ... })"
            raise self.error(
                where,
                f"a single value only fits a 1×1 matrix or a length-1 vector; this one "
                f"is {_shape_text(shape) if not free_cols else f'{shape[0]}×r'}{hint}",
            )
        out_shape = (1,) if is_vec else (1, 1)
        return self.cells_from(out_shape, {(0,) * len(out_shape): value}, where, known)

    def _vector(self, value, shape, where, known):
        cells = {}
        for i, cell in enumerate(value):
            if isinstance(cell, list):
                raise self.error(f"{where}[{i}]", "expected a cell, got a list (this is a vector)")
            cells[(i,)] = cell
        return self.cells_from(shape, cells, where, known)

    def _rows(self, value, shape, where, known, labels, free_cols):
        """A list of rows; with free_cols every row has as many cells as row 0."""
        ncols = None if free_cols else shape[1]
        cells = {}
        for i, row in enumerate(value):
            if not isinstance(row, list):
                raise self.error(
                    f"{where}[{i}]",
                    f"expected a row (a list), got {row!r}: a matrix is a list of rows",
                )
            if ncols is None:
                ncols = len(row)
                if ncols == 0:
                    raise self.error(f"{where}[{i}]", "empty row")
            if len(row) != ncols:
                what = f"({labels[1]})" if not free_cols else "(as many as row 0)"
                raise self.error(
                    f"{where}[{i}]", f"expected {ncols} columns {what}, got {len(row)}"
                )
            for j, cell in enumerate(row):
                cells[(i, j)] = cell
        return self.cells_from((shape[0], ncols), cells, where, known)

    def structured(self, form, body, n, where, known, labels):
        if form == "diagonal":
            if isinstance(body, list):
                if len(body) != n:
                    raise self.error(
                        where, f"expected {n} diagonal entries ({labels[0]}), got {len(body)}"
                    )
                entries = body
            else:
                entries = [body] * n
            cells = {(i, i): c for i, c in enumerate(entries)}
            return self.cells_from((n, n), cells, where, known, index=lambda p: f"[{p[0]}]")
        if not isinstance(body, list) or len(body) != n:
            got = len(body) if isinstance(body, list) else repr(body)
            raise self.error(
                where, f"expected {n} rows of the lower triangle ({labels[0]}), got {got}"
            )
        cells, mirror = {}, form == "symmetric"
        for i, row in enumerate(body):
            if not isinstance(row, list) or len(row) != i + 1:
                got = len(row) if isinstance(row, list) else repr(row)
                raise self.error(
                    f"{where}[{i}]",
                    f"row {i} of a lower triangle lists columns 0..{i}: expected {i + 1} "
                    f"entries, got {got}",
                )
            for j, c in enumerate(row):
                cells[(i, j)] = c
        return self.cells_from((n, n), cells, where, known, mirror=mirror)

    def cells_from(self, shape, cells, where, known, *, index=None, mirror=False):
        base = np.zeros(shape)
        dynamic = []
        wheres = {}
        for pos, cell in cells.items():
            label = index(pos) if index else "".join(f"[{p}]" for p in pos)
            wheres[pos] = f"{where}{label}"
            e = self.expr(cell, known, wheres[pos])
            targets = [pos]
            if mirror and pos[0] != pos[1]:
                targets.append((pos[1], pos[0]))
            if e.constant is not None:
                for t in targets:
                    base[t] = e.constant
            else:
                dynamic.append((targets, e))
        return Cells(shape, base, dynamic, wheres)

    def builder(self, value, shape, where, known, key):
        name = value["builder"]
        if name not in BUILDERS:
            raise self.error(
                where,
                f"unknown builder {name!r}{suggest(str(name), BUILDERS)}; available: "
                f"{', '.join(BUILDERS)}",
            )
        cls = BUILDERS[name]
        if cls.target != key:
            raise self.error(where, f"builder {name!r} does not apply here; it builds {cls.target}")
        args = {k: v for k, v in value.items() if k != "builder"}
        return cls(self, args, shape, where, known)


# ------------------------------------------------------------------- matrix sections


def _labels(p: Parser) -> tuple[str, str, str]:
    """Row and column labels for error messages: latent, manifest and inputs."""
    return (
        f"latent: {', '.join(p.latent)}",
        f"manifest: {', '.join(p.manifest)}",
        f"inputs: {', '.join(p.inputs)}",
    )


def _add(
    p, known, fields, section, table, key, target, shape, labels, factor=False, required=False
):
    """Parse ``table[key]`` (if given) into the field that fills LinearSDE's ``target``."""
    where = f"[{section}] {key}"
    if key not in table:
        if required:
            raise p.error(f"[{section}]", f"missing {key!r}")
        return
    value = table[key]
    spec = p.matrix(value, shape, where, known, labels=labels, free_cols=factor, key=key)
    fields[target] = Field(key, target, where, spec, factor, value)


def _one_of(p, section, table, a, b, required) -> None:
    if a in table and b in table:
        raise p.error(f"[{section}]", f"give {a!r} or {b!r}, not both")
    if required and a not in table and b not in table:
        raise p.error(f"[{section}]", f"missing {a!r} (or {b!r})")


def matrix_fields(p: Parser, dynamics, measurement, known) -> dict[str, Field]:
    """``[dynamics]`` and ``[measurement]`` (keys already checked): LinearSDE field -> Field.

    ``known``: the names cells may use; the variables are the parser's.
    """
    n, m, k = len(p.latent), len(p.manifest), len(p.inputs)
    lat, man, inp = _labels(p)
    fields: dict[str, Field] = {}
    add = functools.partial(_add, p, known, fields)
    add("dynamics", dynamics, "drift", "drift", (n, n), (lat, lat), required=True)
    add("dynamics", dynamics, "intercept", "drift_intercept", (n,), (lat, ""))
    _one_of(p, "dynamics", dynamics, "diffusion", "diffusion_sd", True)
    add("dynamics", dynamics, "diffusion", "diffusion", (n, n), (lat, lat))
    add("dynamics", dynamics, "diffusion_sd", "diffusion", (n, n), (lat, ""), factor=True)
    add("measurement", measurement, "loadings", "observation", (m, n), (man, lat), required=True)
    add("measurement", measurement, "intercept", "observation_intercept", (m,), (man, ""))
    _one_of(p, "measurement", measurement, "noise", "noise_sd", True)
    add("measurement", measurement, "noise", "observation_noise", (m, m), (man, man))
    add("measurement", measurement, "noise_sd", "observation_noise", (m, m), (man, ""), factor=True)
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
    return fields


def initial_fields(p: Parser, initial, known) -> dict[str, Field]:
    """``[initial]``'s mean and covariance (or its factor ``sd``): field -> Field."""
    n = len(p.latent)
    lat = _labels(p)[0]
    fields: dict[str, Field] = {}
    add = functools.partial(_add, p, known, fields)
    add("initial", initial, "mean", "initial_mean", (n,), (lat, ""))
    add("initial", initial, "cov", "initial_cov", (n, n), (lat, lat))
    add("initial", initial, "sd", "initial_cov", (n, n), (lat, ""), factor=True)
    return fields


# ---------------------------------------------------------------------------- builders


class _FactorList:
    """Polynomial factors: a cell is a linear factor, a 2-list a quadratic factor."""

    def __init__(self, parser, items, where, known):
        if not isinstance(items, list):
            raise parser.error(where, f"expected a list of factors, got {items!r}")
        self.factors = []
        for i, item in enumerate(items):
            if isinstance(item, list):
                if len(item) != 2:
                    raise parser.error(
                        f"{where}[{i}]",
                        f"a quadratic factor has 2 coefficients [a, b], got {len(item)}",
                    )
                self.factors.append(
                    [parser.expr(c, known, f"{where}[{i}][{j}]") for j, c in enumerate(item)]
                )
            else:
                self.factors.append([parser.expr(item, known, f"{where}[{i}]")])
        self.degree = sum(len(f) for f in self.factors)

    @property
    def expressions(self):
        return [e for f in self.factors for e in f]


class Companion:
    """``drift = { builder = "companion", factors = [...] | coefficients = [...] }``.

    ``positive_cells``: ``(where, Expression)`` of the factor coefficients, which must be
    provably positive (every draw is then stable); empty for ``coefficients``.
    """

    target = "drift"

    def __init__(self, parser, args, shape, where, known):
        n = shape[0]
        _only_keys(parser, args, ("factors", "coefficients"), where, "companion")
        if ("factors" in args) == ("coefficients" in args):
            raise parser.error(where, "companion needs exactly one of 'factors' or 'coefficients'")
        if "factors" in args:
            self.factors = _FactorList(parser, args["factors"], f"{where}.factors", known)
            if self.factors.degree != n:
                raise parser.error(
                    f"{where}.factors",
                    f"the factors have total degree {self.factors.degree} but there are {n} "
                    "latent variables (a 2-list is a quadratic factor, a single cell a linear one)",
                )
            self.coefficients = None
            self.positive_cells = [
                (f"{where}.factors[{i}]" + (f"[{j}]" if len(f) == 2 else ""), e)
                for i, f in enumerate(self.factors.factors)
                for j, e in enumerate(f)
            ]
        else:
            self.factors = None
            coef = args["coefficients"]
            if not isinstance(coef, list) or len(coef) != n:
                got = len(coef) if isinstance(coef, list) else repr(coef)
                raise parser.error(
                    f"{where}.coefficients",
                    f"expected {n} coefficients α0..α{n - 1} (one per latent variable), got {got}",
                )
            self.coefficients = [
                parser.expr(c, known, f"{where}.coefficients[{i}]") for i, c in enumerate(coef)
            ]
            self.positive_cells = []

    @property
    def expressions(self):
        return self.factors.expressions if self.factors else self.coefficients

    def polynomial(self, env):
        """Coefficients α0..α_{n-1} of the monic AR polynomial (lowest first)."""
        if self.coefficients is not None:
            return [e(env) for e in self.coefficients]
        factors = [[e(env) for e in f] if len(f) == 2 else f[0](env) for f in self.factors.factors]
        return ar_from_factors(factors)[::-1]

    def value(self, env, dtype, context):
        return companion(self.polynomial(env), dtype)


class MALoadings:
    """``loadings = { builder = "ma_loadings", factors | coefficients, scale }``."""

    target = "loadings"

    def __init__(self, parser, args, shape, where, known):
        m, n = shape
        _only_keys(parser, args, ("factors", "coefficients", "scale"), where, "ma_loadings")
        if m != 1:
            raise parser.error(
                where, f"ma_loadings gives one row, but the model has {m} manifest variables"
            )
        if "factors" in args and "coefficients" in args:
            raise parser.error(where, "ma_loadings takes 'factors' or 'coefficients', not both")
        self.factors = self.coefficients = None
        if "factors" in args:
            self.factors = _FactorList(parser, args["factors"], f"{where}.factors", known)
            q = self.factors.degree
        else:
            coef = args.get("coefficients", [])
            if not isinstance(coef, list):
                raise parser.error(f"{where}.coefficients", f"expected a list, got {coef!r}")
            self.coefficients = [
                parser.expr(c, known, f"{where}.coefficients[{i}]") for i, c in enumerate(coef)
            ]
            q = len(self.coefficients)
        if q > n - 1:
            raise parser.error(
                where,
                f"the MA polynomial has degree {q} but a CARMA model with {n} latent variables "
                f"allows at most {n - 1}",
            )
        self.scale = parser.expr(args.get("scale", 1), known, f"{where}.scale")
        self.n = n

    @property
    def expressions(self):
        inner = self.factors.expressions if self.factors else self.coefficients
        return [*inner, self.scale]

    def polynomial(self, env):
        if self.coefficients is not None:
            return [1.0] + [e(env) for e in self.coefficients]
        factors = [[e(env) for e in f] if len(f) == 2 else f[0](env) for f in self.factors.factors]
        return ma_from_factors(factors)  # 1 + c s  or  1 + a s + b s² per factor

    def value(self, env, dtype, context):
        beta = [jnp.asarray(b, dtype) for b in self.polynomial(env)]
        beta += [jnp.zeros((), dtype)] * (self.n - len(beta))
        return (jnp.asarray(self.scale(env), dtype) * jnp.stack(beta))[None, :]


class StationarySD:
    """``diffusion = { builder = "stationary_sd", sd, noise_on, manifest }``."""

    target = "diffusion"

    def __init__(self, parser, args, shape, where, known):
        latent, manifest = parser.latent, parser.manifest
        _only_keys(parser, args, ("sd", "noise_on", "manifest"), where, "stationary_sd")
        if "sd" not in args:
            raise parser.error(
                where, "stationary_sd needs 'sd' (the stationary standard deviation)"
            )
        self.sd = parser.expr(args["sd"], known, f"{where}.sd")
        on = args.get("noise_on", latent[-1])
        if on not in latent:
            raise parser.error(
                f"{where}.noise_on", f"unknown latent variable {on!r}{suggest(str(on), latent)}"
            )
        out = args.get("manifest", manifest[0])
        if out not in manifest:
            raise parser.error(
                f"{where}.manifest",
                f"unknown manifest variable {out!r}{suggest(str(out), manifest)}",
            )
        self.j = latent.index(on)
        self.k = manifest.index(out)
        self.n = len(latent)

    @property
    def expressions(self):
        return [self.sd]

    def value(self, env, dtype, context):
        h = context["observation"][self.k]
        sd = jnp.asarray(self.sd(env), dtype)
        return stationary_sd_diffusion(context["drift"], h, sd, self.j)


def _only_keys(parser, args, allowed, where, builder):
    for k in args:
        if k not in allowed:
            raise parser.error(
                where,
                f"{builder} has no argument {k!r}{suggest(k, allowed)}; "
                f"it takes {', '.join(allowed)}",
            )


#: Structured-matrix builders: name -> builder class (its ``target`` is the spec key).
BUILDERS = {"companion": Companion, "ma_loadings": MALoadings, "stationary_sd": StationarySD}
