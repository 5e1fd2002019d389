"""The statements of the equations language: splitting, reading, linear decomposition.

:func:`parse_statements` splits a text into :class:`Statement`s (``;`` and line ends
separate them, ``#`` starts a comment, a line ending in an operator or inside
parentheses continues on the next) and reads each one's kind, names and right-hand
side (an :mod:`ast` expression, ``^`` a power). :func:`linear_terms` writes a
right-hand side as a sum of coefficient × variable terms. Every error is an
:class:`EquationError` that shows the line with a caret under the problem.
"""

from __future__ import annotations

import ast
import keyword
import re
from typing import NamedTuple

from kalmanad.spec.errors import SpecError, suggest
from kalmanad.spec.expressions import FUNCTIONS
from kalmanad.spec.priors import PRIORS, parse_prior

__all__ = ["NOISE", "EquationError", "Statement", "Term", "linear_terms", "parse_statements"]

#: Noise terms: dW, dW1, dW_x, ... (increments of independent standard Wiener processes).
NOISE = re.compile(r"^dW\w*$")
_NAME = r"[^\W\d]\w*"
_CONTINUES = "+-*/=~(,|^"


class EquationError(SpecError):
    """A problem in a model written as equations, located by line and column.

    The message is ``source: line L, column C: problem`` followed by the line and a
    caret under the offending text.

    Attributes:
        line, column: 1-based position of the problem.
        source_line: the line of the text.
    """

    def __init__(self, problem: str, *, source: str, line: int, column: int, width: int, text: str):
        self.line, self.column, self.source_line = line, column, text
        caret = " " * (column - 1) + "^" * max(1, width)
        where = f"line {line}, column {column}"
        super().__init__(f"{problem}\n    {text}\n    {caret}", source=source, where=where)
        self.problem = problem


class Term(NamedTuple):
    """One term of a right-hand side: coefficient × variable (``var`` None: a constant
    term). ``kind``: ``"state"``, ``"input"``, ``"impulse"``, ``"noise"`` or None."""

    var: str | None
    kind: str | None
    coef: ast.AST | None
    span: tuple[int, int] | None


class Statement:
    """One statement: its kind, names, right-hand side and source positions.

    Kinds: ``state`` (``d(x) = rhs``), ``indicator`` (``y ~ rhs``), ``cov``
    (``a ~~ c*b``, ``x(0) ~~ v*x(0)``), ``prior`` (``p ~ normal(0, 1)``), ``fixed``
    (``p = 0.5``), ``derived`` (``q = expr``), ``initial_mean`` (``x(0) = expr``),
    ``initial`` (``initial diffuse``), ``start`` (``start p = 0.1``), ``varying``
    (``p | subject + covariate``) and ``input`` (``input u, v``). Spans are
    ``(start, end)`` offsets into ``text``.
    """

    def __init__(self, text: str, positions: list, lines: list, source: str):
        self.text = text
        self._positions = positions  # offset -> (line, column), 1-based
        self._lines = lines
        self.source = source
        self.kind = ""
        self.name = ""
        self.name_span = None
        self.other = None
        self.other_span = None
        self.rhs = None
        self.rhs_span = None
        self.coef = None
        self.initial = False
        self.value = None
        self.names: list = []
        self.comment = ""
        self.span = (0, len(text))
        self._spans: dict[int, tuple[int, int]] = {}

    @property
    def line(self) -> int:
        return self._positions[self.span[0]][0]

    def error(self, problem: str, span=None) -> EquationError:
        start, end = span or self.span
        start = min(max(start, 0), len(self.text) - 1)
        end = max(min(end, len(self.text)), start + 1)
        line, col = self._positions[start]
        last_line, last_col = self._positions[end - 1]
        width = last_col - col + 1 if last_line == line else len(self._lines[line - 1]) - col + 1
        return EquationError(
            problem,
            source=self.source,
            line=line,
            column=col,
            width=width,
            text=self._lines[line - 1],
        )

    def span_of(self, node):
        return self._spans.get(id(node))

    # -- expressions ---------------------------------------------------------------
    def expr(self, start: int, end: int):
        """Parse ``text[start:end]`` as an expression; record every node's span."""
        raw = self.text[start:end]
        lead = len(raw) - len(raw.lstrip())
        raw = raw.strip()
        start += lead
        if not raw:
            raise self.error("missing expression", (start, start + 1))
        back = []  # index in the parsed text -> index in raw
        for i, c in enumerate(raw):
            back.extend([i, i] if c == "^" else [i])
        back.append(len(raw))
        parsed = raw.replace("^", "**")
        encoded = parsed.encode("utf-8")

        def offset(byte):  # ast offsets count UTF-8 bytes
            return start + back[len(encoded[:byte].decode("utf-8", "ignore"))]

        try:
            tree = ast.parse(parsed, mode="eval").body
        except SyntaxError as e:
            col = offset(max((e.offset or 1) - 1, 0)) if e.lineno == 1 else start
            raise self.error(f"cannot read this expression: {e.msg}", (col, col + 1)) from None
        for node in ast.walk(tree):
            if hasattr(node, "col_offset"):
                self._spans[id(node)] = (offset(node.col_offset), offset(node.end_col_offset))
        return tree, (start, start + len(raw))


