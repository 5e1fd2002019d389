"""Priors: NumPyro distributions named in a spec, with their arguments checked."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpyro.distributions as dist
from numpyro.distributions import constraints

from kalmanad.spec.errors import SpecError, suggest
from kalmanad.spec.expressions import compile_node

__all__ = ["FLAT", "PRIORS", "Prior", "parse_call", "parse_prior", "positive_support"]

#: The name of the flat (improper uniform) prior in specs: ``"flat"`` on the real line,
#: ``"flat(low=0)"`` on (0, ∞), ``"flat(low=a, high=b)"`` on (a, b). It has density 1
#: on its support: :func:`kalmanad.fit_mle` uses only the support (it never uses a
#: prior), and NUTS samples the improper posterior ∝ likelihood on that support
#: (NumPyro's ``ImproperUniform``; proper only where the likelihood makes it so).
#: A flat prior cannot be sampled: prior draws and prior-predictive simulation need
#: proper priors.
FLAT = "flat"

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


def parse_call(text: str, allowed: Mapping[str, Any], what: str, fail):
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
            f"unknown {what} {name!r}{suggest(name, allowed)}; allowed: {', '.join(allowed)}"
        )

    def const(node):
        value = compile_node(node, frozenset(), fail).const
        if value is None:  # pragma: no cover - no names are known, so compile_node raised
            raise fail(f"{what} arguments must be numbers")
        return value

    args = [const(a) for a in tree.args]
    if any(isinstance(a, ast.Starred) for a in tree.args) or any(
        k.arg is None for k in tree.keywords
    ):
        raise fail(f"{what} arguments must be plain numbers")
    kwargs = {k.arg: const(k.value) for k in tree.keywords}
    return name, args, kwargs


class Prior:
    """A prior: a factory of fresh NumPyro distributions (so dtypes follow JAX's config).

    ``text`` is the prior as written in the spec (``"HalfNormal(1)"``, ``"flat"``),
    or for a distribution object its class and arguments; ``str`` and ``repr`` give it.
    ``is_flat``: an improper uniform prior (see :data:`FLAT`).
    """

    __slots__ = ("_factory", "is_flat", "text")

    def __init__(self, text: str, factory: Callable[[], dist.Distribution], is_flat: bool = False):
        self.text = text
        self._factory = factory
        self.is_flat = is_flat

    def make(self) -> dist.Distribution:
        return self._factory()

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def _flat_support(low, high):
    if low is None and high is None:
        return constraints.real
    if high is None:
        return constraints.positive if low == 0 else constraints.greater_than(low)
    if low is None:
        return constraints.less_than(high)
    return constraints.interval(low, high)


def _flat_text(low, high) -> str:
    bounds = [f"{k}={v:g}" for k, v in (("low", low), ("high", high)) if v is not None]
    return f"{FLAT}({', '.join(bounds)})" if bounds else FLAT


def _parse_flat(text: str, fail) -> Prior:
    """``flat``, ``flat(low=a)``, ``flat(high=b)`` or ``flat(low=a, high=b)``."""
    low = high = None
    if text.strip() != FLAT:
        _, args, kwargs = parse_call(text, {FLAT: None}, "prior", fail)
        unknown = [k for k in kwargs if k not in ("low", "high")]
        if args or unknown:
            raise fail(
                f"invalid prior {text.strip()!r}: flat takes only low= and high= bounds, "
                "e.g. 'flat', 'flat(low=0)', 'flat(low=0, high=1)'"
            )
        low, high = kwargs.get("low"), kwargs.get("high")
        if low is not None and high is not None and not low < high:
            raise fail(
                f"invalid prior {text.strip()!r}: the lower bound {low:g} must be below "
                f"the upper bound {high:g}"
            )
    support = _flat_support(low, high)
    return Prior(_flat_text(low, high), lambda: dist.ImproperUniform(support, (), ()), True)


def _distribution_text(d: dist.Distribution) -> str:
    """``Name(arg=value, ...)`` for a distribution object (``flat`` for ImproperUniform)."""
    if isinstance(d, dist.ImproperUniform):
        s = _base_support(d.support)
        low, high = getattr(s, "lower_bound", None), getattr(s, "upper_bound", None)
        low = None if low is None else float(low)
        high = None if high is None else float(high)
        return _flat_text(low, high)
    args = []
    for name in getattr(d, "arg_constraints", {}):
        value = getattr(d, name, None)
        try:
            args.append(f"{name}={float(value):g}")
        except (TypeError, ValueError):
            continue
    return f"{type(d).__name__}({', '.join(args)})"


def parse_prior(text, *, source: str | None = None, where: str | None = None) -> Prior:
    """Parse a prior such as ``"HalfNormal(1)"`` or ``"TruncatedNormal(0, 1, low=0)"``.

    ``"flat"`` (optionally ``"flat(low=0)"``, ``"flat(low=a, high=b)"``) is the
    improper uniform prior on the real line or on those bounds (:data:`FLAT`).
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
        return Prior(_distribution_text(d), lambda: d, isinstance(d, dist.ImproperUniform))
    if not isinstance(text, str):
        raise fail(f"a prior must be a string such as 'Normal(0, 1)', got {text!r}")
    if text.strip() == FLAT or text.strip().startswith(FLAT + "("):
        return _parse_flat(text, fail)
    name, args, kwargs = parse_call(text, PRIORS, "prior", fail)
    cls = PRIORS[name]
    _check_prior_arguments(name, args, kwargs, text.strip(), fail)
    try:
        d = cls(*args, **kwargs, validate_args=True)
    except (TypeError, ValueError) as e:
        raise fail(f"invalid prior {text.strip()!r}: {e}") from None
    if d.batch_shape != () or d.event_shape != ():
        raise fail(f"prior {text.strip()!r} must be scalar")
    return Prior(text.strip(), lambda: cls(*args, **kwargs))


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
                f"invalid prior {text!r}: {name} has no argument {key!r}{suggest(key, names)}; "
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


def _base_support(support):
    """The element-wise constraint inside ``IndependentConstraint`` wrappers."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def positive_support(prior: Prior) -> bool:
    """Whether the prior's support lies in [0, ∞)."""
    lower = getattr(_base_support(prior.make().support), "lower_bound", None)
    try:
        return lower is not None and float(lower) >= 0.0
    except (TypeError, ValueError):  # pragma: no cover - array-valued bound
        return False
