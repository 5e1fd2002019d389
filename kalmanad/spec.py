"""Declarative continuous-time model specifications: the language of the model zoo.

A *spec* describes a continuous-time linear SDE model

    dx = (A x + B u + c) dt + G dW,        y_k = H x(t_k) + D u_k + d + e_k,  e_k ~ N(0, R)

in words a scientist can read, and compiles to a :class:`kalmanad.LinearSDE` (via
:meth:`ModelSpec.build`) and to a NumPyro model function (via
:meth:`ModelSpec.numpyro_model`). Specs are TOML files (the zoo in the repository's
top-level ``models/`` folder; :func:`load_model` and :func:`list_models`) or Python
dicts with the same layout (:meth:`ModelSpec.from_dict`). A complete example, the
one-dimensional Ornstein–Uhlenbeck process observed with noise::

    [model]
    description = "Ornstein–Uhlenbeck process observed with noise"
    latent = ["x"]                      # state variables, in order
    manifest = ["y"]                    # observed variables (CSV columns), in order

    [parameters]                        # every free parameter with its prior
    theta = "LogNormal(0, 1)"           # mean-reversion rate
    mu = "Normal(0, 5)"                 # long-run mean
    sigma = "HalfNormal(2)"             # stationary standard deviation of x
    noise = "HalfNormal(1)"             # measurement-noise standard deviation

    [dynamics]
    drift = [["-theta"]]                # A: one row per latent variable
    intercept = ["theta * mu"]          # c
    diffusion = [["2 * theta * sigma^2"]]   # the rate GGᵀ ...
    # diffusion_sd = [["..."]]          # ... or G itself (diffusion = G Gᵀ)

    [measurement]
    loadings = [[1]]                    # H: one row per manifest variable
    noise_sd = [["noise"]]              # R = S Sᵀ (or `noise` = R itself)

Sections and keys (LinearSDE field in brackets):

* ``[model]``: ``latent``, ``manifest`` (required lists of names), ``inputs`` (names of
  time-varying inputs, optional), ``name``, ``title``, ``description``, ``time_unit``,
  ``references``.
* ``[parameters]``: ``name = "Prior(args)"`` (a NumPyro distribution from
  :data:`PRIORS`, e.g. ``"HalfNormal(1)"``, ``"LogNormal(0, 1)"``,
  ``"TruncatedNormal(0, 1, low=0)"``), a number (a fixed constant), or a table
  ``{ prior = "...", description = "..." }`` / ``{ value = 1.0, description = "..." }``.
* ``[derived]`` (optional): named expressions of parameters used in the matrices and
  reported as deterministic sites, e.g. ``lam = "sqrt(3) / lengthscale"``.
* ``[dynamics]``: ``drift`` (A, n×n, required), ``intercept`` (c, n),
  ``diffusion`` (GGᵀ, n×n) or ``diffusion_sd`` (G, n×r; one is required),
  ``input_effect`` (B, n×k), ``impulse_effect`` (B_imp, n×k).
* ``[measurement]``: ``loadings`` (H, m×n, required), ``intercept`` (d, m),
  ``noise`` (R, m×m) or ``noise_sd`` (S with R = S Sᵀ; one is required),
  ``input_effect`` (D, m×k).
* ``[initial]`` (optional; omitted means a stationary start): ``state`` =
  ``"stationary"`` | ``"diffuse"`` | ``"known"``, ``mean`` (n), ``cov`` or ``sd``
  (a known start; cov = sd sdᵀ), ``diffuse_scale`` (variance of a diffuse start).
* ``[random_effects]``, ``[covariates]``: hierarchical (panel) models, see below.
* ``[data]``: the bundled default data set, see :meth:`ModelSpec.default_data`.

Matrix values. A matrix is a list of rows, a vector a list; each cell is a number, a
parameter or derived name, or an expression in quotes. Shorthands: a single cell for
a 1×1 matrix or a length-1 vector; the number ``0`` for all zeros;
``{ diagonal = [cells] }`` (or one cell, repeated) for a diagonal matrix;
``{ lower = [[c00], [c10, c11], ...] }`` for a lower-triangular matrix (row i lists
columns 0..i); ``{ symmetric = [[c00], [c10, c11], ...] }`` for a symmetric matrix
given by its lower triangle; and ``{ builder = "name", ... }`` for structured
matrices (:data:`BUILDERS`):

* ``drift = { builder = "companion", factors = [["a1", "a2"], "r"] }``: the companion
  matrix of the monic AR polynomial a(s) = (s² + a1 s + a2)(s + r) — a 2-list is a
  quadratic factor s² + a s + b, a single cell a linear factor s + r, total degree n.
  When every coefficient is positive every root has a negative real part, so every
  draw is stable, and no roots are ever computed, so gradients are finite
  everywhere (repeated roots included). The factor cells must be provably positive
  (positive constants, parameters with positive priors, exp/softplus/... of
  anything); ``coefficients = [α0, ..., α_{n-1}]`` gives a(s) = sⁿ + α_{n-1}s^{n-1} +
  ... + α0 directly, with no stability guarantee. The state is (x, x', ..., x^{(n-1)}).
* ``loadings = { builder = "ma_loadings", factors = ["tau"], scale = 1 }``: the
  single row scale·[β0, β1, ..., βq, 0, ...] of the MA polynomial b(s) = Σ βj s^j =
  Π(1 + a s + b s²) Π(1 + c s) (β0 = 1); ``coefficients = [β1, ..., βq]`` instead.
  Positive factor coefficients give a minimum-phase (identifiable) CARMA model.
* ``diffusion = { builder = "stationary_sd", sd = "sigma", noise_on = "x2",
  manifest = "y" }``: white noise entering latent ``noise_on`` (default: the last
  latent) with the rate that makes the stationary standard deviation of the
  noise-free ``manifest`` (default: the first) equal ``sd``. Needs a stable drift
  (e.g. ``companion``): a CAR/CARMA amplitude that does not fight the AR
  coefficients in the posterior.

Expressions are parsed with :mod:`ast` and evaluated by a whitelist evaluator (no
``eval``): numbers, names, ``+ - * /``, ``^`` or ``**`` for powers (``-x^2`` is
``-(x^2)``), parentheses, the constant ``pi`` and the functions in
:data:`FUNCTIONS`. Anything else (attribute access, indexing, comparisons, other
calls) is rejected with an error naming the file, field and cell.

Hierarchical models (as in ctsem). ``[random_effects]`` lists parameters that vary
by subject::

    [random_effects]
    parameters = ["auto1", "mu1"]       # any free parameters
    sd_prior = "HalfNormal(1)"          # or a table { auto1 = "HalfNormal(0.5)", ... }
    correlation_prior = "LKJ(2)"        # LKJ prior on their correlation, or "none"

    [covariates]                        # time-independent subject covariates
    effects = { auto1 = ["age"], mu1 = ["age", "treated"] }
    prior = "Normal(0, 1)"              # prior of every effect coefficient

The ``[parameters]`` prior of a varying parameter θ is the prior of its population
value θ_pop. Subject s has θ_s = T(T⁻¹(θ_pop) + Σ_c β_{θ,c} z_{s,c} + δ_{θ,s}) where T
maps the real line onto the prior's support (identity for real parameters, exp for
positive ones, a scaled logistic for intervals), so subject values respect the
support and θ_pop is the typical (median) subject's value. The deviations are
non-centred: δ_s = diag(sd) L η_s with η_s ~ N(0, I) (site ``re_z``), sd the
per-parameter sites ``<param>_sd`` and L the Cholesky factor of the correlation
matrix (site ``re_corr_cholesky``, deterministic ``re_corr``). The covariate effects
β are sites ``<covariate>_on_<param>``; the subject values are reported as
deterministic sites ``<param>_subject``. Covariates enter as given (centre or
standardise them so θ_pop means "a subject with average covariates").
"""

