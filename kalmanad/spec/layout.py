"""The TOML layout of compiled equations: cells, parameters and the hierarchy.

:func:`sections` turns what :mod:`~kalmanad.spec.equations` gathered from the
statements (coefficients by cell, parameters by role) into the keyword sections of
:class:`~kalmanad.spec.model.ModelSpec`, exactly as a TOML spec would give them.
"""

from __future__ import annotations

import ast
from typing import Any

from kalmanad.spec.statements import Term

__all__ = ["DEFAULT_PRIOR", "DEFAULT_SCALE_PRIOR", "sections"]

#: The prior of a parameter without a prior statement...
DEFAULT_PRIOR = "Normal(0, 1)"
#: ... and of one in a standard deviation or variance (a diagonal cell of the noise
#: loadings or of a covariance) and in no covariance (an off-diagonal cell).
DEFAULT_SCALE_PRIOR = "HalfNormal(1)"


def _text(node) -> str:
    """A coefficient's expression text, with powers written ^."""
    return ast.unparse(node).replace(" ** ", "^").replace(" * ", "*")


def sections(m) -> tuple[dict, dict]:
    n, p, k = len(m.states), len(m.indicators), len(m.inputs)
    if n == 0:
        raise m.statements[0].error(
            "no state equation: write one d(state) = ... per latent state", m.statements[0].span
        )
    if p == 0:
        raise m.statements[0].error(
            "no measurement equation: write indicator ~ loading*state", m.statements[0].span
        )
    origins: dict[str, tuple] = {}

    def matrix(key, shape, where, symmetric=False):
        out = [[0] * shape[1] for _ in range(shape[0])] if len(shape) == 2 else [0] * shape[0]
        found = False
        for pos, (coef, st, t) in m.cells.items():
            if pos[0] != key:
                continue
            found = True
            cells = [pos[1:]] + ([pos[1:][::-1]] if symmetric and pos[1] != pos[2] else [])
            for c in cells:
                text = _text(coef)
                if len(c) == 2:
                    out[c[0]][c[1]] = text
                else:
                    out[c[0]] = text
                origins[where + "".join(f"[{x}]" for x in c)] = (st, t)
        return out if found else None

    dynamics: dict[str, Any] = {"drift": matrix("drift", (n, n), "[dynamics] drift")}
    for key, shape, sym in (
        ("intercept", (n,), False),
        ("input_effect", (n, k), False),
        ("impulse_effect", (n, k), False),
        ("diffusion_sd", (n, len(m.noises)), False),
        ("diffusion", (n, n), True),
    ):
        value = matrix(key, shape, f"[dynamics] {key}", sym)
        if value is not None:
            dynamics[key] = value
    dynamics["drift"] = dynamics["drift"] or 0
    if "diffusion_sd" in dynamics and "diffusion" in dynamics:
        st = next(st for pos, (_, st, _) in m.cells.items() if pos[0] == "diffusion")
        raise st.error(
            "give the noise either as dW terms in the state equations or as state ~~ rates, "
            "not both",
            st.span,
        )
    dynamics.setdefault("diffusion", 0) if "diffusion_sd" not in dynamics else None
    measurement = _measurement(m, matrix, p, n, k)
    initial = _initial(m, matrix, n)
    parameters = _parameters(m)
    derived = {x: _text(st.rhs) for x, st in m.derived.items()}
    random_effects, covariates = _hierarchy(m)
    sections = {
        "latent": list(m.states),
        "manifest": list(m.indicators),
        "inputs": list(m.inputs),
        "parameters": parameters,
        "derived": derived,
        "dynamics": dynamics,
        "measurement": measurement,
        "initial": initial,
        "random_effects": random_effects,
        "covariates": covariates,
    }
    for x, st in m.derived.items():
        origins[f"[derived] {x}"] = (st, Term(None, None, st.rhs, st.rhs_span))
    return sections, origins


