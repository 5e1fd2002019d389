"""A spec written back as text: :func:`model_equations` (the ``.kal`` language) and
:func:`describe` (the summary behind :meth:`ModelSpec.describe`).

The equations are read off the compiled matrices, so a TOML spec and an equations
model print the same way; :func:`~kalmanad.spec.equations.from_equations` of the
text gives the same matrices again. A matrix made by a builder (``companion``,
``ma_loadings``, ``stationary_sd``) has no equation form and is named in a comment.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

from kalmanad.spec.cells import Cells

__all__ = ["describe", "model_equations"]


def _number(v: float) -> str:
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def _cell(cells: Cells, pos) -> str | None:
    """A cell's text, or None for a constant zero."""
    for targets, e in cells.dynamic:
        if tuple(pos) in targets:
            return e.text.replace("**", "^")
    v = float(cells.base[tuple(pos)])
    return None if v == 0 else _number(v)


def _compact(t: str) -> str:
    """Expression text with powers as ^ and no spaces around * and ^."""
    return t.replace("**", "^").replace(" * ", "*").replace(" ^ ", "^")


def _factor(t: str) -> str:
    """``t`` ready to stand in a sum or multiply a variable: parenthesised when it is a
    sum or difference itself."""
    t = _compact(t)
    tree = ast.parse(t.replace("^", "**"), mode="eval").body
    return (
        f"({t})" if isinstance(tree, ast.BinOp) and isinstance(tree.op, (ast.Add, ast.Sub)) else t
    )


def _term(coef: str, var: str | None) -> str:
    if var is None:
        return _factor(coef)
    if coef == "1":
        return var
    if coef == "-1":
        return f"-{var}"
    return f"{_factor(coef)}*{var}"


def _sum(terms: list[str]) -> str:
    if not terms:
        return "0"
    out = terms[0]
    for t in terms[1:]:
        out += f" - {t[1:]}" if t.startswith("-") else f" + {t}"
    return out


def _product_cells(cells: Cells, i: int, j: int) -> str | None:
    """Entry (i, j) of X Xᵀ for a factor X given cell by cell."""
    parts = []
    for k in range(cells.shape[1]):
        a, b = _cell(cells, (i, k)), _cell(cells, (j, k))
        if a is None or b is None:
            continue
        parts.append(f"{_factor(a)}^2" if a == b else f"{_factor(a)}*{_factor(b)}")
    return " + ".join(parts) if parts else None


def _covariances(field, names, suffix="", *, diagonal_zero=False) -> list[str]:
    """``a ~~ c*b`` lines of a covariance (or of X Xᵀ for a factor field)."""
    cells = field.spec
    out = []
    for i in range(len(names)):
        for j in range(i + 1):
            c = _product_cells(cells, i, j) if field.factor else _cell(cells, (i, j))
            if c is None and (i != j or not diagonal_zero):
                continue
            a, b = names[i] + suffix, names[j] + suffix
            out.append(f"{a} ~~ {_factor(c or '0')}*{b}")
    return out


def _rows(spec, fields, names, lhs) -> list[str]:
    """One equation per row: ``lhs(name) = terms`` from the given fields' cells."""
    out = []
    for i, name in enumerate(names):
        terms = []
        for target, variables, wrap in fields:
            f = spec.cells.get(target)
            if f is None or not isinstance(f.spec, Cells) or target == "diffusion":
                continue
            if variables is None:  # a vector: constant terms
                c = _cell(f.spec, (i,))
                if c is not None:
                    terms.append(_term(c, None))
                continue
            for j, v in enumerate(variables):
                c = _cell(f.spec, (i, j))
                if c is not None:
                    terms.append(_term(c, wrap(v)))
        out.append(lhs(name) + _sum(terms))
    return out


def model_equations(spec) -> str:
    """The spec as statements of the equations language (one a line)."""
    n_noise = 0
    diff = spec.cells["diffusion"]
    noises = []
    if diff.key == "diffusion_sd" and isinstance(diff.spec, Cells):
        n_noise = diff.spec.shape[1]
        noises = ["dW"] if n_noise == 1 else [f"dW{j + 1}" for j in range(n_noise)]
    lines = []
    for key in ("drift", "observation", "diffusion"):
        f = spec.cells[key]
        if not isinstance(f.spec, Cells):
            lines.append(f"# {f.where}: the {type(f.spec).__name__} builder (no equation form)")
    state_fields = [
        ("drift", spec.latent, str),
        ("input_effect", spec.inputs, str),
        ("impulse_effect", spec.inputs, lambda u: f"impulse({u})"),
        ("drift_intercept", None, str),
    ]
    if spec.inputs:
        lines.append(f"input {', '.join(spec.inputs)}")
    lines += _builder_rows(
        spec, "drift", _rows(spec, state_fields, spec.latent, lambda x: f"d({x}) = ")
    )
    if n_noise:  # the noise terms (the _rows skip diffusion: add them here)
        lines = _with_noise(lines, spec, diff.spec, noises)
    elif diff.key == "diffusion" and isinstance(diff.spec, Cells):
        lines += _covariances(diff, spec.latent)
    obs = [
        ("observation", spec.latent, str),
        ("observation_input_effect", spec.inputs, str),
        ("observation_intercept", None, str),
    ]
    lines += _builder_rows(
        spec, "observation", _rows(spec, obs, spec.manifest, lambda y: f"{y} ~ ")
    )
    lines += _covariances(spec.cells["observation_noise"], spec.manifest, diagonal_zero=True)
    lines += _initial_lines(spec)
    lines += _parameter_lines(spec)
    return "\n".join(lines)