from __future__ import annotations

import ast
import csv
import difflib
import inspect
import keyword
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.special
from numpyro.distributions.transforms import biject_to

from kalmanad.linalg import solve_continuous_lyapunov
from kalmanad.model import LinearSDE

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "BUILDERS",
    "FUNCTIONS",
    "PRIORS",
    "DataError",
    "Expression",
    "ModelData",
    "ModelSpec",
    "PanelData",
    "SpecError",
    "list_models",
    "load_model",
    "models_dir",
    "parse_expression",
    "parse_prior",
    "to_panel",
]


# ----------------------------------------------------------------------------- errors


class SpecError(ValueError):
    """A problem in a model spec. The message names the file, the field and the cell.

    Attributes:
        source: the spec file (or ``"<dict>"``), or None.
        where: the field and cell, e.g. ``"[dynamics] drift[1][0]"``, or None.
        problem: the problem alone.
    """

    def __init__(self, problem: str, *, source: str | None = None, where: str | None = None):
        self.source = source
        self.where = where
        self.problem = problem
        super().__init__(": ".join(p for p in (source, where, problem) if p))


class DataError(ValueError):
    """A problem in a data file (one line: file, line, column and the problem)."""


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------------ expressions

#: Functions allowed in expressions: name -> (number of arguments, jax, numpy).
FUNCTIONS: dict[str, tuple[int, Callable, Callable]] = {
    "exp": (1, jnp.exp, np.exp),
    "log": (1, jnp.log, np.log),
    "log1p": (1, jnp.log1p, np.log1p),
    "expm1": (1, jnp.expm1, np.expm1),
    "sqrt": (1, jnp.sqrt, np.sqrt),
    "square": (1, jnp.square, np.square),
    "abs": (1, jnp.abs, np.abs),
    "sin": (1, jnp.sin, np.sin),
    "cos": (1, jnp.cos, np.cos),
    "tanh": (1, jnp.tanh, np.tanh),
    "softplus": (1, jax.nn.softplus, lambda x: np.logaddexp(0.0, x)),
    "sigmoid": (1, jax.nn.sigmoid, scipy.special.expit),
    "logit": (1, jax.scipy.special.logit, scipy.special.logit),
    "min": (2, jnp.minimum, np.minimum),
    "max": (2, jnp.maximum, np.maximum),
}

_CONSTANTS = {"pi": math.pi}

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}

_FORBIDDEN = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Compare: "comparisons",
    ast.BoolOp: "'and'/'or'",
    ast.IfExp: "conditional expressions",
    ast.Lambda: "lambda",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Starred: "starred arguments",
    ast.NamedExpr: "assignment",
    ast.JoinedStr: "strings",
}


class _Node(NamedTuple):
    fn: Callable[[Mapping[str, Any]], Any]  # env -> value (jax)
    names: frozenset
    const: float | None  # the value when the node has no free names


