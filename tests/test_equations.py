"""The equations language (``.kal``): reading, compiling to the spec, errors, round trips.

* Units: statements, linear decomposition, defaults, priors, starts, the initial state,
  inputs and impulses, subject-level parameters.
* Every error kind, with its line, column and caret text checked.
* Round trip: each zoo model's ``models/<name>.kal`` has the TOML spec's parameter
  names and priors and the same joint log density (priors + likelihood) at prior
  draws; describe() printed back as equations compiles to the same matrices (also a
  hypothesis property over random linear models).
* Loading: ``load_model("x.kal")``, TOML ``[equations]``, ``kalmanad describe/fit``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import numpyro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpyro.infer.util import log_density

from kalmanad.spec import EquationError, SpecError, from_equations, load_model
from kalmanad.spec.model import ModelSpec
from kalmanad.spec.render import model_equations

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
ZOO = sorted(p.stem for p in MODELS.glob("*.toml") if not p.stem.startswith("_"))
# Zoo models without an equations form, with the reason (none: every zoo model has one).
NOT_EXPRESSIBLE: dict[str, str] = {}

OU = """
d(x) = theta*(mu - x) + sqrt(2*theta)*sigma*dW
y ~ x ; y ~~ noise^2*y
theta ~ lognormal(0, 1)   # mean-reversion rate
mu ~ normal(0, 5)
sigma ~ halfnormal(2)
noise ~ halfnormal(1)
"""
VALUES = {"theta": 0.5, "mu": 2.0, "sigma": 1.0, "noise": 0.3}


def mats(spec, values):
    return {k: np.asarray(v) for k, v in spec.matrices(values).items()}


# ---------------------------------------------------------------------------- units


def test_ou_compiles_to_the_linear_model():
    spec = from_equations(OU)
    assert spec.latent == ("x",) and spec.manifest == ("y",)
    assert spec.parameters == ("theta", "mu", "sigma", "noise")
    assert spec.prior_texts["theta"] == "LogNormal(0, 1)"
    assert spec.parameter_descriptions["theta"] == "mean-reversion rate"
    m = mats(spec, VALUES)
    np.testing.assert_allclose(m["drift"], [[-0.5]])
    np.testing.assert_allclose(m["drift_intercept"], [1.0])  # theta * mu
    np.testing.assert_allclose(m["diffusion"], [[1.0]], rtol=1e-14)  # (sqrt(2 theta) sigma)^2
    np.testing.assert_allclose(m["observation"], [[1.0]])
    np.testing.assert_allclose(m["observation_noise"], [[0.09]])
    assert spec.initial_state == "stationary"


def test_statements_split_on_semicolons_comments_and_continuations():
    text = """
    d(x1) = -a*x1 +      # a line ending in an operator continues
            b*x2 + s1*dW1
    d(x2) = (-c*x2
             + s2*dW2); y1 ~ x1 ; y2 ~ l*x2   # two statements share this line
    y1 ~~ r1*y1 ; y2 ~~ r2*y2
    """
    spec = from_equations(text)
    m = mats(spec, dict.fromkeys(spec.parameters, 0.5))
    np.testing.assert_allclose(m["drift"], [[-0.5, 0.5], [0, -0.5]])
    np.testing.assert_allclose(m["diffusion"], np.diag([0.25, 0.25]))
    np.testing.assert_allclose(m["observation"], [[1, 0], [0, 0.5]])


def test_numbers_are_fixed_and_coefficients_distribute():
    spec = from_equations(
        "d(x) = -0.5*x + 2*(a - x)/4 + dW\ny ~ 3*x + 1\ny ~~ r*y\nk = 2\nd(z) = -k*z + x"
    )
    assert spec.constants == {"k": 2.0}
    m = mats(spec, {"a": 1.0, "r": 0.1})
    np.testing.assert_allclose(m["drift"], [[-1.0, 0.0], [1.0, -2.0]])
    np.testing.assert_allclose(m["drift_intercept"], [0.5, 0.0])
    np.testing.assert_allclose(m["observation"], [[3.0, 0.0]])
    np.testing.assert_allclose(m["observation_intercept"], [1.0])


def test_default_priors_by_role_and_default_residual_variance():
    spec = from_equations("d(x) = a*x + b + s*dW1 + c*dW2\nd(z) = -z + t*dW2\ny ~ x + z")
    priors = spec.prior_texts
    assert priors["a"] == priors["b"] == priors["c"] == "Normal(0, 1)"  # coefficients
    assert priors["s"] == priors["t"] == "HalfNormal(1)"  # diagonal noise loadings
    assert priors["y_var"] == "HalfNormal(1)"  # the residual variance nobody wrote


def test_inputs_impulses_derived_and_initial_state():
    spec = from_equations(
        """
        input u
        d(x) = -k*x + b*u + j*impulse(u) + s*dW
        y ~ x + g*u ; y ~~ 0.01*y
        k2 = 2*k
        x(0) = m0 ; x(0) ~~ v0^2*x(0)
        """
    )
    assert spec.inputs == ("u",) and spec.initial_state == "known"
    assert spec.derived["k2"].text == "2*k"
    m = mats(spec, {"k": 1.0, "b": 2.0, "j": 3.0, "s": 1.0, "g": 4.0, "m0": 5.0, "v0": 0.5})
    assert m["input_effect"].tolist() == [[2.0]]
    assert m["impulse_effect"].tolist() == [[3.0]]
    assert m["observation_input_effect"].tolist() == [[4.0]]
    assert m["initial_mean"].tolist() == [5.0] and m["initial_cov"].tolist() == [[0.25]]
    diffuse = from_equations("d(x) = s*dW\ny ~ x\ny ~~ r*y\ninitial diffuse(1e4)")
    assert diffuse.initial_state == "diffuse" and diffuse.diffuse_scale == 1e4


def test_covariances_and_state_rates():
    spec = from_equations(
        "d(x) = -x\nd(z) = -z\nx ~~ q*x ; z ~~ q*z ; z ~~ c*x\n"
        "y1 ~ x ; y2 ~ z ; y1 ~~ r*y1 ; y2 ~~ r*y2 ; y2 ~~ rc*y1"
    )
    m = mats(spec, {"q": 2.0, "c": 0.5, "r": 1.0, "rc": 0.25})
    np.testing.assert_allclose(m["diffusion"], [[2.0, 0.5], [0.5, 2.0]])
    np.testing.assert_allclose(m["observation_noise"], [[1.0, 0.25], [0.25, 1.0]])


def test_starts_and_init_strategy():
    spec = from_equations(OU + "start theta = 0.7")
    assert spec.starts == {"theta": 0.7}
    times = np.arange(5.0)
    y = np.zeros((5, 1))
    strategy = spec.init_strategy()
    seeded = numpyro.handlers.seed(spec.numpyro_model, jax.random.PRNGKey(0))
    trace = numpyro.handlers.trace(
        numpyro.handlers.substitute(seeded, substitute_fn=strategy)
    ).get_trace(times, y)
    assert float(trace["theta"]["value"]) == 0.7
    assert float(trace["mu"]["value"]) == pytest.approx(0.0, abs=2.0)  # the prior median's
    with pytest.raises(SpecError, match="outside the support"):
        ModelSpec.from_dict(
            {
                "model": {"latent": ["x"], "manifest": ["y"]},
                "parameters": {"a": {"prior": "LogNormal(0, 1)", "start": -1.0}},
                "dynamics": {"drift": [["-a"]], "diffusion": [[1]]},
                "measurement": {"loadings": [[1]], "noise": [[1]]},
            }
        )


def test_subject_statements_map_to_random_effects_and_covariates():
    spec = from_equations(
        OU
        + "theta | subject + age\nmu | subject\nnoise | age\n"
        + "theta_sd ~ halfnormal(0.5)\nre_corr ~ none\nage_on_theta ~ normal(0, 2)"
    )
    assert spec.random_effects.parameters == ("theta", "mu")
    assert spec.random_effects.lkj is None
    assert spec.random_effects.sd_priors["theta"].text == "HalfNormal(0.5)"
    assert spec.random_effects.sd_priors["mu"].text == "HalfNormal(1)"
    assert spec.covariates.effects == {"theta": ("age",), "noise": ("age",)}
    assert spec.covariates.prior.text == "Normal(0, 2)"


# --------------------------------------------------------------------------- errors

ERRORS = [
    (
        "unknown state",
        "d(anomia) = -a*anomia + s*dW\ny ~ l*anomai",
        "line 2, column 7: unknown state 'anomai' (did you mean 'anomia'?)",
        "    y ~ l*anomai\n          ^^^^^^",
    ),
    (
        "a state without an equation",
        "d(x) = -a*x + s*dW\ny ~ x\nz(0) = 1",
        "line 3, column 1: 'z' is not a state: it has no equation d(z) = ...",
        "    z(0) = 1\n    ^",
    ),
    (
        "an indicator's state without an equation",
        "d(x) = -a*x + s*dW\ny ~ z",
        "line 2, column 5: unknown state 'z': it has no equation d(z) = ...",
        "    y ~ z\n        ^",
    ),
    (
        "an indicator with no loading",
        "d(x) = -a*x + s*dW\ny ~ m1 + m2",
        "line 2, column 5: indicator 'y' has no loading on a state",
        "    y ~ m1 + m2\n        ^^^^^^^",
    ),
    (
        "fixed and free",
        "d(x) = -a*x + s*dW\ny ~ x\na = 0.5\na ~ normal(0, 1)",
        "line 4, column 1: 'a' is fixed (a = 0.5) and has a prior",
        "    a ~ normal(0, 1)\n    ^",
    ),
    (
        "a prior on an unknown parameter",
        "d(x) = -theta*x + s*dW\ny ~ x\ntheat ~ lognormal(0, 1)",
        "line 3, column 1: prior on an unknown parameter 'theat' (did you mean 'theta'?)",
        "    theat ~ lognormal(0, 1)\n    ^^^^^",
    ),
    (
        "a duplicate equation",
        "d(x) = -a*x + s*dW\nd(x) = -b*x\ny ~ x",
        "line 2, column 3: duplicate equation d(...) = ... for 'x' (first on line 1)",
        "    d(x) = -b*x\n      ^",
    ),
    (
        "a syntax error in an expression",
        "d(x) = -a*x + * s*dW\ny ~ x",
        "line 1, column 15: cannot read this expression",
        "    d(x) = -a*x + * s*dW\n                  ^",
    ),
    (
        "an unreadable statement",
        "d(x) = -a*x\ny x",
        "line 2, column 1: cannot read this statement",
        "    y x\n    ^^^",
    ),
    (
        "a nonlinear drift",
        "d(x) = -a*x + s*dW\nd(z) = -z + x*z\ny ~ x",
        "line 2, column 13: nonlinear term 'x*z' (a product of two variables)",
        "    d(z) = -z + x*z\n                ^^^",
    ),
    (
        "an unknown prior",
        "d(x) = -a*x + s*dW\ny ~ x\na ~ nromal(0, 1)",
        "line 3, column 5: unknown prior 'nromal' (did you mean 'normal'?)",
        "    a ~ nromal(0, 1)\n        ^^^^^^",
    ),
    (
        "an indicator on a right-hand side",
        "d(x) = -a*x + b*y + s*dW\ny ~ x",
        "line 1, column 17: 'y' is an indicator (observed)",
        "    d(x) = -a*x + b*y + s*dW\n                    ^",
    ),
    (
        "a spec check located at its term",
        "d(x) = -a*x + s*dW\ny ~ x\ns ~ normal(0, 1)",
        "line 1, column 15: standard deviation 's' can be negative",
        "    d(x) = -a*x + s*dW\n                  ^^^^",
    ),
]


@pytest.mark.parametrize(
    ("problem", "text", "message", "caret"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_errors_point_at_line_and_column(problem, text, message, caret):
    with pytest.raises(EquationError) as info:
        from_equations(text, source="m.kal")
    shown = str(info.value)
    assert shown.startswith(f"m.kal: {message}"), shown
    assert shown.endswith(caret), shown
    assert isinstance(info.value, SpecError)


def test_nonlinear_error_says_nonlinear_sdes_are_missing():
    with pytest.raises(EquationError, match="nonlinear drift needs nonlinear SDE support"):
        from_equations("d(x) = -a*sin(x) + dW\ny ~ x")


# ----------------------------------------------------------------------- round trip


def _small(spec, data):
    """The first 6 subjects, or the first 60 rows of one series."""
    kw = data.model_kwargs()
    if data.subject is None:
        return {k: v[:60] for k, v in kw.items()}
    keep = np.isin(data.subject, list(dict.fromkeys(data.subject))[:6])
    out = {k: v[keep] for k, v in kw.items() if k != "covariates"}
    if "covariates" in kw:
        out["covariates"] = {c: v[keep] for c, v in kw["covariates"].items()}
    return out


def _zoo_pair(name):
    if name in NOT_EXPRESSIBLE:
        pytest.skip(NOT_EXPRESSIBLE[name])
    return load_model(name), load_model(MODELS / f"{name}.kal")


@pytest.mark.parametrize("name", ZOO)
def test_zoo_equations_form_has_the_same_parameters_and_matrices(name):
    toml, kal = _zoo_pair(name)
    assert kal.parameters == toml.parameters
    assert kal.prior_texts == toml.prior_texts
    assert kal.constants == toml.constants
    assert kal.initial_state == toml.initial_state
    assert kal.varying_parameters == toml.varying_parameters
    if toml.random_effects:
        re, re2 = toml.random_effects, kal.random_effects
        assert (re2.parameters, re2.lkj) == (re.parameters, re.lkj)
        assert {x: p.text for x, p in re2.sd_priors.items()} == {
            x: p.text for x, p in re.sd_priors.items()
        }
    if toml.covariates:
        assert kal.covariates.effects == toml.covariates.effects
        assert kal.covariates.prior.text == toml.covariates.prior.text
    for seed in range(2):
        draw = toml.sample_prior(jax.random.PRNGKey(seed))
        a, b = mats(toml, draw), mats(kal, draw)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)


# The joint log density end to end: ou in the default run, the rest opt-in (slow).
_DENSITY = [name if name == "ou" else pytest.param(name, marks=pytest.mark.slow) for name in ZOO]


@pytest.mark.parametrize("name", _DENSITY)
def test_zoo_equations_form_has_the_same_log_density(name):
    """Priors + likelihood of both forms at prior draws (the panel's subject effects too)."""
    toml, kal = _zoo_pair(name)
    kw = _small(toml, toml.default_data())
    observed = {k: v for k, v in kw.items() if k != "y"}
    draws = []
    for seed in range(20):
        seeded = numpyro.handlers.seed(toml.numpyro_model, jax.random.PRNGKey(seed))
        trace = numpyro.handlers.trace(seeded).get_trace(**observed)
        draws.append(
            {
                k: s["value"]
                for k, s in trace.items()
                if s["type"] == "sample" and not s["is_observed"] and k != "y"
            }
        )
    stacked = jax.tree.map(lambda *v: jax.numpy.stack(v), *draws)

    def density(spec):
        one = lambda v: log_density(spec.numpyro_model, (), kw, v)[0]  # noqa: E731
        return np.asarray(jax.jit(jax.vmap(one))(stacked))

    a, b = density(toml), density(kal)
    assert np.isfinite(a).sum() >= 3  # draws with an unstable drift have -inf in both
    np.testing.assert_array_equal(np.isfinite(b), np.isfinite(a))
    np.testing.assert_allclose(b[np.isfinite(a)], a[np.isfinite(a)], rtol=1e-10)


@pytest.mark.parametrize("name", ZOO)
def test_describe_prints_equations_that_compile_to_the_same_matrices(name):
    spec = load_model(name)
    text = model_equations(spec)
    assert f"{text.splitlines()[0]}" in spec.describe()
    if any(line.startswith("#") for line in text.splitlines()):
        pytest.skip(f"{name}.toml uses builders (no equation form of those matrices)")
    again = from_equations(text)
    values = {k: float(v) for k, v in spec.sample_prior(jax.random.PRNGKey(1)).items()}
    a, b = mats(spec, values), mats(again, values)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-13, err_msg=k)
    assert again.prior_texts == spec.prior_texts


