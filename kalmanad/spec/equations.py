"""Models written as equations: the ``.kal`` language, compiled to a spec's sections.

A model is a list of statements, one a line or separated by ``;``, ``#`` starting a
comment (see ``docs/guide/equations.md`` for the grammar)::

    d(x)  = -theta*x + theta*mu + sqrt(2*theta)*sigma*dW     # a state equation
    y ~ x ; y ~~ noise^2*y                                   # an indicator, its variance
    theta ~ lognormal(0, 1)                                  # a prior

:func:`compile_equations` reads the statements (:mod:`~kalmanad.spec.statements`),
decomposes every right-hand side into a linear combination of the variables and writes
the coefficients into the cells of the TOML layout (``[dynamics] drift``,
``[measurement] loadings``, ...). :func:`from_equations` hands those sections to
:class:`~kalmanad.spec.model.ModelSpec`: there is one compiler, and an equations model
is the same object as the TOML spec with the same matrices. Errors are
:class:`EquationError`s that point at the line and column with a caret.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kalmanad.spec.errors import SpecError, suggest
from kalmanad.spec.layout import sections
from kalmanad.spec.sections import MODEL_KEYS, check_keys
from kalmanad.spec.statements import (
    NOISE,
    EquationError,
    Statement,
    Term,
    linear_terms,
    parse_statements,
)

__all__ = [
    "EquationError",
    "compile_equations",
    "from_equations",
    "from_equations_section",
    "read_equations",
]


class _Model:
    """The variables, parameters and cells gathered from the statements."""

    def __init__(self, statements: list[Statement], source: str):
        self.source = source
        self.statements = statements
        self.states: list[str] = []
        self.indicators: list[str] = []
        self.inputs: list[str] = []
        self.fixed: dict[str, float] = {}
        self.derived: dict[str, Statement] = {}
        self.priors: dict[str, tuple[str, Statement]] = {}
        self.starts: dict[str, tuple[float, Statement]] = {}
        self.used: dict[str, Statement] = {}  # parameter -> first use (in order)
        self.scale: set = set()  # parameters in a diagonal sd or variance cell
        self.offdiag: set = set()  # ... and in an off-diagonal one (a covariance)
        self.cells: dict[tuple, tuple[ast.AST, Statement, Term]] = {}
        self.noises: list[str] = []
        self.initial: str | None = None
        self.diffuse_scale: float | None = None
        self.varying: dict[str, tuple[list, Statement]] = {}


def read_equations(path: str | Path) -> str:
    """The text of a ``.kal`` file (a SpecError naming the file if it cannot be read)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read: {e}", source=str(path)) from None


def from_equations(text: str, *, source: str | Path | None = None, **model: Any):
    """A :class:`~kalmanad.spec.ModelSpec` from a model written as equations.

    Args:
        text: the statements (the ``.kal`` language, ``docs/guide/equations.md``).
        source: the file it came from, for error messages (default ``"<equations>"``).
        **model: the ``[model]`` texts: ``name``, ``title``, ``description``,
            ``time_unit``, ``references``; and ``data``, a ``[data]`` table.

    Raises:
        EquationError: a problem in the equations, pointing at its line and column.
        SpecError: a problem in the keyword arguments.
    """
    from kalmanad.spec.model import ModelSpec

    src = "<equations>" if source is None else str(source)
    sections, origins = compile_equations(text, source=src)
    data = model.pop("data", None)
    if source is not None and "name" not in model and src != "<equations>":
        model["name"] = Path(src).stem
    try:
        return ModelSpec(**sections, **model, data=data, source=source)
    except EquationError:
        raise
    except SpecError as e:
        raise _located(e, origins, src) from None


def compile_equations(text: str, *, source: str = "<equations>") -> tuple[dict, dict]:
    """Compile equations into the keyword sections of :class:`ModelSpec`.

    Returns:
        ``(sections, origins)``: sections are ``latent``, ``manifest``, ``inputs``,
        ``parameters``, ``derived``, ``dynamics``, ``measurement``, ``initial``,
        ``random_effects``, ``covariates`` in the TOML layout (cells are expression
        strings); origins map a cell's ``where`` (e.g. ``"[dynamics] drift[0][1]"``)
        to the statement and term it came from, for errors found by the spec.
    """
    if not isinstance(text, str):
        raise SpecError(f"equations must be a string, got {type(text).__name__}", source=source)
    statements = parse_statements(text, source)
    if not statements:
        raise SpecError("no equations: write d(state) = ... and indicator ~ state", source=source)
    m = _Model(statements, source)
    _declare(m)
    for st in statements:
        _COMPILE.get(st.kind, lambda m, st: None)(m, st)
    _check_declarations(m)
    return sections(m)


