"""Priors: NumPyro distributions named in a spec, with their arguments checked."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpyro.distributions as dist

from kalmanad.spec.errors import SpecError, suggest
from kalmanad.spec.expressions import compile_node

__all__ = ["PRIORS", "Prior", "parse_call", "parse_prior", "positive_support"]

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
    """A prior: a factory of fresh NumPyro distributions (so dtypes follow JAX's config)."""

    __slots__ = ("_factory", "text")

    def __init__(self, text: str, factory: Callable[[], dist.Distribution]):
        self.text = text
        self._factory = factory

    def make(self) -> dist.Distribution:
        return self._factory()

    def __repr__(self) -> str:
        return self.text


def parse_prior(text, *, source: str | None = None, where: str | None = None) -> Prior:
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
        return Prior(repr(d), lambda: d)
    if not isinstance(text, str):
        raise fail(f"a prior must be a string such as 'Normal(0, 1)', got {text!r}")
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


def positive_support(prior: Prior) -> bool:
    lower = getattr(prior.make().support, "lower_bound", None)
    try:
        return lower is not None and float(lower) >= 0.0
    except (TypeError, ValueError):  # pragma: no cover - array-valued bound
        return False