_CELL = st.one_of(
    st.just(0),
    st.floats(-2, 2, allow_nan=False).map(lambda v: round(v, 3)),
    st.sampled_from(["a", "-a", "b", "a * b", "exp(c)", "a - 2 * b", "-(a + b) / 3"]),
)


@settings(max_examples=15, deadline=None)
@given(
    drift=st.lists(st.lists(_CELL, min_size=2, max_size=2), min_size=2, max_size=2),
    loadings=st.lists(_CELL, min_size=2, max_size=2),
    intercept=st.lists(_CELL, min_size=2, max_size=2),
    sd=st.lists(st.sampled_from([0, 1, "s", "s * 2", "exp(c)"]), min_size=2, max_size=2),
)
def test_property_printed_equations_compile_to_the_same_matrices(drift, loadings, intercept, sd):
    """Any cell-by-cell spec, printed as equations and read back, has the same matrices."""
    spec = ModelSpec.from_dict(
        {
            "model": {"latent": ["x1", "x2"], "manifest": ["y"]},
            "parameters": {
                "a": "Normal(0, 1)",
                "b": "Normal(0, 1)",
                "c": "Normal(0, 1)",
                "s": "HalfNormal(1)",
            },
            "dynamics": {
                "drift": drift,
                "intercept": intercept,
                "diffusion_sd": [[sd[0], "b"], ["c", sd[1]]],
            },
            "measurement": {"loadings": [[*loadings[:1], "s"]], "noise_sd": [["s"]]},
            "derived": {"total": "a + b + c + s"},  # every parameter is used
            "initial": {"state": "diffuse"},
        }
    )
    again = from_equations(model_equations(spec))
    values = {"a": 0.3, "b": -0.7, "c": 0.2, "s": 1.3}
    a, b = mats(spec, values), mats(again, values)
    for k in a:  # an all-zero intercept is a default (absent) one in the equations
        got = b.get(k, np.zeros_like(a[k]))
        np.testing.assert_allclose(got, a[k], rtol=1e-13, atol=1e-15, err_msg=k)