# ------------------------------------------------------------------- declarations


def _declare(m: _Model) -> None:
    """First pass: the states, indicators, inputs and the named values, in order."""
    seen: dict[tuple, Statement] = {}
    for st in m.statements:
        key = (st.kind, st.name, st.other, st.initial)
        if st.kind in ("state", "indicator", "cov", "prior", "fixed", "derived", "varying"):
            if key in seen:
                first = seen[key]
                raise st.error(
                    f"duplicate {_WHAT[st.kind]} for {st.name!r} (first on line {first.line})",
                    st.name_span,
                )
            seen[key] = st
        if st.kind == "state":
            m.states.append(st.name)
        elif st.kind == "indicator":
            m.indicators.append(st.name)
        elif st.kind == "input":
            for name, span in st.names:
                if name in m.inputs:
                    raise st.error(f"input {name!r} is declared twice", span)
                m.inputs.append(name)
        elif st.kind == "fixed":
            m.fixed[st.name] = st.value
        elif st.kind == "derived":
            m.derived[st.name] = st
        elif st.kind == "initial":
            if m.initial is not None:
                raise st.error("the initial state is given twice", st.span)
            m.initial, m.diffuse_scale = st.name, st.value
    _check_names(m)
    # Noise columns in natural order (dW, dW1, dW2, ..., dW10): dWj is column j of G.
    noises = {
        sub.id
        for st in m.statements
        if st.kind == "state"
        for sub in ast.walk(st.rhs)
        if isinstance(sub, ast.Name) and NOISE.match(sub.id)
    }
    m.noises = sorted(noises, key=_natural)


def _natural(name: str) -> tuple:
    match = re.match(r"^(.*?)(\d*)$", name)
    return (match.group(1), int(match.group(2)) if match.group(2) else -1, name)


_WHAT = {
    "state": "equation d(...) = ...",
    "indicator": "measurement equation",
    "cov": "(co)variance",
    "prior": "prior",
    "fixed": "fixed value",
    "derived": "definition",
    "varying": "subject-level statement",
}


def _check_names(m: _Model) -> None:
    """A name has one role: state, indicator, input, fixed value or derived quantity."""
    roles: dict[str, str] = {}
    for role, names in (
        ("a state", m.states),
        ("an indicator", m.indicators),
        ("an input", m.inputs),
        ("a fixed value", m.fixed),
        ("a derived quantity", m.derived),
    ):
        for x in names:
            if x in roles:
                st = _first(m, x)
                raise st.error(f"{x!r} is both {roles[x]} and {role}", st.name_span)
            roles[x] = role
    for x in [*m.states, *m.indicators, *m.inputs]:
        if NOISE.match(x):
            st = _first(m, x)
            raise st.error(f"{x!r} is a noise name (dW...): choose another variable name")


def _first(m: _Model, name: str) -> Statement:
    for st in m.statements:
        if st.name == name:
            return st
    return m.statements[0]  # pragma: no cover - every name comes from a statement


def from_equations_section(p, d: Mapping[str, Any], model: Mapping[str, Any], source):
    """A TOML spec whose model is an ``[equations]`` section (``text = "..."``)."""
    clash = [s for s in d if s not in ("model", "data", "equations")]
    if clash:
        raise p.error(
            f"[{clash[0]}]",
            "the model is given by [equations]: drop this section (a spec takes [equations] "
            "or [parameters]/[dynamics]/[measurement], not both)",
        )
    for key in ("latent", "manifest", "inputs"):
        if key in model:
            raise p.error(f"[model] {key}", "the variables come from [equations]: drop this key")
    table = d["equations"]
    check_keys(p, table, ("text",), "[equations]")
    if not isinstance(table.get("text"), str):
        raise p.error("[equations]", 'give the equations as text = """..."""')
    name = model.get("name") or (Path(source).stem if source not in (None, "<dict>") else None)
    meta = {k: model[k] for k in MODEL_KEYS if k in model and k != "name"}
    return from_equations(
        table["text"],
        source=source,
        name=name,
        data=d.get("data"),
        **meta,
    )


# ------------------------------------------------------------------------ compiling