class Expression:
    """A parsed, validated expression of parameters (immutable).

    Attributes:
        text: the source text.
        names: the free names it uses (parameters or derived quantities).
        constant: its value when it uses no names, else None.

    Calling it with a mapping name -> value evaluates it with ``jax.numpy``
    (jit/grad/vmap-safe).
    """

    __slots__ = ("_fn", "constant", "names", "text", "tree")

    def __init__(self, text: str, tree: ast.AST, node: _Node):
        self.text = text
        self.tree = tree
        self.names = node.names
        self.constant = node.const
        self._fn = node.fn

    def __call__(self, env: Mapping[str, Any]):
        return self._fn(env)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def parse_expression(
    text,
    known=None,
    *,
    source: str | None = None,
    where: str | None = None,
    hints: Mapping[str, str] | None = None,
) -> Expression:
    """Parse a cell: a number, a name or an arithmetic expression of names.

    Args:
        text: a number or a string such as ``"-exp(log_k)"``, ``"2*zeta*omega"``,
            ``"sigma^2"``.
        known: the names that may appear (parameters, derived quantities); None
            accepts any identifier.
        source, where: put into error messages (file and field/cell).
        hints: name -> explanation added when that name is used but unknown (e.g.
            a state variable written where a parameter belongs).

    Raises:
        SpecError: unparseable text, an unknown name (with a suggestion), a call of a
            function outside :data:`FUNCTIONS`, or any construct other than numbers,
            names, + - * / ^ ** and parentheses.
    """

    def fail(problem):
        return SpecError(problem, source=source, where=where)

    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise fail(f"expected a number or an expression in quotes, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
        if not math.isfinite(value):
            raise fail(f"{text!r} is not a finite number")
        tree = ast.Constant(value)
        return Expression(repr(text), tree, _Node(lambda env, v=value: v, frozenset(), value))
    src = text.strip()
    if not src:
        raise fail("empty expression")
    # '^' is a power, as in the maths; Python would read it as xor with the wrong precedence.
    try:
        tree = ast.parse(src.replace("^", "**"), mode="eval").body
    except SyntaxError as e:
        raise fail(f"cannot parse expression {src!r}: {e.msg}") from None
    known = None if known is None else frozenset(known)
    node = _compile(tree, known, fail, hints or {})
    return Expression(src, tree, node)


def _compile(node, known, fail, hints=None) -> _Node:
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise fail(f"{v!r} is not a number: only real numbers are allowed")
        value = float(v)
        return _Node(lambda env: value, frozenset(), value)
    if isinstance(node, ast.Name):
        name = node.id
        if name in _CONSTANTS:
            value = _CONSTANTS[name]
            return _Node(lambda env: value, frozenset(), value)
        if name in FUNCTIONS:
            raise fail(f"{name!r} is a function: call it, as in {name}(x)")
        if known is not None and name not in known:
            hint = f" ({hints[name]})" if hints and name in hints else _suggest(name, known)
            raise fail(f"unknown parameter {name!r}{hint}")
        return _Node(lambda env: env[name], frozenset([name]), None)
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand, known, fail, hints)
        if isinstance(node.op, ast.USub):
            f = operand.fn
            const = None if operand.const is None else -operand.const
            return _Node(lambda env: -f(env), operand.names, const)
        if isinstance(node.op, ast.UAdd):
            return operand
        raise fail(f"operator {ast.unparse(node).split()[0]!r} is not allowed")
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            op = {
                ast.FloorDiv: "//",
                ast.Mod: "%",
                ast.MatMult: "@",
                ast.BitAnd: "&",
                ast.BitOr: "|",
                ast.LShift: "<<",
                ast.RShift: ">>",
            }.get(type(node.op), "?")
            raise fail(f"operator {op!r} is not allowed (use + - * / ^)")
        op = _BINOPS[type(node.op)]
        left = _compile(node.left, known, fail, hints)
        right = _compile(node.right, known, fail, hints)
        const = None
        if left.const is not None and right.const is not None:
            with np.errstate(all="ignore"):
                const = float(op(np.float64(left.const), np.float64(right.const)))
            if not math.isfinite(const):
                raise fail(f"{ast.unparse(node)!r} evaluates to {const}")
            value = const
            return _Node(lambda env: value, frozenset(), value)
        lf, rf = left.fn, right.fn
        if isinstance(node.op, ast.Pow) and right.const is not None:
            e = right.const
            if e == int(e) and abs(e) <= 64:
                # x^2 -> integer_pow: exact, fine for a negative base, cheap gradient.
                ie = int(e)
                return _Node(lambda env: lf(env) ** ie, left.names, None)
        return _Node(lambda env: op(lf(env), rf(env)), left.names | right.names, None)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise fail(
                f"only calls of the functions {', '.join(FUNCTIONS)} are allowed, "
                f"got {ast.unparse(node.func)!r}"
            )
        fname = node.func.id
        if fname not in FUNCTIONS:
            if known is not None and fname in known:
                raise fail(f"{fname!r} is a parameter, not a function")
            raise fail(
                f"unknown function {fname!r}{_suggest(fname, FUNCTIONS)}; "
                f"allowed: {', '.join(FUNCTIONS)}"
            )
        if node.keywords:
            raise fail(f"{fname}() takes no keyword arguments")
        nargs, jfn, nfn = FUNCTIONS[fname]
        if len(node.args) != nargs:
            plural = "s" if nargs != 1 else ""
            raise fail(f"{fname}() takes {nargs} argument{plural}, got {len(node.args)}")
        args = [_compile(a, known, fail, hints) for a in node.args]
        if all(a.const is not None for a in args):
            with np.errstate(all="ignore"):
                value = float(nfn(*[np.float64(a.const) for a in args]))
            if not math.isfinite(value):
                raise fail(f"{ast.unparse(node)!r} evaluates to {value}")
            return _Node(lambda env: value, frozenset(), value)
        fns = [a.fn for a in args]
        names = frozenset().union(*(a.names for a in args))
        if nargs == 1:
            f0 = fns[0]
            return _Node(lambda env: jfn(f0(env)), names, None)
        return _Node(lambda env: jfn(*[f(env) for f in fns]), names, None)
    kind = _FORBIDDEN.get(type(node))
    if kind is None:
        kind = type(node).__name__
    raise fail(f"{kind} not allowed in an expression: {ast.unparse(node)!r}")


# Sign analysis: can an expression be proven positive for every parameter value?
_POS, _NONNEG, _ANY = 2, 1, 0


def _sign(node: ast.AST, name_sign: Callable[[str], int]) -> int:
    if isinstance(node, ast.Constant):
        v = float(node.value)
        return _POS if v > 0 else (_NONNEG if v == 0 else _ANY)
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _POS if _CONSTANTS[node.id] > 0 else _ANY
        return name_sign(node.id)
    if isinstance(node, ast.UnaryOp):
        return _sign(node.operand, name_sign) if isinstance(node.op, ast.UAdd) else _ANY
    if isinstance(node, ast.BinOp):
        a, b = _sign(node.left, name_sign), _sign(node.right, name_sign)
        if isinstance(node.op, ast.Add):
            if a >= _NONNEG and b >= _NONNEG:
                return _POS if _POS in (a, b) else _NONNEG
        elif isinstance(node.op, ast.Mult):
            return min(a, b)
        elif isinstance(node.op, ast.Div):
            return a if b == _POS else _ANY
        elif isinstance(node.op, ast.Pow):
            if a >= _NONNEG:
                return a
            if isinstance(node.right, ast.Constant) and float(node.right.value) % 2 == 0:
                return _NONNEG
        return _ANY
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        fname = node.func.id
        args = [_sign(a, name_sign) for a in node.args]
        if fname in ("exp", "softplus", "sigmoid"):
            return _POS
        if fname in ("sqrt", "log1p", "tanh", "expm1"):
            return args[0]
        if fname in ("square", "abs"):
            return _POS if args[0] == _POS else _NONNEG
        if fname == "min":
            return min(args)
        if fname == "max":
            return max(args)
    return _ANY