# -------------------------------------------------------------------------- loading


def test_toml_equations_table(tmp_path):
    (tmp_path / "ou.csv").write_text((MODELS / "ou.csv").read_text())
    path = tmp_path / "m.toml"
    path.write_text(
        '[model]\ntitle = "OU as equations"\n\n[equations]\ntext = """' + OU + '"""\n\n'
        '[data]\nfile = "ou.csv"\n'
    )
    spec = load_model(path)
    assert spec.name == "m" and spec.title == "OU as equations"
    assert spec.default_data().y.shape == (200, 1)
    np.testing.assert_allclose(mats(spec, VALUES)["drift"], [[-0.5]])
    path.write_text('[equations]\ntext = "d(x) = -x"\n[dynamics]\ndrift = [[1]]\n')
    with pytest.raises(SpecError, match=r"\[dynamics\].*not both"):
        load_model(path)


def test_load_model_reads_a_bare_kal_file_name(tmp_path, monkeypatch):
    (tmp_path / "mine.kal").write_text(OU)
    monkeypatch.chdir(tmp_path)
    spec = load_model("mine.kal")
    assert spec.name == "mine" and spec.parameters == ("theta", "mu", "sigma", "noise")
    with pytest.raises(SpecError, match="file not found"):
        load_model("missing.kal")


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "kalmanad.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_describe_of_a_kal_file(tmp_path):
    (tmp_path / "model.kal").write_text(OU)
    res = _cli("describe", "model.kal", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "d(x) = -theta*x + theta*mu + sqrt(2*theta)*sigma*dW" in res.stdout
    # The command prints a load error as is (kalmanad.cli's _load): this message.
    bad = tmp_path / "bad.kal"
    bad.write_text("d(x) = -a*x + dW\ny ~ l*xx")
    with pytest.raises(EquationError) as info:
        load_model(bad)
    assert str(info.value).startswith(f"{bad}: line 2, column 5: indicator 'y' has no loading")
    assert "'xx' is not a state: it has no equation d(xx) = ..." in str(info.value)


@pytest.mark.slow
def test_cli_fits_a_kal_file(tmp_path):
    (tmp_path / "model.kal").write_text(OU)
    (tmp_path / "data.csv").write_text((MODELS / "ou.csv").read_text())
    res = _cli(
        "fit", "model.kal", "data.csv", "--draws", "50", "--warmup", "50", "--chains", "1",
        "--no-plot", "--no-progress", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "model_fit.nc").is_file()
    assert "theta" in res.stdout