def _measurement(m, matrix, p, n, k) -> dict:
    out: dict[str, Any] = {"loadings": matrix("loadings", (p, n), "[measurement] loadings")}
    value = matrix("m_intercept", (p,), "[measurement] intercept")
    if value is not None:
        out["intercept"] = value
    value = matrix("m_input_effect", (p, k), "[measurement] input_effect")
    if value is not None:
        out["input_effect"] = value
    # An indicator without a residual variance gets a free one, <indicator>_var.
    for i, y in enumerate(m.indicators):
        if ("noise", i, i) not in m.cells:
            name = f"{y}_var"
            st = next(st for st in m.statements if st.kind == "indicator" and st.name == y)
            m.cells[("noise", i, i)] = (ast.Name(name), st, Term(None, None, None, st.name_span))
            m.used.setdefault(name, st)
            m.scale.add(name)
    out["noise"] = matrix("noise", (p, p), "[measurement] noise", symmetric=True)
    return out


def _initial(m, matrix, n) -> dict:
    out: dict[str, Any] = {}
    mean = matrix("initial_mean", (n,), "[initial] mean")
    cov = matrix("initial_cov", (n, n), "[initial] cov", symmetric=True)
    if mean is not None:
        out["mean"] = mean
    if cov is not None:
        out["cov"] = cov
        out["state"] = "known"
    elif m.initial is not None:
        if m.initial == "known":
            st = next(st for st in m.statements if st.kind == "initial")
            raise st.error(
                "a known start needs its covariance: x(0) ~~ v*x(0) for each state", st.span
            )
        out["state"] = m.initial
        if m.diffuse_scale is not None:
            out["diffuse_scale"] = m.diffuse_scale
    return out


def _parameters(m) -> dict:
    """Free parameters (prior statements first, then by first use) and fixed ones."""
    from kalmanad.spec.expressions import CONSTANTS, FUNCTIONS

    out: dict[str, Any] = {}
    order = [x for x in m.priors if x in m.used] + [x for x in m.used if x not in m.priors]
    for x in order:
        if x in m.derived or x in FUNCTIONS or x in CONSTANTS:
            continue
        if x in m.fixed:
            out[x] = m.fixed[x]
            continue
        if x in m.priors:
            text, st = m.priors[x]
            entry: dict[str, Any] = {"prior": text}
            if st.comment:
                entry["description"] = st.comment
        else:
            scale = x in m.scale and x not in m.offdiag
            entry = {"prior": DEFAULT_SCALE_PRIOR if scale else DEFAULT_PRIOR}
        if x in m.starts:
            entry["start"] = m.starts[x][0]
        out[x] = entry
    for x, v in m.fixed.items():
        out.setdefault(x, v)
    return out


def _hierarchy(m) -> tuple[dict | None, dict | None]:
    """``[random_effects]`` and ``[covariates]`` from ``param | subject + covariate``."""
    re_params = [x for x, (terms, _) in m.varying.items() if any(n == "subject" for n, _ in terms)]
    effects = {
        x: [n for n, _ in terms if n != "subject"]
        for x, (terms, _) in m.varying.items()
        if any(n != "subject" for n, _ in terms)
    }
    random_effects = covariates = None
    if re_params:
        sd = {}
        for x in re_params:
            if f"{x}_sd" in m.priors:
                sd[x] = m.priors[f"{x}_sd"][0]
        corr = m.priors.get("re_corr", ("LKJ(2)", None))[0]
        random_effects = {"parameters": re_params, "correlation_prior": corr}
        if sd:
            random_effects["sd_prior"] = sd
    if effects:
        covariates = {"effects": effects}
        priors = {
            m.priors[f"{c}_on_{x}"]
            for x, cs in effects.items()
            for c in cs
            if f"{c}_on_{x}" in m.priors
        }
        if len({t for t, _ in priors}) > 1:
            _, st = sorted(priors, key=lambda p: p[1].line)[-1]
            raise st.error(
                "every covariate effect has one prior: give them all the same one",
                st.name_span,
            )
        if priors:
            covariates["prior"] = next(iter(priors))[0]
    return random_effects, covariates