def _builder_rows(spec, target, lines) -> list[str]:
    """Rows of a builder-made matrix, commented out: the builder's terms are missing."""
    if isinstance(spec.cells[target].spec, Cells):
        return lines
    return [f"# {line} + (the builder's terms)" for line in lines]


def _with_noise(lines, spec, cells: Cells, noises) -> list[str]:
    out = []
    for line in lines:
        match = re.match(r"^d\((\w+)\) = (.*)$", line)
        if match is None or match.group(1) not in spec.latent:
            out.append(line)
            continue
        i = spec.latent.index(match.group(1))
        extra = [
            _term(c, noises[j])
            for j in range(len(noises))
            if (c := _cell(cells, (i, j))) is not None
        ]
        terms = [] if match.group(2) == "0" else [match.group(2)]
        out.append(f"d({match.group(1)}) = " + _sum(terms + extra))
    return out


def _initial_lines(spec) -> list[str]:
    lines = []
    mean = spec.cells.get("initial_mean")
    if mean is not None:
        for i, x in enumerate(spec.latent):
            c = _cell(mean.spec, (i,))
            lines.append(f"{x}(0) = {c or '0'}")
    cov = spec.cells.get("initial_cov")
    if cov is not None:
        lines += _covariances(cov, spec.latent, "(0)", diagonal_zero=True)
    elif spec.initial_state == "diffuse":
        scale = "" if spec.diffuse_scale == 1e6 else f"({_number(spec.diffuse_scale)})"
        lines.append(f"initial diffuse{scale}")
    return lines


def _parameter_lines(spec) -> list[str]:
    lines = [f"{x} ~ {text}" for x, text in spec.prior_texts.items()]
    lines += [f"{x} = {_number(v)}" for x, v in spec.constants.items()]
    lines += [f"{x} = {_compact(e.text)}" for x, e in spec.derived.items()]
    lines += [f"start {x} = {_number(v)}" for x, v in spec.starts.items()]
    covs = spec.covariates.effects if spec.covariates else {}
    re_params = spec.random_effects.parameters if spec.random_effects else ()
    order = [*re_params, *(x for x in covs if x not in re_params)]
    for x in order:
        terms = (["subject"] if x in re_params else []) + list(covs.get(x, ()))
        lines.append(f"{x} | {' + '.join(terms)}")
    if spec.random_effects:
        re = spec.random_effects
        lines += [f"{x}_sd ~ {re.sd_priors[x].text}" for x in re.parameters]
        corr = f"LKJ({_number(re.lkj)})" if re.lkj is not None else "none"
        lines.append(f"re_corr ~ {corr}")
    if spec.covariates:
        lines += [
            f"{c}_on_{x} ~ {spec.covariates.prior.text}" for x, cs in covs.items() for c in cs
        ]
    return lines


def describe(spec) -> str:
    """Variables, parameters with priors, the equations and the matrices of a spec."""
    summary = spec.title or (spec.description.strip().splitlines() or [""])[0]
    lines = [f"{spec.name}: {summary}" if summary else spec.name]
    lines.append(f"  latent:   {', '.join(spec.latent)}")
    lines.append(f"  manifest: {', '.join(spec.manifest)}")
    if spec.inputs:
        lines.append(f"  inputs:   {', '.join(spec.inputs)}")
    lines.append("  parameters:")
    priors = spec.prior_texts
    width = max(len(x) for x in [*priors, *spec.constants])
    pwidth = max(len(text) for text in priors.values())
    for x in priors:
        desc = spec.parameter_descriptions.get(x, "")
        text = f"    {x:<{width}} ~ {priors[x]:<{pwidth}}"
        lines.append(f"{text}   # {desc}" if desc else text.rstrip())
    for x, v in spec.constants.items():
        lines.append(f"    {x:<{width}} = {v:g} (fixed)")
    for x, v in spec.starts.items():
        lines.append(f"    start {x} = {v:g}")
    if spec.derived:
        lines.append("  derived:")
        for x, e in spec.derived.items():
            lines.append(f"    {x} = {e.text}")
    lines.append("  equations:")
    lines += [f"    {line}" for line in model_equations(spec).splitlines()]
    lines.append("  matrices:")
    for f in spec.cells.values():
        lines.append(f"    {f.where} = {_show(f.display)}")
    lines.append(f"  initial state: {spec.initial_state}")
    if spec.random_effects:
        re = spec.random_effects
        corr = f"LKJ({re.lkj:g})" if re.lkj is not None else "none"
        lines.append(f"  random effects: {', '.join(re.parameters)} (correlation: {corr})")
    if spec.covariates:
        eff = "; ".join(f"{x} <- {', '.join(c)}" for x, c in spec.covariates.effects.items())
        lines.append(f"  covariates: {eff}")
    if spec.data.file:
        kind = "simulated" if spec.data.truth else "real"
        lines.append(f"  default data: {spec.data.file} ({kind})")
    return "\n".join(lines)


def _show(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return str(value)