def _variables(m: _Model, allow=("state", "input", "impulse", "noise")):
    """A function node -> (variable, kind) or None, for :func:`linear_terms`."""
    states, inputs = set(m.states), set(m.inputs)

    def var(node):
        if isinstance(node, ast.Name):
            if node.id in states and "state" in allow:
                return node.id, "state"
            if node.id in inputs and "input" in allow:
                return node.id, "input"
            if NOISE.match(node.id) and "noise" in allow:
                return node.id, "noise"
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "impulse"
            and "impulse" in allow
        ):
            return _impulse(node, inputs), "impulse"
        return None

    return var


def _impulse(node, inputs):
    if len(node.args) == 1 and isinstance(node.args[0], ast.Name) and node.args[0].id in inputs:
        return node.args[0].id
    raise ValueError("impulse(...) takes one declared input, e.g. impulse(u) after 'input u'")


def _compile_state(m: _Model, st: Statement) -> None:
    i = m.states.index(st.name)
    for t in linear_terms(st, st.rhs, _variables(m)):
        _check_coefficient(m, st, t.coef)
        if t.kind is None:
            _cell(m, ("intercept", i), st, t)
        elif t.kind == "state":
            _cell(m, ("drift", i, m.states.index(t.var)), st, t)
        elif t.kind == "input":
            _cell(m, ("input_effect", i, m.inputs.index(t.var)), st, t)
        elif t.kind == "impulse":
            _cell(m, ("impulse_effect", i, m.inputs.index(t.var)), st, t)
        else:
            j = m.noises.index(t.var)
            _cell(m, ("diffusion_sd", i, j), st, t, scale=i == j)


def _compile_indicator(m: _Model, st: Statement) -> None:
    i = m.indicators.index(st.name)
    terms = linear_terms(st, st.rhs, _variables(m, ("state", "input", "noise")))
    for t in terms:
        _check_coefficient(m, st, t.coef)
        if t.kind == "noise":
            raise st.error(
                f"noise term {t.var!r} in a measurement equation: measurement error is the "
                f"residual variance, written {st.name} ~~ r*{st.name}",
                t.span,
            )
        if t.kind is None:
            _cell(m, ("m_intercept", i), st, t)
        elif t.kind == "state":
            _cell(m, ("loadings", i, m.states.index(t.var)), st, t)
        else:
            _cell(m, ("m_input_effect", i, m.inputs.index(t.var)), st, t)
    if not any(t.kind == "state" for t in terms):
        bare = _bare_name(st.rhs)
        if bare is not None and bare not in _named(m):
            raise st.error(
                f"unknown state {bare!r}: it has no equation d({bare}) = ..."
                f"{suggest(bare, m.states)}",
                st.rhs_span,
            )
        from kalmanad.spec.expressions import FUNCTIONS

        names = [
            sub.id
            for sub in ast.walk(st.rhs)
            if isinstance(sub, ast.Name) and sub.id not in _named(m) and sub.id not in FUNCTIONS
        ]
        hint = "".join(
            f"; {x!r} is not a state: it has no equation d({x}) = ...{suggest(x, m.states)}"
            for x in names[-1:]
        )
        raise st.error(
            f"indicator {st.name!r} has no loading on a state: write e.g. "
            f"{st.name} ~ l*{m.states[0]} (+ intercept){hint}",
            st.rhs_span,
        )


def _bare_name(node) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


def _named(m: _Model) -> set:
    """Names declared as parameters by a statement (prior, start, fixed, derived)."""
    return (
        set(m.priors)
        | set(m.fixed)
        | set(m.derived)
        | set(m.starts)
        | {st.name for st in m.statements if st.kind == "prior"}
    )


