"""Expressions of parameters: parsing, evaluation and sign analysis.

A cell of a matrix is a number, a name or an arithmetic expression of names, parsed
with :mod:`ast` and compiled by a whitelist (no ``eval``) into a function of an
environment name -> value. Sign analysis proves an expression positive or
non-negative for every parameter value, from the signs of the names it uses.
"""

from __future__ import annotations

import ast
import keyword
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from kalmanad.spec.errors import SpecError, suggest

__all__ = [
    "ANY",
    "CONSTANTS",
    "FUNCTIONS",
    "NONNEG",
    "POS",
    "Expression",
    "check_identifier",
    "compile_node",
    "parse_expression",
    "sign",
]

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

CONSTANTS = {"pi": math.pi}

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
    node = compile_node(tree, known, fail, hints or {})
    return Expression(src, tree, node)


def compile_node(node, known, fail, hints=None) -> _Node:
    """Compile an :mod:`ast` node of an expression (see :func:`parse_expression`).

    ``known`` (a frozenset, or None for any identifier), ``fail`` (problem ->
    exception) and ``hints`` (name -> explanation) are as in :func:`parse_expression`.
    """
    compile_kind = _COMPILERS.get(type(node))
    if compile_kind is not None:
        return compile_kind(node, known, fail, hints)
    kind = _FORBIDDEN.get(type(node))
    if kind is None:
        kind = type(node).__name__
    raise fail(f"{kind} not allowed in an expression: {ast.unparse(node)!r}")


def _constant_node(value: float) -> _Node:
    return _Node(lambda env: value, frozenset(), value)


def _compile_constant(node, known, fail, hints) -> _Node:
    v = node.value
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise fail(f"{v!r} is not a number: only real numbers are allowed")
    return _constant_node(float(v))


def _compile_name(node, known, fail, hints) -> _Node:
    name = node.id
    if name in CONSTANTS:
        return _constant_node(CONSTANTS[name])
    if name in FUNCTIONS:
        raise fail(f"{name!r} is a function: call it, as in {name}(x)")
    if known is not None and name not in known:
        hint = f" ({hints[name]})" if hints and name in hints else suggest(name, known)
        raise fail(f"unknown parameter {name!r}{hint}")
    return _Node(lambda env: env[name], frozenset([name]), None)


def _compile_unary(node, known, fail, hints) -> _Node:
    operand = compile_node(node.operand, known, fail, hints)
    if isinstance(node.op, ast.USub):
        f = operand.fn
        const = None if operand.const is None else -operand.const
        return _Node(lambda env: -f(env), operand.names, const)
    if isinstance(node.op, ast.UAdd):
        return operand
    raise fail(f"operator {ast.unparse(node).split()[0]!r} is not allowed")


# Operators outside _BINOPS, as written, for the error message.
_OTHER_OPERATORS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
}


def _folded(node, fn, consts, fail) -> _Node:
    """The constant node of ``fn(*consts)``, evaluated in float64; it must be finite."""
    with np.errstate(all="ignore"):
        value = float(fn(*[np.float64(c) for c in consts]))
    if not math.isfinite(value):
        raise fail(f"{ast.unparse(node)!r} evaluates to {value}")
    return _constant_node(value)


def _compile_binop(node, known, fail, hints) -> _Node:
    if type(node.op) not in _BINOPS:
        op = _OTHER_OPERATORS.get(type(node.op), "?")
        raise fail(f"operator {op!r} is not allowed (use + - * / ^)")
    op = _BINOPS[type(node.op)]
    left = compile_node(node.left, known, fail, hints)
    right = compile_node(node.right, known, fail, hints)
    if left.const is not None and right.const is not None:
        return _folded(node, op, (left.const, right.const), fail)
    lf, rf = left.fn, right.fn
    if isinstance(node.op, ast.Pow) and right.const is not None:
        e = right.const
        if e == int(e) and abs(e) <= 64:
            # x^2 -> integer_pow: exact, fine for a negative base, cheap gradient.
            ie = int(e)
            return _Node(lambda env: lf(env) ** ie, left.names, None)
    return _Node(lambda env: op(lf(env), rf(env)), left.names | right.names, None)