def parse_statements(text: str, source: str) -> list[Statement]:
    """Split ``text`` into statements and read each one."""
    lines = text.splitlines()
    out = []
    for chars, positions, comment in _split(lines):
        st = Statement("".join(chars), positions, lines, source)
        st.comment = comment
        _read(st)
        out.append(st)
    return out


def _split(lines: list[str]):
    """(characters, positions, trailing comment) of each statement."""
    chars: list[str] = []
    positions: list[tuple[int, int]] = []
    depth = 0
    pending: list = []
    for lineno, line in enumerate(lines, start=1):
        code, _, comment = line.partition("#")
        ended = []
        for col, c in enumerate(code, start=1):
            if c == ";" and depth == 0:
                ended.append((chars, positions))
                chars, positions = [], []
                continue
            depth += (c == "(") - (c == ")")
            chars.append(c)
            positions.append((lineno, col))
        stripped = "".join(chars).rstrip()
        if stripped and (depth > 0 or stripped[-1] in _CONTINUES):
            chars.append(" ")
            positions.append((lineno, len(code) + 1))
        else:
            ended.append((chars, positions))
            chars, positions, depth = [], [], 0
        ended = [(c, p) for c, p in ended if "".join(c).strip()]
        for i, (c, p) in enumerate(ended):
            # A comment describes the statement when it is the only one on its line.
            note = comment.strip() if len(ended) == 1 and i == 0 else ""
            pending.append((c, p, note))
        yield from pending
        pending = []
    if "".join(chars).strip():
        yield chars, positions, ""


# ----------------------------------------------------------------- reading statements

_STATE = re.compile(rf"^\s*d\s*\(\s*({_NAME})\s*\)\s*=(?!=)")
_INITIAL_MEAN = re.compile(rf"^\s*({_NAME})\s*\(\s*0\s*\)\s*=(?!=)")
_ASSIGN = re.compile(rf"^\s*({_NAME})\s*=(?!=)")
_START = re.compile(rf"^\s*start\s+({_NAME})\s*=(?!=)")
_INITIAL = re.compile(r"^\s*initial\s+(\w+)\s*(?:\((.*)\))?\s*$")
_INPUT = re.compile(r"^\s*input\s+(.*)$")
_LHS = re.compile(rf"^\s*({_NAME})\s*(\(\s*0\s*\))?\s*$")

_PRIOR_NAMES = {name.lower(): name for name in PRIORS} | {"lkj": "LKJ"}
_HINT = (
    "expected d(state) = ..., indicator ~ ..., a ~~ c*b, parameter ~ prior(...), "
    "name = value, x(0) = ..., start p = value, initial stationary|diffuse, "
    "p | subject, or input u"
)


def _read(st: Statement) -> None:
    text = st.text
    for pattern, reader in (
        (_INPUT, _read_input),
        (_INITIAL, _read_initial),
        (_START, _read_start),
        (_STATE, _read_state),
    ):
        match = pattern.match(text)
        if match:
            reader(st, match)
            return
    if "~~" in text:
        _read_cov(st, text.index("~~"))
    elif "~" in text:
        _read_tilde(st, text.index("~"))
    elif "|" in text:
        _read_varying(st, text.index("|"))
    elif _INITIAL_MEAN.match(text):
        match = _INITIAL_MEAN.match(text)
        st.kind, st.name, st.name_span = "initial_mean", match.group(1), match.span(1)
        st.rhs, st.rhs_span = st.expr(match.end(), len(text))
    elif _ASSIGN.match(text):
        _read_assign(st, _ASSIGN.match(text))
    else:
        raise st.error(f"cannot read this statement: {_HINT}", _stripped(st))


def _stripped(st: Statement) -> tuple[int, int]:
    lead = len(st.text) - len(st.text.lstrip())
    return lead, len(st.text.rstrip())


def _check_name(st: Statement, name: str, span) -> str:
    if keyword.iskeyword(name):
        raise st.error(f"{name!r} is a Python keyword: choose another name", span)
    if name in FUNCTIONS or name == "pi":
        raise st.error(f"{name!r} is a built-in function or constant: choose another name", span)
    return name


def _read_state(st: Statement, match) -> None:
    st.kind, st.name, st.name_span = "state", match.group(1), match.span(1)
    _check_name(st, st.name, st.name_span)
    st.rhs, st.rhs_span = st.expr(match.end(), len(st.text))