def _compile_cov(m: _Model, st: Statement) -> None:
    """``a ~~ c*b``: a diffusion rate (states), noise (indicators) or initial (co)variance."""
    a, b = st.name, st.other
    groups = (
        ("diffusion", m.states, "state"),
        ("noise", m.indicators, "indicator"),
        ("initial_cov", m.states, "initial state"),
    )
    key, names, _ = groups[2] if st.initial else (groups[0] if a in m.states else groups[1])
    for x, span in ((a, st.name_span), (b, st.other_span)):
        if st.initial and x not in names:
            raise st.error(
                f"{x!r} is not a state: it has no equation d({x}) = ...{suggest(x, m.states)}",
                span,
            )
        if x not in m.states and x not in m.indicators:
            known = [*m.states, *m.indicators]
            raise st.error(
                f"{x!r} is neither a state nor an indicator: it has no equation "
                f"d({x}) = ... and no measurement {x} ~ ...{suggest(x, known)}",
                span,
            )
    if (a in m.states) != (b in m.states) and not st.initial:
        raise st.error("a covariance is between two states or two indicators", st.span)
    i, j = names.index(a), names.index(b)
    pos = (key, max(i, j), min(i, j))
    if pos in m.cells:
        raise st.error(f"the (co)variance of {a} and {b} is given twice", st.span)
    coef = st.coef
    if coef is not None:
        _check_coefficient(m, st, coef)
    else:
        if i != j:
            raise st.error(
                f"give the covariance a parameter, e.g. {a} ~~ c*{b}",
                st.rhs_span,
            )
        coef = ast.Name(f"{a}_var" if key == "noise" else f"{a}_{key}")
    t = Term(None, None, coef, st.rhs_span)
    _cell(m, pos, st, t, scale=i == j)


def _compile_initial_mean(m: _Model, st: Statement) -> None:
    if st.name not in m.states:
        raise st.error(
            f"{st.name!r} is not a state: it has no equation d({st.name}) = ..."
            f"{suggest(st.name, m.states)}",
            st.name_span,
        )
    _check_coefficient(m, st, st.rhs)
    _cell(m, ("initial_mean", m.states.index(st.name)), st, Term(None, None, st.rhs, st.rhs_span))


def _compile_derived(m: _Model, st: Statement) -> None:
    _check_coefficient(m, st, st.rhs)
    _use(m, st, st.rhs, scale=None)


def _compile_varying(m: _Model, st: Statement) -> None:
    m.varying[st.name] = (st.names, st)


def _compile_prior(m: _Model, st: Statement) -> None:
    m.priors[st.name] = (st.prior_text, st)


def _compile_start(m: _Model, st: Statement) -> None:
    if st.name in m.starts:
        raise st.error(f"duplicate start value for {st.name!r}", st.name_span)
    m.starts[st.name] = (st.value, st)


_COMPILE = {
    "state": _compile_state,
    "indicator": _compile_indicator,
    "cov": _compile_cov,
    "initial_mean": _compile_initial_mean,
    "derived": _compile_derived,
    "varying": _compile_varying,
    "prior": _compile_prior,
    "start": _compile_start,
}


def _check_coefficient(m: _Model, st: Statement, node) -> None:
    """Indicators, noise terms and misspelt states cannot stand in a coefficient."""
    indicators = set(m.indicators)
    declared = _named(m)
    variables = [*m.states, *m.inputs]
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Name):
            continue
        span = st.span_of(sub)
        if sub.id in indicators:
            raise st.error(
                f"{sub.id!r} is an indicator (observed): right-hand sides use states, "
                "inputs and parameters",
                span,
            )
        if NOISE.match(sub.id):
            raise st.error(f"noise term {sub.id!r} is not allowed here", span)
        if sub.id not in declared and sub.id not in variables and variables:
            close = suggest(sub.id, variables)
            if close and _similar(sub.id, variables):
                raise st.error(
                    f"unknown state {sub.id!r}{close}; if it is a parameter, give it a "
                    f"prior ({sub.id} ~ normal(0, 1))",
                    span,
                )


def _similar(name: str, candidates) -> bool:
    import difflib

    return bool(difflib.get_close_matches(name, candidates, n=1, cutoff=0.75))


def _cell(m: _Model, pos: tuple, st: Statement, t: Term, *, scale: bool | None = None) -> None:
    """Add a term's coefficient to a cell (terms on one variable add up).

    ``scale``: True for a diagonal cell of a noise loading or covariance, False for an
    off-diagonal one, None for other matrices (it picks default priors).
    """
    if pos in m.cells:
        old, first, _ = m.cells[pos]
        if first is not st:
            raise st.error(
                f"{_cell_name(m, pos)} is also given on line {first.line}",
                t.span,
            )
        coef = ast.BinOp(old, ast.Add(), t.coef)
    else:
        coef = t.coef
    m.cells[pos] = (coef, st, t)
    _use(m, st, t.coef, scale=scale)


def _cell_name(m: _Model, pos: tuple) -> str:
    key = pos[0]
    if key in ("noise", "diffusion", "initial_cov"):
        names = m.indicators if key == "noise" else m.states
        return f"the (co)variance of {names[pos[1]]} and {names[pos[2]]}"
    return f"this {key.replace('_', ' ')} term"