def _function(node, known, fail) -> tuple[str, int, Callable, Callable]:
    """The name, arity and (jax, numpy) implementations of a call's function."""
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
            f"unknown function {fname!r}{suggest(fname, FUNCTIONS)}; "
            f"allowed: {', '.join(FUNCTIONS)}"
        )
    if node.keywords:
        raise fail(f"{fname}() takes no keyword arguments")
    nargs, jfn, nfn = FUNCTIONS[fname]
    if len(node.args) != nargs:
        plural = "s" if nargs != 1 else ""
        raise fail(f"{fname}() takes {nargs} argument{plural}, got {len(node.args)}")
    return fname, nargs, jfn, nfn


def _compile_call(node, known, fail, hints) -> _Node:
    _, nargs, jfn, nfn = _function(node, known, fail)
    args = [compile_node(a, known, fail, hints) for a in node.args]
    if all(a.const is not None for a in args):
        return _folded(node, nfn, [a.const for a in args], fail)
    fns = [a.fn for a in args]
    names = frozenset().union(*(a.names for a in args))
    if nargs == 1:
        f0 = fns[0]
        return _Node(lambda env: jfn(f0(env)), names, None)
    return _Node(lambda env: jfn(*[f(env) for f in fns]), names, None)


_COMPILERS = {
    ast.Constant: _compile_constant,
    ast.Name: _compile_name,
    ast.UnaryOp: _compile_unary,
    ast.BinOp: _compile_binop,
    ast.Call: _compile_call,
}


# Sign analysis: can an expression be proven positive for every parameter value?
POS, NONNEG, ANY = 2, 1, 0


def sign(node: ast.AST, name_sign: Callable[[str], int]) -> int:
    """What an expression's tree is for every parameter value: POS, NONNEG or ANY.

    ``name_sign`` gives the sign of a name (a parameter from its prior's support, a
    derived quantity from its expression).
    """
    if isinstance(node, ast.Constant):
        v = float(node.value)
        return POS if v > 0 else (NONNEG if v == 0 else ANY)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return POS if CONSTANTS[node.id] > 0 else ANY
        return name_sign(node.id)
    if isinstance(node, ast.UnaryOp):
        return sign(node.operand, name_sign) if isinstance(node.op, ast.UAdd) else ANY
    if isinstance(node, ast.BinOp):
        return _sign_binop(node, sign(node.left, name_sign), sign(node.right, name_sign))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _sign_call(node.func.id, [sign(a, name_sign) for a in node.args])
    return ANY


def _sign_binop(node: ast.BinOp, a: int, b: int) -> int:
    if isinstance(node.op, ast.Add):
        if a >= NONNEG and b >= NONNEG:
            return POS if POS in (a, b) else NONNEG
    elif isinstance(node.op, ast.Mult):
        return min(a, b)
    elif isinstance(node.op, ast.Div):
        return a if b == POS else ANY
    elif isinstance(node.op, ast.Pow):
        if a >= NONNEG:
            return a
        if isinstance(node.right, ast.Constant) and float(node.right.value) % 2 == 0:
            return NONNEG
    return ANY


def _sign_call(fname: str, args: list) -> int:
    if fname in ("exp", "softplus", "sigmoid"):
        return POS
    if fname in ("sqrt", "log1p", "tanh", "expm1"):
        return args[0]
    if fname in ("square", "abs"):
        return POS if args[0] == POS else NONNEG
    if fname == "min":
        return min(args)
    if fname == "max":
        return max(args)
    return ANY


_IDENT_HINT = "names must be identifiers: letters, digits and '_', not starting with a digit"


def check_identifier(name, what: str, fail) -> str:
    """``name`` if it is a valid identifier (not a keyword), else raise ``fail(...)``."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise fail(f"{what} {name!r} is not a valid name ({_IDENT_HINT})")
    return name