def _read_input(st: Statement, match) -> None:
    st.kind = "input"
    offset = match.start(1)
    for part in re.finditer(r"[^,\s]+", match.group(1)):
        name = part.group()
        span = (offset + part.start(), offset + part.end())
        if not name.isidentifier():
            raise st.error(f"{name!r} is not a valid input name", span)
        st.names.append((_check_name(st, name, span), span))
    if not st.names:
        raise st.error("name the inputs: input u1, u2", _stripped(st))


def _read_initial(st: Statement, match) -> None:
    st.kind, st.name, st.name_span = "initial", match.group(1), match.span(1)
    kinds = ("stationary", "diffuse", "known")
    if st.name not in kinds:
        raise st.error(
            f"unknown initial state {st.name!r}{suggest(st.name, kinds)}: "
            "initial stationary, initial diffuse or initial diffuse(scale)",
            st.name_span,
        )
    if match.group(2) is not None:
        if st.name != "diffuse":
            raise st.error(f"initial {st.name} takes no argument", match.span(2))
        st.value = _number(st, match.start(2), match.end(2), "the diffuse scale")
        if not st.value > 0:
            raise st.error("the diffuse scale must be positive", match.span(2))


def _number(st: Statement, start: int, end: int, what: str) -> float:
    tree, span = st.expr(start, end)
    value = _constant(tree)
    if value is None:
        raise st.error(f"{what} must be a number", span)
    return value


def _constant(tree) -> float | None:
    """The value of a number or a signed number, else None."""
    if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, (ast.USub, ast.UAdd)):
        inner = _constant(tree.operand)
        return None if inner is None else (-inner if isinstance(tree.op, ast.USub) else inner)
    if isinstance(tree, ast.Constant) and type(tree.value) in (int, float):
        return float(tree.value)
    return None


def _read_start(st: Statement, match) -> None:
    st.kind, st.name, st.name_span = "start", match.group(1), match.span(1)
    st.value = _number(st, match.end(), len(st.text), "a start value")


def _read_assign(st: Statement, match) -> None:
    st.name, st.name_span = match.group(1), match.span(1)
    _check_name(st, st.name, st.name_span)
    st.rhs, st.rhs_span = st.expr(match.end(), len(st.text))
    value = _constant(st.rhs)
    if value is not None:
        st.kind, st.value = "fixed", value
    else:
        st.kind = "derived"


def _lhs(st: Statement, end: int, op: str):
    """The name left of ``op`` and whether it is written ``x(0)``."""
    match = _LHS.match(st.text[:end])
    if not match:
        raise st.error(f"expected a name left of {op!r}", (0, max(end, 1)))
    return match.group(1), match.span(1), match.group(2) is not None


def _read_cov(st: Statement, at: int) -> None:
    st.kind = "cov"
    st.name, st.name_span, st.initial = _lhs(st, at, "~~")
    rhs, st.rhs_span = st.expr(at + 2, len(st.text))
    st.rhs = rhs
    # rhs: b, c*b, b(0) or c*b(0): the other variable is the last factor.
    coef, other = None, rhs
    if isinstance(rhs, ast.BinOp) and isinstance(rhs.op, ast.Mult):
        coef, other = rhs.left, rhs.right
    zero = (
        isinstance(other, ast.Call)
        and isinstance(other.func, ast.Name)
        and len(other.args) == 1
        and _constant(other.args[0]) == 0.0
    )
    name_node = other.func if zero else other
    if not isinstance(name_node, ast.Name) or zero != st.initial:
        form = "x(0) ~~ v*x(0)" if st.initial else "a ~~ c*b"
        raise st.error(f"expected coefficient*variable on the right, as in {form}", st.rhs_span)
    st.other, st.other_span = name_node.id, st.span_of(name_node)
    st.coef = coef


def _read_tilde(st: Statement, at: int) -> None:
    st.name, st.name_span, initial = _lhs(st, at, "~")
    if initial:
        raise st.error("an initial state is x(0) = mean and x(0) ~~ v*x(0)", st.name_span)
    st.rhs, st.rhs_span = st.expr(at + 1, len(st.text))
    rhs = st.rhs
    if isinstance(rhs, ast.Name) and rhs.id == "none":
        st.kind, st.prior_text = "prior", "none"
        return
    if isinstance(rhs, ast.Call) and isinstance(rhs.func, ast.Name):
        fname = rhs.func.id
        if fname not in FUNCTIONS and fname != "impulse":
            canonical = _PRIOR_NAMES.get(fname.lower())
            fspan = st.span_of(rhs.func)
            if canonical is None:
                raise st.error(
                    f"unknown prior {fname!r}{suggest(fname.lower(), _PRIOR_NAMES)}; priors: "
                    f"{', '.join(sorted(_PRIOR_NAMES))}",
                    fspan,
                )
            st.kind = "prior"
            st.prior_text = canonical + st.text[fspan[1] : st.rhs_span[1]].strip()
            if canonical != "LKJ":
                try:
                    parse_prior(st.prior_text)
                except SpecError as e:
                    raise st.error(e.problem, st.rhs_span) from None
            return
    st.kind = "indicator"
    _check_name(st, st.name, st.name_span)