# ------------------------------------------------------------------------------ priors

#: Distributions allowed as priors (names as written in specs).
PRIORS: dict[str, type] = {
    "Normal": dist.Normal,
    "HalfNormal": dist.HalfNormal,
    "LogNormal": dist.LogNormal,
    "Exponential": dist.Exponential,
    "Gamma": dist.Gamma,
    "InverseGamma": dist.InverseGamma,
    "Beta": dist.Beta,
    "Uniform": dist.Uniform,
    "StudentT": dist.StudentT,
    "Cauchy": dist.Cauchy,
    "HalfCauchy": dist.HalfCauchy,
    "Laplace": dist.Laplace,
    "TruncatedNormal": dist.TruncatedNormal,
}


def _parse_call(text: str, allowed: Mapping[str, Any], what: str, fail):
    """Parse ``Name(const, ..., key=const)`` with constant-expression arguments."""
    try:
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval").body
    except SyntaxError as e:
        raise fail(f"cannot parse {what} {text!r}: {e.msg}") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        raise fail(f"{what} must look like Name(arguments), e.g. 'Normal(0, 1)'; got {text!r}")
    name = tree.func.id
    if name not in allowed:
        raise fail(
            f"unknown {what} {name!r}{_suggest(name, allowed)}; allowed: {', '.join(allowed)}"
        )

    def const(node):
        value = _compile(node, frozenset(), fail).const
        if value is None:  # pragma: no cover - no names are known, so _compile raised
            raise fail(f"{what} arguments must be numbers")
        return value

    args = [const(a) for a in tree.args]
    if any(isinstance(a, ast.Starred) for a in tree.args) or any(
        k.arg is None for k in tree.keywords
    ):
        raise fail(f"{what} arguments must be plain numbers")
    kwargs = {k.arg: const(k.value) for k in tree.keywords}
    return name, args, kwargs


class _Prior:
    """A prior: a factory of fresh NumPyro distributions (so dtypes follow JAX's config)."""

    __slots__ = ("_factory", "text")

    def __init__(self, text: str, factory: Callable[[], dist.Distribution]):
        self.text = text
        self._factory = factory

    def make(self) -> dist.Distribution:
        return self._factory()

    def __repr__(self) -> str:
        return self.text


def parse_prior(text, *, source: str | None = None, where: str | None = None) -> _Prior:
    """Parse a prior such as ``"HalfNormal(1)"`` or ``"TruncatedNormal(0, 1, low=0)"``.

    A NumPyro distribution object (scalar, batch and event shape ``()``) is accepted
    as is. Arguments may be constant expressions (``"LogNormal(log(10), 1)"``).

    Raises:
        SpecError: unknown distribution (with suggestion) or invalid arguments.
    """

    def fail(problem):
        return SpecError(problem, source=source, where=where)

    if isinstance(text, dist.Distribution):
        d = text
        if d.batch_shape != () or d.event_shape != ():
            raise fail(
                f"a prior must be a scalar distribution, got batch_shape={d.batch_shape}, "
                f"event_shape={d.event_shape}"
            )
        return _Prior(repr(d), lambda: d)
    if not isinstance(text, str):
        raise fail(f"a prior must be a string such as 'Normal(0, 1)', got {text!r}")
    name, args, kwargs = _parse_call(text, PRIORS, "prior", fail)
    cls = PRIORS[name]
    _check_prior_arguments(name, args, kwargs, text.strip(), fail)
    try:
        d = cls(*args, **kwargs, validate_args=True)
    except (TypeError, ValueError) as e:
        raise fail(f"invalid prior {text.strip()!r}: {e}") from None
    if d.batch_shape != () or d.event_shape != ():
        raise fail(f"prior {text.strip()!r} must be scalar")
    return _Prior(text.strip(), lambda: cls(*args, **kwargs))


# Prior arguments that must be positive (scales, rates, shapes, degrees of freedom).
_POSITIVE_PRIOR_ARGUMENTS = frozenset(
    {"scale", "rate", "concentration", "concentration0", "concentration1", "df"}
)