def _use(m: _Model, st: Statement, node, *, scale: bool | None) -> None:
    """Record the parameters a coefficient uses (and whether it is a scale)."""
    from kalmanad.spec.expressions import CONSTANTS, FUNCTIONS

    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id not in FUNCTIONS and sub.id not in CONSTANTS:
            if sub.id in m.states or sub.id in m.inputs:
                continue
            m.used.setdefault(sub.id, st)
            if scale is not None:
                (m.scale if scale else m.offdiag).add(sub.id)


# -------------------------------------------------------------------------- checks


def _check_declarations(m: _Model) -> None:
    """Priors, starts and subject statements name parameters that exist."""
    free = [x for x in m.used if x not in m.fixed and x not in m.derived]
    generated = _generated_names(m)
    for x, (text, st) in m.priors.items():
        _check_prior(m, x, text, st, free, generated)
    for x, (_, st) in m.starts.items():
        if x in m.fixed:
            raise st.error(
                f"{x!r} is fixed ({x} = {m.fixed[x]:g}): a start value is for a free parameter",
                st.name_span,
            )
        if x not in free:
            raise st.error(
                f"start value for an unknown parameter {x!r}{suggest(x, free)}", st.name_span
            )
    for x, (_, st) in m.varying.items():
        if x in m.fixed:
            raise st.error(f"{x!r} is fixed ({x} = {m.fixed[x]:g}): it cannot vary", st.name_span)
        if x not in free:
            raise st.error(f"unknown parameter {x!r}{suggest(x, free)}", st.name_span)
    if m.initial is not None and m.initial != "known":
        for pos, (_, st, t) in m.cells.items():
            if pos[0] == "initial_cov":
                raise st.error(
                    f"an initial (co)variance is given but the start is {m.initial}: drop "
                    f"'initial {m.initial}' for a known start",
                    t.span,
                )


def _check_prior(m: _Model, x: str, text: str, st: Statement, free, generated) -> None:
    if x in m.fixed:
        raise st.error(
            f"{x!r} is fixed ({x} = {m.fixed[x]:g}) and has a prior: a parameter is "
            "either fixed or free",
            st.name_span,
        )
    if x in m.derived:
        raise st.error(f"{x!r} is a derived quantity; give priors to parameters", st.name_span)
    if x not in free and x not in generated:
        raise st.error(
            f"prior on an unknown parameter {x!r}{suggest(x, [*free, *generated])}",
            st.name_span,
        )
    if (x == "re_corr") != (text == "none" or text.startswith("LKJ")):
        want = "lkj(eta) or none" if x == "re_corr" else "a distribution such as normal(0, 1)"
        raise st.error(f"the prior of {x!r} must be {want}", st.rhs_span)


def _generated_names(m: _Model) -> list[str]:
    """Sites the subject statements create: <param>_sd, <covariate>_on_<param>, re_corr."""
    out = []
    for x, (terms, _) in m.varying.items():
        for name, _ in terms:
            out.append(f"{x}_sd" if name == "subject" else f"{name}_on_{x}")
    if any(name == "subject" for terms, _ in m.varying.values() for name, _ in terms):
        out.append("re_corr")
    return out


# --------------------------------------------------------------------- spec errors

# The spec's advice in TOML terms, and the same advice in equations.
_ADVICE = {
    "set [initial] state = 'diffuse' (or a known start with mean and sd)": (
        "write 'initial diffuse' (or a known start: x(0) = mean and x(0) ~~ v*x(0))"
    ),
}
_WHERE = re.compile(r"^(\[\w+\] \w+)((?:\[\d+\])*)")


def _located(e: SpecError, origins: Mapping[str, tuple], source: str) -> SpecError:
    """A SpecError of the compiled spec, pointed back at the equation it came from."""
    where = e.where or ""
    match = _WHERE.match(where)
    if match:
        key = match.group(1) + match.group(2)
        found = origins.get(key) or next(
            (v for k, v in origins.items() if k.startswith(match.group(1) + "[")), None
        )
        if found is not None:
            st, t = found
            problem = e.problem
            for toml, equations in _ADVICE.items():
                problem = problem.replace(toml, equations)
            return st.error(f"{problem} (in {where})", t.span)
    return SpecError(e.problem, source=source, where=where or None)