def _read_varying(st: Statement, at: int) -> None:
    st.kind = "varying"
    st.name, st.name_span, initial = _lhs(st, at, "|")
    if initial:
        raise st.error("expected a parameter left of '|'", st.name_span)
    for part in re.finditer(r"[^+\s]+", st.text[at + 1 :]):
        span = (at + 1 + part.start(), at + 1 + part.end())
        name = part.group()
        if not name.isidentifier() or keyword.iskeyword(name):
            raise st.error(f"{name!r}: write p | subject (a random effect) and p | covariate", span)
        if name in [n for n, _ in st.names]:
            raise st.error(f"{name!r} is listed twice", span)
        st.names.append((name, span))
    if not st.names:
        raise st.error("expected p | subject (a random effect) or p | covariate", _stripped(st))


# ------------------------------------------------------------------- linear terms


def _one() -> ast.AST:
    return ast.Constant(1)


def _neg(node: ast.AST) -> ast.AST:
    if isinstance(node, ast.Constant):
        return ast.Constant(-node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return node.operand
    return ast.UnaryOp(ast.USub(), node)


def _mul(a: ast.AST, b: ast.AST) -> ast.AST:
    for x, y in ((a, b), (b, a)):
        if isinstance(x, ast.Constant) and x.value == 1:
            return y
        if isinstance(x, ast.Constant) and x.value == -1:
            return _neg(y)
    return ast.BinOp(a, ast.Mult(), b)


def linear_terms(st: Statement, node: ast.AST, var) -> list[Term]:
    """``node`` as a sum of coefficient × variable terms.

    ``var(node)`` gives ``(name, kind)`` when the node is a variable (a state, input,
    ``impulse(u)`` or noise term), else None. Products, quotients and sums distribute;
    a product of two variables, a variable inside a function or a power, or a
    variable in a denominator is nonlinear and raises an error pointing at it.
    """
    return _Linear(st, var).walk(node)


class _Linear:
    """The recursive decomposition of :func:`linear_terms`."""

    def __init__(self, st: Statement, var):
        self.st = st
        self.var = var

    def find(self, n):
        try:
            return self.var(n)
        except ValueError as e:
            raise self.st.error(str(e), self.st.span_of(n)) from None

    def has_var(self, n) -> bool:
        return any(self.find(sub) is not None for sub in ast.walk(n))

    def nonlinear(self, n, why) -> EquationError:
        span = self.st.span_of(n)
        text = self.st.text[span[0] : span[1]] if span else ast.unparse(n)
        return self.st.error(
            f"nonlinear term {text!r} ({why}): kalmanad's models are linear SDEs, so the "
            "right-hand side must be linear in the states, inputs and noise terms; "
            "nonlinear drift needs nonlinear SDE support, which kalmanad does not have",
            span,
        )

    def walk(self, n) -> list[Term]:
        found = self.find(n)
        if found is not None:
            return [Term(found[0], found[1], _one(), self.st.span_of(n))]
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub)):
            right = self.walk(n.right)
            if isinstance(n.op, ast.Sub):
                right = [t._replace(coef=_neg(t.coef)) for t in right]
            return self.walk(n.left) + right
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            inner = self.walk(n.operand)
            if isinstance(n.op, ast.USub):
                inner = [t._replace(coef=_neg(t.coef)) for t in inner]
            return inner
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Mult, ast.Div)):
            return self.product(n)
        if self.has_var(n):
            raise self.nonlinear(n, "a variable inside a function or a power")
        return [Term(None, None, n, self.st.span_of(n))]

    def product(self, n) -> list[Term]:
        span = self.st.span_of(n)
        left, right = self.has_var(n.left), self.has_var(n.right)
        if isinstance(n.op, ast.Div):
            if right:
                raise self.nonlinear(n, "a variable in a denominator")
            return [
                t._replace(coef=ast.BinOp(t.coef, ast.Div(), n.right), span=span)
                for t in self.walk(n.left)
            ]
        if left and right:
            raise self.nonlinear(n, "a product of two variables")
        if not left and not right:
            return [Term(None, None, n, span)]
        coef, terms = (n.left, self.walk(n.right)) if right else (n.right, self.walk(n.left))
        return [t._replace(coef=_mul(coef, t.coef), span=span) for t in terms]