def _check_prior_arguments(name: str, args: list, kwargs: dict, text: str, fail) -> None:
    """Check a prior's arguments by name, before NumPyro sees them.

    Raises (via ``fail``) for too many or unknown arguments, missing required ones,
    a scale, rate, shape or degrees of freedom that is not positive, and bounds
    ``low >= high`` (Uniform, TruncatedNormal); each message names the argument and
    the prior as written.
    """
    params = [
        p
        for p in inspect.signature(PRIORS[name]).parameters.values()
        if p.name != "validate_args"
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    names = [p.name for p in params]
    usage = f"{name}({', '.join(positional + [f'{k}=...' for k in names if k not in positional])})"
    if len(args) > len(positional):
        raise fail(
            f"invalid prior {text!r}: {name} takes at most {len(positional)} positional "
            f"argument{'s' if len(positional) != 1 else ''}: {usage}"
        )
    bound = dict(zip(positional, args, strict=False))
    for key, value in kwargs.items():
        if key not in names:
            raise fail(
                f"invalid prior {text!r}: {name} has no argument {key!r}{_suggest(key, names)}; "
                f"it takes {usage}"
            )
        if key in bound:
            raise fail(f"invalid prior {text!r}: {name}'s {key!r} is given twice")
        bound[key] = value
    missing = [p.name for p in params if p.default is p.empty and p.name not in bound]
    if missing:
        raise fail(f"invalid prior {text!r}: {name} needs {', '.join(missing)}: {usage}")
    for key, value in bound.items():
        if key in _POSITIVE_PRIOR_ARGUMENTS and not value > 0:
            hint = f" (did you mean {-value:g}?)" if value < 0 else ""
            raise fail(
                f"invalid prior {text!r}: the {key} of {name} must be positive, got {value:g}{hint}"
            )
    low, high = bound.get("low"), bound.get("high")
    if name == "Uniform":
        low, high = bound.get("low", 0.0), bound.get("high", 1.0)
    if low is not None and high is not None and not low < high:
        fix = f"; write {name}({high:g}, {low:g})" if name == "Uniform" and low > high else ""
        raise fail(
            f"invalid prior {text!r}: the lower bound {low:g} must be below the upper "
            f"bound {high:g}{fix}"
        )


def _positive_support(prior: _Prior) -> bool:
    lower = getattr(prior.make().support, "lower_bound", None)
    try:
        return lower is not None and float(lower) >= 0.0
    except (TypeError, ValueError):  # pragma: no cover - array-valued bound
        return False


# ---------------------------------------------------------------------------- matrices

_IDENT_HINT = "names must be identifiers: letters, digits and '_', not starting with a digit"


def _check_identifier(name, what: str, fail) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise fail(f"{what} {name!r} is not a valid name ({_IDENT_HINT})")
    return name


class _Cells:
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


class _Field:
    """One matrix of the spec: its cells or builder, and whether it is a factor."""

    def __init__(self, key: str, target: str, where: str, spec, factor: bool, display):
        self.key = key  # spec key, e.g. "diffusion_sd"
        self.target = target  # LinearSDE field, e.g. "diffusion"
        self.where = where
        self.spec = spec  # _Cells or a builder
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


class _Parser:
    """Parses one spec (carries the source name for error messages)."""

    def __init__(self, source: str):
        self.source = source
        self.hints: dict[str, str] = {}

    def error(self, where, problem) -> SpecError:
        return SpecError(problem, source=self.source, where=where)

    def failer(self, where):
        return lambda problem: self.error(where, problem)

    def expr(self, value, known, where) -> Expression:
        return parse_expression(value, known, source=self.source, where=where, hints=self.hints)

    # -- matrices ------------------------------------------------------------------------
    def matrix(self, value, shape, where, known, *, labels, free_cols=False, builders=None):
        """Parse a matrix/vector value into _Cells or a builder.

        shape: (r,) or (r, c); with free_cols the column count is taken from the value.
        labels: (row_label, col_label) texts for error messages.
        """
        is_vec = len(shape) == 1
        if isinstance(value, Mapping):
            if "builder" in value:
                return self.builder(value, shape, where, known, builders or {})
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
                    f"unknown matrix form {form!r}{_suggest(form, forms)}; "
                    "use diagonal, lower, symmetric or builder",
                )
            if is_vec:
                raise self.error(where, f"'{form}' is for matrices; this is a vector: give a list")
            n = shape[0]
            if not free_cols and shape[1] != n:
                raise self.error(
                    where, f"'{form}' needs a square matrix; this one is {_shape_text(shape)}"
                )
            return self.structured(form, body, n, f"{where}.{form}", known, labels)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            if value == 0 and not isinstance(value, str):
                out_shape = (shape[0], shape[0]) if free_cols else shape
                return _Cells(out_shape, np.zeros(out_shape), [])
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
        if not isinstance(value, list):
            raise self.error(where, f"expected a list, a table or a cell, got {value!r}")
        rows, cols = labels
        if len(value) != shape[0]:
            raise self.error(
                where,
                f"expected {shape[0]} {'entries' if is_vec else 'rows'} ({rows}), got {len(value)}",
            )
        if is_vec:
            cells = {}
            for i, cell in enumerate(value):
                if isinstance(cell, list):
                    raise self.error(
                        f"{where}[{i}]", "expected a cell, got a list (this is a vector)"
                    )
                cells[(i,)] = cell
            return self.cells_from(shape, cells, where, known)
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
                what = f"({cols})" if not free_cols else "(as many as row 0)"
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
        return _Cells(shape, base, dynamic, wheres)

    def builder(self, value, shape, where, known, builders):
        name = value["builder"]
        if name not in BUILDERS:
            raise self.error(
                where,
                f"unknown builder {name!r}{_suggest(str(name), BUILDERS)}; available: "
                f"{', '.join(BUILDERS)}",
            )
        if name not in builders:
            raise self.error(
                where, f"builder {name!r} does not apply here; it builds {BUILDERS[name].target}"
            )
        args = {k: v for k, v in value.items() if k != "builder"}
        return builders[name](self, args, shape, f"{where}", known)


# ---------------------------------------------------------------------------- builders


def _poly_mul(p, q):
    """Product of polynomials given as coefficient lists, lowest degree first."""
    out = [0.0] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] = out[i + j] + a * b
    return out


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


class _Companion:
    """``drift = { builder = "companion", factors = [...] | coefficients = [...] }``."""

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
            self._check_positive = [
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
            self._check_positive = []

    @property
    def expressions(self):
        return self.factors.expressions if self.factors else self.coefficients

    def polynomial(self, env):
        """Coefficients α0..α_{n-1} of the monic AR polynomial (lowest first)."""
        if self.coefficients is not None:
            return [e(env) for e in self.coefficients]
        poly = [1.0]
        for f in self.factors.factors:
            vals = [e(env) for e in f]
            # s + r -> [r, 1];  s² + a s + b -> [b, a, 1]
            poly = _poly_mul(poly, [vals[0], 1.0] if len(vals) == 1 else [vals[1], vals[0], 1.0])
        return poly[:-1]

    def value(self, env, dtype, context):
        alpha = jnp.stack([jnp.asarray(a, dtype) for a in self.polynomial(env)])
        n = alpha.shape[0]
        last = -alpha[None, :]
        if n == 1:
            return last
        return jnp.concatenate([jnp.eye(n - 1, n, k=1, dtype=dtype), last], axis=0)


class _MALoadings:
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
        poly = [1.0]
        for f in self.factors.factors:
            vals = [e(env) for e in f]
            poly = _poly_mul(poly, [1.0, *vals])  # 1 + c s  or  1 + a s + b s²
        return poly

    def value(self, env, dtype, context):
        beta = [jnp.asarray(b, dtype) for b in self.polynomial(env)]
        beta += [jnp.zeros((), dtype)] * (self.n - len(beta))
        return (jnp.asarray(self.scale(env), dtype) * jnp.stack(beta))[None, :]


class _StationarySD:
    """``diffusion = { builder = "stationary_sd", sd, noise_on, manifest }``."""

    target = "diffusion"

    def __init__(self, parser, args, shape, where, known, *, latent, manifest):
        _only_keys(parser, args, ("sd", "noise_on", "manifest"), where, "stationary_sd")
        if "sd" not in args:
            raise parser.error(
                where, "stationary_sd needs 'sd' (the stationary standard deviation)"
            )
        self.sd = parser.expr(args["sd"], known, f"{where}.sd")
        on = args.get("noise_on", latent[-1])
        if on not in latent:
            raise parser.error(
                f"{where}.noise_on", f"unknown latent variable {on!r}{_suggest(str(on), latent)}"
            )
        out = args.get("manifest", manifest[0])
        if out not in manifest:
            raise parser.error(
                f"{where}.manifest",
                f"unknown manifest variable {out!r}{_suggest(str(out), manifest)}",
            )
        self.j = latent.index(on)
        self.k = manifest.index(out)
        self.n = len(latent)

    @property
    def expressions(self):
        return [self.sd]

    def value(self, env, dtype, context):
        a = context["drift"]
        h = context["observation"][self.k]
        e = jnp.zeros((self.n, self.n), dtype).at[self.j, self.j].set(1.0)
        # Unit-rate stationary covariance: A P + P Aᵀ + e eᵀ = 0; var(h x) = h P hᵀ.
        p = solve_continuous_lyapunov(a, -e)
        var = h @ p @ h
        sd = jnp.asarray(self.sd(env), dtype)
        return (sd**2 / var) * e


def _only_keys(parser, args, allowed, where, builder):
    for k in args:
        if k not in allowed:
            raise parser.error(
                where,
                f"{builder} has no argument {k!r}{_suggest(k, allowed)}; "
                f"it takes {', '.join(allowed)}",
            )


#: Structured-matrix builders: name -> builder class (its ``target`` is the spec key).
BUILDERS = {"companion": _Companion, "ma_loadings": _MALoadings, "stationary_sd": _StationarySD}


# ------------------------------------------------------------------------------- data


class ModelData(NamedTuple):
    """A data set in long format (one row per observation time and subject).

    Attributes:
        times: (N,) observation times (non-decreasing within each subject; ties are
            several rows at one time).
        y: (N, m) observations in the spec's manifest order; NaN = missing.
        subject: (N,) subject labels (strings), or None for a single series.
        inputs: (N, k) time-varying inputs in the spec's input order, or None.
        covariates: name -> (N,) time-independent covariates (constant within
            subject); empty when the spec has none.
        path: the CSV file, or None.
    """

    times: np.ndarray
    y: np.ndarray
    subject: np.ndarray | None
    inputs: np.ndarray | None
    covariates: dict
    path: Path | None

    def model_kwargs(self) -> dict:
        """Keyword arguments for :meth:`ModelSpec.numpyro_model`: times, y and, when
        present, subject, inputs and covariates (long format)."""
        out = {"times": self.times, "y": self.y}
        if self.subject is not None:
            out["subject"] = self.subject
        if self.inputs is not None:
            out["inputs"] = self.inputs
        if self.covariates:
            out["covariates"] = dict(self.covariates)
        return out

    def to_panel(self) -> PanelData:
        """The data as padded per-subject arrays (see :func:`to_panel`)."""
        subject = self.subject if self.subject is not None else np.zeros(len(self.times), int)
        return to_panel(self.times, self.y, subject, self.inputs, self.covariates)


class PanelData(NamedTuple):
    """Per-subject arrays padded to a common length T.

    Attributes:
        times: (S, T) times; a subject with fewer observations is padded by
            repeating its last time (zero-length steps).
        y: (S, T, m) observations; padding is NaN (missing), so it adds nothing to the
            log-likelihood (use ``counts`` to drop the padded entries of pointwise
            results).
        inputs: (S, T, k) inputs (padding zeros) or None.
        covariates: name -> (S,) per-subject covariate values.
        subjects: (S,) subject labels, in order of first appearance.
        counts: (S,) number of real observations of each subject.
    """

    times: np.ndarray
    y: np.ndarray
    inputs: np.ndarray | None
    covariates: dict
    subjects: np.ndarray
    counts: np.ndarray


def to_panel(times, y, subject, inputs=None, covariates=None) -> PanelData:
    """Group long-format data by subject and pad to (S, T, ...) arrays.

    Args:
        times: (N,) times, non-decreasing within each subject (ties allowed).
        y: (N, m) observations (an all-NaN array for prior-predictive use).
        subject: (N,) subject labels of any hashable type.
        inputs: (N, k) inputs or None.
        covariates: name -> (N,) values, constant within subject, or None.

    Returns:
        :class:`PanelData`; subjects in order of first appearance, rows within a
        subject in their original order.

    Raises:
        ValueError: mismatched lengths, times decreasing (or NaN) within a subject,
            or a covariate that varies within a subject.
    """
    times = np.asarray(times, dtype=float)
    if times.ndim != 1:
        raise ValueError(f"times must be (N,) in long format, got shape {times.shape}")
    n = times.shape[0]
    y = np.asarray(y, dtype=float)
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"y must be (N, m) with N={n} (from times), got shape {y.shape}")
    subject = np.asarray(subject)
    if subject.shape != (n,):
        raise ValueError(f"subject must be (N,) with N={n} (from times), got shape {subject.shape}")
    if inputs is not None:
        inputs = np.asarray(inputs, dtype=float)
        if inputs.ndim != 2 or inputs.shape[0] != n:
            raise ValueError(f"inputs must be (N, k) with N={n}, got shape {inputs.shape}")
    labels, first = [], {}
    for s in subject.tolist():
        if s not in first:
            first[s] = len(labels)
            labels.append(s)
    code = np.array([first[s] for s in subject.tolist()], dtype=int)
    n_sub = len(labels)
    counts = np.bincount(code, minlength=n_sub)
    t_max = int(counts.max()) if n_sub else 0
    m = y.shape[1]
    pt = np.zeros((n_sub, t_max))
    py = np.full((n_sub, t_max, m), np.nan)
    pu = None if inputs is None else np.zeros((n_sub, t_max, inputs.shape[1]))
    pcov = {}
    for s in range(n_sub):
        rows = np.flatnonzero(code == s)
        ts = times[rows]
        bad = np.flatnonzero(~(np.diff(ts) >= 0))
        if bad.size:
            k = bad[0]
            raise ValueError(
                f"times must be non-decreasing within subject {labels[s]!r}: time "
                f"{ts[k + 1]!r} (row {rows[k + 1]}) follows {ts[k]!r} (row {rows[k]})"
            )
        c = rows.size
        pt[s, :c] = ts
        pt[s, c:] = ts[-1]
        py[s, :c] = y[rows]
        if pu is not None:
            pu[s, :c] = inputs[rows]
    for name, values in (covariates or {}).items():
        values = np.asarray(values, dtype=float)
        if values.shape != (n,):
            raise ValueError(
                f"covariate {name!r} must be (N,) with N={n}, got shape {values.shape}"
            )
        per = np.empty(n_sub)
        for s in range(n_sub):
            rows = np.flatnonzero(code == s)
            v = values[rows]
            if np.any(v != v[0]):
                raise ValueError(
                    f"covariate {name!r} is not constant within subject {labels[s]!r} "
                    f"(values {v[0]!r} and {v[v != v[0]][0]!r})"
                )
            per[s] = v[0]
        pcov[name] = per
    return PanelData(pt, py, pu, pcov, np.array(labels), counts)


_MISSING = {"", "na", "nan", "n/a", "null", "none", "."}


def _is_comment(row) -> bool:
    return bool(row) and row[0].lstrip().startswith("#")


def _first_row(fh) -> list:
    """The first non-comment row of a CSV file (the header), or []."""
    return next((r for r in csv.reader(fh) if not _is_comment(r)), [])


def _show_number(value: float) -> str:
    """A number as short as ``%g`` when that is exact, else every digit (``repr``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _read_csv(path: Path, *, time: str, subject: str | None, manifest, inputs, covariates):
    """Read a long-format CSV; every problem is a one-line DataError."""
    where = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{where}: cannot read: {e}") from None
    # Lines starting with '#' are comments (e.g. the header `kalmanad simulate` writes).
    numbered = [(i + 1, r) for i, r in enumerate(rows) if not _is_comment(r)]
    if not numbered:
        raise DataError(f"{where}: the file is empty")
    header = [h.strip() for h in numbered[0][1]]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataError(f"{where}: duplicate column(s) {', '.join(map(repr, dup))}")
    wanted = [time, *manifest.values(), *inputs.values(), *covariates.values()]
    if subject is not None:
        wanted.append(subject)
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))} "
            f"(the file has: {', '.join(header)})"
        )
    col = {h: i for i, h in enumerate(header)}
    body = [(i, r) for i, r in numbered[1:] if any(c.strip() for c in r)]
    if not body:
        raise DataError(f"{where}: no data rows")

    def number(lineno, r, name, allow_missing):
        j = col[name]
        text = r[j].strip() if j < len(r) else ""
        if text.lower() in _MISSING:
            if allow_missing:
                return math.nan
            raise DataError(f"{where}: line {lineno}, column {name!r}: missing value")
        try:
            v = float(text)
        except ValueError:
            raise DataError(
                f"{where}: line {lineno}, column {name!r}: {text!r} is not a number"
            ) from None
        if not math.isfinite(v) and not (allow_missing and math.isnan(v)):
            raise DataError(f"{where}: line {lineno}, column {name!r}: {text!r} is not finite")
        return v

    for lineno, r in body:
        if len(r) != len(header):
            raise DataError(
                f"{where}: line {lineno} has {len(r)} fields but the header has {len(header)}"
            )
    times = np.array([number(ln, r, time, False) for ln, r in body])
    y = np.array([[number(ln, r, c, True) for c in manifest.values()] for ln, r in body])
    y = y.reshape(len(body), len(manifest))
    u = None
    if inputs:
        u = np.array([[number(ln, r, c, False) for c in inputs.values()] for ln, r in body])
    cov = {
        name: np.array([number(ln, r, c, False) for ln, r in body])
        for name, c in covariates.items()
    }
    subj = None
    if subject is not None:
        subj = [r[col[subject]].strip() for _, r in body]
        empty = [ln for (ln, _), s in zip(body, subj, strict=True) if not s]
        if empty:
            raise DataError(f"{where}: line {empty[0]}, column {subject!r}: missing subject id")
    # Sorted times within each subject; ties (several rows at one time) are allowed.
    last: dict = {}
    for k, (lineno, _) in enumerate(body):
        key = subj[k] if subj is not None else None
        if key in last and times[k] < last[key][0]:
            who = f" within subject {key!r}" if subj is not None else ""
            raise DataError(
                f"{where}: line {lineno}: time {_show_number(times[k])} is before "
                f"{_show_number(last[key][0])} (line {last[key][1]}); times must be in "
                f"increasing order{who} (ties allowed): sort the rows by time"
            )
        last[key] = (times[k], lineno)
    if subj is not None:
        for name, values in cov.items():
            seen: dict = {}
            for k, (lineno, _) in enumerate(body):
                if subj[k] in seen and values[k] != seen[subj[k]][0]:
                    raise DataError(
                        f"{where}: line {lineno}, column {covariates[name]!r}: covariate "
                        f"{name!r} changes within subject {subj[k]!r} ({seen[subj[k]][0]:g} on "
                        f"line {seen[subj[k]][1]}, {values[k]:g} here)"
                    )
                seen.setdefault(subj[k], (values[k], lineno))
    return ModelData(times, y, None if subj is None else np.array(subj), u, cov, path)


# ---------------------------------------------------------------------------- the spec

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
            hint = _suggest(k, allowed)
            if not hint and k.lower() in _ALIASES and _ALIASES[k.lower()] in allowed:
                hint = f" (did you mean {_ALIASES[k.lower()]!r}?)"
            raise parser.error(where, f"unknown key {k!r}{hint}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class _RandomEffects:
    parameters: tuple
    sd_priors: dict  # name -> _Prior
    lkj: float | None  # LKJ concentration, None = independent


@dataclass(frozen=True)
class _Covariates:
    names: tuple
    effects: dict  # param -> tuple of covariate names
    prior: _Prior


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
        p = _Parser(str(source) if source is not None else "<spec>")
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
        for kind, names in (
            ("latent", self.latent),
            ("manifest", self.manifest),
            ("input", self.inputs),
        ):
            for x in names:
                p.hints[x] = (
                    f"{x!r} is a {kind} variable: cells hold parameters, the matrices "
                    "multiply the variables"
                )

        # -- parameters -------------------------------------------------------------
        if not isinstance(parameters, Mapping) or not parameters:
            raise p.error("[parameters]", "give at least one parameter with its prior")
        self._priors: dict[str, _Prior] = {}
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
        self._fields: dict[str, _Field] = {}
        lat = f"latent: {', '.join(self.latent)}"
        man = f"manifest: {', '.join(self.manifest)}"
        inp = f"inputs: {', '.join(self.inputs)}"
        _check_keys(p, dynamics, _DYNAMICS_KEYS, "[dynamics]")
        _check_keys(p, measurement, _MEASUREMENT_KEYS, "[measurement]")
        builders_for = {
            "drift": {"companion": _Companion},
            "loadings": {"ma_loadings": _MALoadings},
            "diffusion": {
                "stationary_sd": lambda *a: _StationarySD(
                    *a, latent=self.latent, manifest=self.manifest
                )
            },
        }

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
                builders=builders_for.get(key),
            )
            self._fields[target] = _Field(key, target, where, spec, factor, value)

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
            if isinstance(f.spec, _Companion):
                for where, e in f.spec._check_positive:
                    if _sign(e.tree, self._name_sign) != _POS:
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
        p = _Parser(str(source) if source is not None else "<dict>")
        if not isinstance(d, Mapping):
            raise p.error(None, f"a spec must be a table/dict, got {type(d).__name__}")
        for key in d:
            if key not in _SECTIONS:
                hint = _suggest(key, _SECTIONS)
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
        out = tuple(_check_identifier(x, what, p.failer(where)) for x in names)
        dup = sorted({x for x in out if out.count(x) > 1})
        if dup:
            raise p.error(where, f"duplicate name(s): {', '.join(dup)}")
        return out

    @staticmethod
    def _check_new_name(p, name, where):
        _check_identifier(name, "name", p.failer(where))
        if name in FUNCTIONS or name in _CONSTANTS:
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
            return _POS if _positive_support(self._priors[name]) else _ANY
        if name in self.constants:
            v = self.constants[name]
            return _POS if v > 0 else (_NONNEG if v == 0 else _ANY)
        if name in self.derived:
            return _sign(self.derived[name].tree, self._name_sign)
        return _ANY  # pragma: no cover - names are validated before

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
            if isinstance(f.spec, _Cells):
                dynamic = {pos: e for targets, e in f.spec.dynamic for pos in targets}
                for i in range(min(f.spec.shape)):
                    where = f.spec.wheres.get((i, i), f"{f.where}[{i}][{i}]")
                    cells.append((where, dynamic.get((i, i), float(f.spec.base[i, i]))))
            elif isinstance(f.spec, _StationarySD):
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
                if _sign(cell.tree, self._name_sign) >= _NONNEG:
                    continue
                culprits = [
                    x
                    for x in sorted(self._free_parameters(cell.names))
                    if not _positive_support(self._priors[x])
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
                        f"{where} sd_prior", f"{key!r} has no random effect{_suggest(key, names)}"
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
            if not _positive_support(prior):
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
            _, args, kwargs = _parse_call(
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
                _check_identifier(c, "covariate", p.failer(f"{where} effects.{param}"))
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
                        f"{where} effects", f"covariate {c!r} is not in names{_suggest(c, names)}"
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
            raise p.error(where, f"unknown parameter {name!r}{_suggest(str(name), self._priors)}")

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
                    f"{var!r} is not a manifest, input or covariate{_suggest(var, variables)}",
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
                header = [h.strip() for h in _first_row(fh)]
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []  # _read_csv reports it
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
        return _read_csv(
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
                header = [h.strip() for h in _first_row(fh)]
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []  # _read_csv reports it
        if time is None:
            time = self.data.time
            if time not in header and "time" in header:
                time = "time"
        data = _read_csv(path, time=time, subject=None, manifest={}, inputs=inputs, covariates={})
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


# ------------------------------------------------------------------------------ zoo


def models_dir() -> Path:
    """The folder of the model zoo.

    In a source checkout (or an editable install) this is the repository's top-level
    ``models/`` next to the ``kalmanad`` package; an installed wheel ships the same
    files as package data in ``kalmanad/models/``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "models", here.parent / "models"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise FileNotFoundError(
        f"the model zoo was not found (looked in {here / 'models'} and {here.parent / 'models'})"
    )


def list_models() -> list[str]:
    """Names of the zoo's models (sorted), for :func:`load_model`."""
    return sorted(p.stem for p in models_dir().glob("*.toml") if not p.stem.startswith("_"))


def load_model(name_or_path: str | Path) -> ModelSpec:
    """Load a zoo model by name (``"ou"``) or a spec file by path (``"my_model.toml"``).

    Raises:
        SpecError: unknown name (with suggestions) or an invalid spec.
    """
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or path.suffix == ".toml" or path.parent != Path("."):
        return ModelSpec.from_toml(path)
    zoo = list_models()
    if text not in zoo:
        raise SpecError(
            f"unknown model {text!r}{_suggest(text, zoo)}; the zoo has {', '.join(zoo)} "
            "(or give a path to a .toml spec)"
        )
    return ModelSpec.from_toml(models_dir() / f"{text}.toml")
