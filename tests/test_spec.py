"""Tests of the model-spec language (kalmanad/spec/) and the model zoo (models/)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from numpyro import handlers

from kalmanad.model import LinearSDE
from kalmanad.spec import (
    DataError,
    ModelSpec,
    SpecError,
    list_models,
    load_model,
    models_dir,
    parse_expression,
    parse_prior,
    to_panel,
)

ZOO = [
    "car",
    "carma",
    "ctvar",
    "local_level",
    "local_linear_trend",
    "matern32",
    "matern52",
    "ou",
    "panel_ctvar",
    "sho",
]
SIMULATED = ["car", "ctvar", "matern32", "matern52", "ou", "panel_ctvar"]
REPO = Path(__file__).resolve().parent.parent


def _make_data():
    """models/_make_data.py, imported from its path (it is a script, not a module)."""
    spec = importlib.util.spec_from_file_location("_make_data", REPO / "models" / "_make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ou_dict(**changes):
    d = {
        "model": {"latent": ["x"], "manifest": ["y"]},
        "parameters": {
            "theta": "LogNormal(0, 1)",
            "sigma": "HalfNormal(1)",
            "noise": "HalfNormal(1)",
        },
        "dynamics": {"drift": [["-theta"]], "diffusion_sd": [["sigma"]]},
        "measurement": {"loadings": [[1]], "noise_sd": [["noise"]]},
    }
    for path, value in changes.items():
        section, _, key = path.partition(".")
        if key:
            d[section] = dict(d.get(section, {}))
            if value is None:
                d[section].pop(key, None)
            else:
                d[section][key] = value
        elif value is None:
            d.pop(section)
        else:
            d[section] = value
    return d


def _stationary_cov(a, q):
    return scipy.linalg.solve_continuous_lyapunov(a, -q)


def _kernel(mats, taus):
    """k(τ) = H e^{Aτ} P∞ Hᵀ of the built model (scipy, independent of kalmanad)."""
    a = np.asarray(mats["drift"])
    q = np.asarray(mats["diffusion"])
    h = np.asarray(mats["observation"])
    p = _stationary_cov(a, q)
    return np.array([(h @ scipy.linalg.expm(a * t) @ p @ h.T)[0, 0] for t in taus])


TAUS = np.array([0.0, 0.1, 0.7, 1.9, 4.0])


# ------------------------------------------------------------------------- zoo basics


def test_list_models_and_dir():
    assert list_models() == ZOO
    assert models_dir() == REPO / "models"
    spec = load_model(REPO / "models" / "ou.toml")
    assert spec.name == "ou"
    assert load_model(str(REPO / "models" / "ou.toml")).parameters == spec.parameters


def test_unknown_model_name_suggests():
    with pytest.raises(SpecError, match=r"unknown model 'oou' \(did you mean 'ou'\?\)"):
        load_model("oou")


@pytest.mark.parametrize("name", ZOO)
def test_zoo_spec_builds_at_prior_draws(name):
    spec = load_model(name)
    n, m = len(spec.latent), len(spec.manifest)
    assert (spec.n, spec.m) == (n, m)
    # 200 draws for the CAR/CARMA stability check, a few for the others.
    draws_n = 200 if name in ("car", "carma") else 4
    keys = jax.random.split(jax.random.PRNGKey(42), draws_n)
    draws = jax.jit(jax.vmap(spec.sample_prior))(keys)
    assert set(draws) == set(spec.parameters)
    model = jax.jit(jax.vmap(spec.build))(draws)  # traced: never raises on values
    assert isinstance(model, LinearSDE)
    assert model.drift.shape == (draws_n, n, n)
    assert model.diffusion.shape == (draws_n, n, n)
    assert model.observation.shape == (draws_n, m, n)
    assert model.observation_noise.shape == (draws_n, m, m)
    assert model.initial_state == spec.initial_state
    for leaf in jax.tree.leaves(model):
        assert np.all(np.isfinite(leaf))
    if name in ("car", "carma"):
        # Positive AR factors: every prior draw has a stable drift.
        worst = np.max(np.linalg.eigvals(np.asarray(model.drift)).real, axis=-1)
        assert np.all(worst < 0), worst.max()
    assert name in spec.describe()


@pytest.mark.parametrize("name", SIMULATED)
def test_zoo_matrices_match_generator(name):
    """The spec at the truth gives the generator's independent numpy matrices."""
    gen = _make_data()
    spec = load_model(name)
    truth = spec.data.truth
    mats = jax.jit(spec.matrices)({k: truth[k] for k in spec.parameters})
    ref = gen.MATRICES[name](truth)
    np.testing.assert_allclose(mats["drift"], ref["A"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mats["diffusion"], ref["Q"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mats["observation"], ref["H"], rtol=1e-12)
    np.testing.assert_allclose(mats["observation_noise"], ref["R"], rtol=1e-12)
    np.testing.assert_allclose(mats.get("drift_intercept", np.zeros(spec.n)), ref["c"], atol=1e-14)
    np.testing.assert_allclose(
        mats.get("observation_intercept", np.zeros(spec.m)), ref["d"], atol=1e-14
    )


def test_build_is_jit_grad_vmap_safe():
    spec = load_model("sho")
    p = {"omega": 0.7, "quality": 1.3, "sigma": 2.0, "mu": 1.0, "noise": 0.5}
    eager = spec.build(p)  # concrete: LinearSDE's value checks run and pass
    jitted = jax.jit(spec.build)(p)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)

    def f(params):
        m = spec.build(params)
        return jnp.sum(m.drift) + jnp.sum(m.diffusion) + jnp.sum(m.observation)

    g = jax.jit(jax.grad(f))(p)
    assert all(np.isfinite(v) for v in g.values())
    batched = spec.build({k: jnp.full((3, 2), v) for k, v in p.items()})
    assert batched.drift.shape == (3, 2, 2, 2)
    np.testing.assert_allclose(batched.diffusion[2, 1], eager.diffusion, rtol=1e-12)


def test_build_float32():
    spec = load_model("matern52")
    m = spec.build({k: np.float32(v) for k, v in spec.data.truth.items()})
    assert m.drift.dtype == jnp.float32
    assert m.diffusion.dtype == jnp.float32


def test_build_missing_parameter():
    with pytest.raises(ValueError, match=r"missing value.*theta"):
        load_model("ou").build({"mu": 0.0, "sigma": 1.0, "noise": 1.0})


# ----------------------------------------------------------- closed forms and tinygp


def _tinygp_k(kernel):
    return np.asarray(kernel(jnp.zeros(1), jnp.asarray(TAUS)))[0]


def test_ou_matches_tinygp_exp():
    quasisep = pytest.importorskip("tinygp.kernels.quasisep")
    spec = load_model("ou")
    mats = spec.matrices({"theta": 0.7, "mu": 1.0, "sigma": 1.7, "noise": 0.1})
    np.testing.assert_allclose(
        _kernel(mats, TAUS), _tinygp_k(quasisep.Exp(scale=1 / 0.7, sigma=1.7)), rtol=1e-10
    )
    # Closed form: stationary mean mu and variance sigma².
    a, c = np.asarray(mats["drift"]), np.asarray(mats["drift_intercept"])
    np.testing.assert_allclose(-np.linalg.solve(a, c), [1.0])


@pytest.mark.parametrize("quality", [0.3, 0.5, 2.0])
def test_sho_matches_tinygp_and_closed_form(quality):
    quasisep = pytest.importorskip("tinygp.kernels.quasisep")
    spec = load_model("sho")
    omega, sigma = 1.3, 1.7
    p = {"omega": omega, "quality": quality, "sigma": sigma, "mu": 0.0, "noise": 1.0}
    mats = spec.matrices(p)
    a = np.asarray(mats["drift"])
    np.testing.assert_allclose(a, [[0, 1], [-(omega**2), -omega / quality]], rtol=1e-12)
    np.testing.assert_allclose(
        _stationary_cov(a, np.asarray(mats["diffusion"])),
        sigma**2 * np.diag([1.0, omega**2]),
        rtol=1e-10,
        atol=1e-12,
    )
    ref = _tinygp_k(quasisep.SHO(omega=omega, quality=quality, sigma=sigma))
    np.testing.assert_allclose(_kernel(mats, TAUS), ref, rtol=1e-9, atol=1e-12)
    derived = spec.derived_values(p)
    np.testing.assert_allclose(derived["zeta"], 1 / (2 * quality))
    np.testing.assert_allclose(derived["period"], 2 * np.pi / omega)


def test_matern_match_tinygp_and_closed_form():
    quasisep = pytest.importorskip("tinygp.kernels.quasisep")
    ell, sigma = 1.3, 1.7
    p = {"lengthscale": ell, "sigma": sigma, "mu": 0.0, "noise": 1.0}
    m32 = load_model("matern32").matrices(p)
    m52 = load_model("matern52").matrices(p)
    np.testing.assert_allclose(
        _kernel(m32, TAUS), _tinygp_k(quasisep.Matern32(scale=ell, sigma=sigma)), rtol=1e-10
    )
    np.testing.assert_allclose(
        _kernel(m52, TAUS), _tinygp_k(quasisep.Matern52(scale=ell, sigma=sigma)), rtol=1e-10
    )
    # Closed forms of the kernels themselves.
    f3, f5 = np.sqrt(3) / ell, np.sqrt(5) / ell
    np.testing.assert_allclose(
        _kernel(m32, TAUS), sigma**2 * (1 + f3 * TAUS) * np.exp(-f3 * TAUS), rtol=1e-10
    )
    np.testing.assert_allclose(
        _kernel(m52, TAUS),
        sigma**2 * (1 + f5 * TAUS + f5**2 * TAUS**2 / 3) * np.exp(-f5 * TAUS),
        rtol=1e-10,
    )


def _kelly_acvf(alpha, beta, taus):
    """CARMA autocovariance of Kelly et al. (2014) eq. 4, unit noise rate, numpy only.

    alpha: AR coefficients α0..α_{p-1} (monic); beta: MA coefficients β0..βq.
    """
    roots = np.roots(np.concatenate([[1.0], np.asarray(alpha)[::-1]]))

    def b(s):
        return sum(bj * s**j for j, bj in enumerate(beta))

    out = np.zeros(len(taus), complex)
    for k, r in enumerate(roots):
        den = -2 * r.real
        for j, rl in enumerate(roots):
            if j != k:
                den = den * (rl - r) * (np.conj(rl) + r)
        out += b(r) * b(-r) * np.exp(r * taus) / den
    return out.real


def test_carma_matches_tinygp_and_kelly():
    quasisep = pytest.importorskip("tinygp.kernels.quasisep")
    spec = load_model("carma")
    a1, a2, tau, sigma = 0.7, 1.3, 0.4, 2.0
    mats = jax.jit(spec.matrices)(
        {"a1": a1, "a2": a2, "tau": tau, "sigma": sigma, "mu": 0.0, "noise": 1.0}
    )
    ours = _kernel(mats, TAUS)
    # stationary_sd normalises the amplitude: k(0) = sigma².
    np.testing.assert_allclose(ours[0], sigma**2, rtol=1e-10)
    ref = _tinygp_k(quasisep.CARMA.init(jnp.array([a2, a1]), jnp.array([1.0, tau])))
    np.testing.assert_allclose(ours, sigma**2 * ref / ref[0], rtol=1e-9)
    np.testing.assert_allclose(
        ours / ours[0],
        _kelly_acvf([a2, a1], [1.0, tau], TAUS) / _kelly_acvf([a2, a1], [1.0, tau], TAUS)[0],
        rtol=1e-9,
    )

    # Without the normalisation (unit noise rate) the model is exactly tinygp's kernel.
    raw = ModelSpec(
        latent=["z", "dz"],
        manifest=["y"],
        parameters={"a1": "LogNormal(0, 1)", "a2": "LogNormal(0, 1)", "tau": "HalfNormal(1)"},
        dynamics={
            "drift": {"builder": "companion", "factors": [["a1", "a2"]]},
            "diffusion": {"diagonal": [0, 1]},
        },
        measurement={"loadings": {"builder": "ma_loadings", "factors": ["tau"]}, "noise": 0},
    )
    np.testing.assert_allclose(
        _kernel(raw.matrices({"a1": a1, "a2": a2, "tau": tau}), TAUS), ref, rtol=1e-9
    )


def test_car3_matches_kelly_and_tinygp():
    quasisep = pytest.importorskip("tinygp.kernels.quasisep")
    spec = load_model("car")
    matrices = jax.jit(spec.matrices)

    def check(a1, a2, r, use_tinygp):
        mats = matrices({"a1": a1, "a2": a2, "r": r, "sigma": 1.5, "mu": 0.0, "noise": 1.0})
        alpha = [a2 * r, a2 + a1 * r, a1 + r]  # (s² + a1 s + a2)(s + r)
        np.testing.assert_allclose(np.asarray(mats["drift"])[-1], -np.array(alpha), rtol=1e-12)
        ours = _kernel(mats, TAUS)
        kelly = _kelly_acvf(alpha, [1.0], TAUS)
        np.testing.assert_allclose(ours, 1.5**2 * kelly / kelly[0], rtol=1e-9)
        if use_tinygp:
            ref = _tinygp_k(quasisep.CARMA.init(jnp.array(alpha), jnp.array([1.0])))
            np.testing.assert_allclose(ours, 1.5**2 * ref / ref[0], rtol=1e-9)

    # Three real roots: tinygp's CARMA is usable; with one real root and a complex pair
    # (the bundled truth) tinygp 0.3 returns NaN, so Kelly's formula is the reference.
    check(3.0, 1.0, 0.5, use_tinygp=True)
    check(0.3, 1.0, 0.5, use_tinygp=False)


def _carma4():
    return ModelSpec(
        latent=["z0", "z1", "z2", "z3"],
        manifest=["y"],
        parameters={
            "a": "LogNormal(0, 1)",
            "b": "LogNormal(0, 1)",
            "c": "LogNormal(0, 1)",
            "d": "LogNormal(0, 1)",
            "tau": "HalfNormal(1)",
            "sigma": "HalfNormal(1)",
        },
        dynamics={
            "drift": {"builder": "companion", "factors": [["a", "b"], ["c", "d"]]},
            "diffusion": {"builder": "stationary_sd", "sd": "sigma"},
        },
        measurement={"loadings": {"builder": "ma_loadings", "factors": ["tau"]}, "noise": 0},
    )


@pytest.mark.parametrize(
    "name, point",
    [
        # (s + 1)²: a real double root, where root-based parameterisations break.
        ("carma", {"a1": 2.0, "a2": 1.0, "tau": 0.3, "sigma": 1.5}),
        # (s² + s + 2)²: a repeated complex pair.
        ("carma4", {"a": 1.0, "b": 2.0, "c": 1.0, "d": 2.0, "tau": 0.3, "sigma": 1.5}),
        # (s² + 2s + 1)²: a quadruple real root.
        ("carma4", {"a": 2.0, "b": 1.0, "c": 2.0, "d": 1.0, "tau": 0.0, "sigma": 1.0}),
    ],
)
def test_carma_gradients_finite_at_repeated_roots(name, point):
    spec = load_model(name) if name != "carma4" else _carma4()
    fixed = {"mu": 0.0, "noise": 1.0} if name == "carma" else {}

    @jax.jit
    def matrices(*xs):
        params = dict(zip(point, xs, strict=True)) | fixed
        m = spec.matrices(params)
        return m["drift"], m["diffusion"], m["observation"]

    xs = tuple(jnp.asarray(v) for v in point.values())
    jac = jax.jacrev(
        lambda *a: jnp.concatenate([x.ravel() for x in matrices(*a)]), argnums=tuple(range(len(xs)))
    )(*xs)
    for j in jac:
        assert np.all(np.isfinite(j))
    if name == "carma4" and point["tau"] > 0:
        # The gradient is not only finite but right (finite differences agree).
        check_grads(matrices, xs, order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
    # The normalisation holds at the repeated root too.
    mats = jax.jit(spec.matrices)(dict(point) | fixed)
    np.testing.assert_allclose(_kernel(mats, [0.0])[0], point["sigma"] ** 2, rtol=1e-8)


# -------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    "text, env, expected",
    [
        ("1 + 2 * 3", {}, 7.0),
        ("(1 + 2) * 3", {}, 9.0),
        ("2^3^2", {}, 512.0),  # right-associative, as in maths
        ("-2^2", {}, -4.0),  # unary minus binds weaker than the power
        ("(-2)^2", {}, 4.0),
        ("2**3", {}, 8.0),
        ("2*x^2", {"x": 3.0}, 18.0),
        ("a + b^2", {"a": 1.0, "b": 3.0}, 10.0),
        ("a - b - c", {"a": 1.0, "b": 2.0, "c": 3.0}, -4.0),
        ("a / b / c", {"a": 12.0, "b": 2.0, "c": 3.0}, 2.0),
        ("-x", {"x": 2.5}, -2.5),
        ("+x", {"x": 2.5}, 2.5),
        ("-exp(log_k)", {"log_k": math.log(3.0)}, -3.0),
        ("2*zeta*omega", {"zeta": 0.25, "omega": 4.0}, 2.0),
        ("sigma^2", {"sigma": -3.0}, 9.0),
        ("sqrt(16) + abs(-2)", {}, 6.0),
        ("softplus(0)", {}, math.log(2.0)),
        ("sigmoid(x)", {"x": 0.0}, 0.5),
        ("logit(0.5) + tanh(0)", {}, 0.0),
        ("min(a, b) + max(a, b)", {"a": 1.0, "b": 5.0}, 6.0),
        ("log1p(x) - log(1 + x)", {"x": 0.5}, 0.0),
        ("2 * pi", {}, 2 * math.pi),
        ("1e-3 * x", {"x": 2.0}, 0.002),
        (3, {}, 3.0),
        (-0.5, {}, -0.5),
    ],
)
def test_expression_values(text, env, expected):
    e = parse_expression(text, known=set(env))
    assert e.names == frozenset(env) or not env
    np.testing.assert_allclose(
        float(e({k: jnp.asarray(v) for k, v in env.items()})), expected, rtol=1e-12, atol=1e-15
    )


def test_expression_constant_folding_and_names():
    e = parse_expression("sqrt(3) / 2")
    assert e.constant == pytest.approx(math.sqrt(3) / 2, rel=1e-15)
    assert e.names == frozenset()
    e = parse_expression("2 * zeta * omega + zeta")
    assert e.names == {"zeta", "omega"} and e.constant is None


def test_expression_gradients():
    e = parse_expression("x^3 - 2*exp(x)")
    g = jax.grad(lambda x: e({"x": x}))(2.0)
    np.testing.assert_allclose(g, 12.0 - 2 * math.exp(2.0), rtol=1e-12)
    # x^2 is an integer power: defined, with a finite gradient, for negative x.
    sq = parse_expression("sigma^2")
    np.testing.assert_allclose(jax.grad(lambda s: sq({"sigma": s}))(-2.0), -4.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("thta * 2", r"unknown parameter 'thta' \(did you mean 'theta'\?\)"),
        ("theta.real", "attribute access not allowed"),
        ("__import__('os').system('true')", "only calls of the functions"),
        ("__import__('os')", "unknown function '__import__'"),
        ("eval('1')", "unknown function 'eval'"),
        ("exp(theta, 2)", r"exp\(\) takes 1 argument, got 2"),
        ("exp(x=theta)", "takes no keyword arguments"),
        ("theta(2)", "'theta' is a parameter, not a function"),
        ("theta[0]", "indexing not allowed"),
        ("theta < 1", "comparisons not allowed"),
        ("theta if theta else 1", "conditional expressions not allowed"),
        ("lambda: 1", "lambda not allowed"),
        ("theta % 2", "operator '%' is not allowed"),
        ("theta // 2", "operator '//' is not allowed"),
        ("exp", "'exp' is a function"),
        ("'abc'", "'abc' is not a number"),
        ("2 +", "cannot parse expression '2 \\+'"),
        ("", "empty expression"),
        ("1 / 0", "evaluates to inf"),
        ("sqrt(-1)", "evaluates to nan"),
        ("[theta]", "lists not allowed"),
        ("expp(theta)", r"unknown function 'expp' \(did you mean 'exp'\?\)"),
    ],
)
def test_expression_errors(text, message):
    with pytest.raises(SpecError, match=message) as info:
        parse_expression(text, known={"theta"}, source="m.toml", where="[dynamics] drift[1][0]")
    assert str(info.value).startswith("m.toml: [dynamics] drift[1][0]: ")
    assert info.value.where == "[dynamics] drift[1][0]"


def test_expression_rejects_non_numbers():
    for bad in (True, None, [1], {"a": 1}, float("inf")):
        with pytest.raises(SpecError):
            parse_expression(bad)


_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_FUNCS = {
    "exp": math.exp,
    "tanh": math.tanh,
    "softplus": lambda x: math.log1p(math.exp(x)),
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)),
    "square": lambda x: x * x,
}


def _tree():
    leaves = st.one_of(
        st.floats(-3, 3, allow_nan=False).map(lambda v: (repr(v), lambda env, v=v: v)),
        st.sampled_from(["a", "b", "c"]).map(lambda n: (n, lambda env, n=n: env[n])),
    )

    def extend(children):
        binary = st.tuples(st.sampled_from(sorted(_OPS)), children, children).map(
            lambda t: (
                f"({t[1][0]} {t[0]} {t[2][0]})",
                lambda env, t=t: _OPS[t[0]](t[1][1](env), t[2][1](env)),
            )
        )
        power = st.tuples(children, st.sampled_from([2, 3])).map(
            lambda t: (f"({t[0][0]})^{t[1]}", lambda env, t=t: t[0][1](env) ** t[1])
        )
        neg = children.map(lambda c: (f"-({c[0]})", lambda env, c=c: -c[1](env)))
        func = st.tuples(st.sampled_from(sorted(_FUNCS)), children).map(
            lambda t: (
                f"{t[0]}(tanh({t[1][0]}))",
                lambda env, t=t: _FUNCS[t[0]](math.tanh(t[1][1](env))),
            )
        )
        return st.one_of(binary, power, neg, func)

    return st.recursive(leaves, extend, max_leaves=8)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(tree=_tree(), a=st.floats(-2, 2), b=st.floats(-2, 2), c=st.floats(-2, 2))
def test_expression_matches_reference_evaluation(tree, a, b, c):
    text, ref = tree
    env = {"a": a, "b": b, "c": c}
    e = parse_expression(text, known=env)
    got = float(e({k: jnp.asarray(v) for k, v in env.items()}))
    np.testing.assert_allclose(got, ref(env), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------- priors


def test_priors():
    for text, cls in [
        ("HalfNormal(1)", numpyro.distributions.HalfNormal),
        ("LogNormal(0, 1)", numpyro.distributions.LogNormal),
        ("Normal(0, 10)", numpyro.distributions.Normal),
        ("LogNormal(log(10), 0.5)", numpyro.distributions.LogNormal),
    ]:
        assert isinstance(parse_prior(text).make(), cls)
    tn = parse_prior("TruncatedNormal(0, 1, low=0)").make()
    assert float(tn.support.lower_bound) == 0.0
    np.testing.assert_allclose(parse_prior("LogNormal(log(10), 0.5)").make().loc, math.log(10))
    spec = load_model("ou")
    assert spec.prior_texts["theta"] == "LogNormal(0, 1)"
    assert isinstance(spec.priors["sigma"], numpyro.distributions.HalfNormal)


@pytest.mark.parametrize(
    "text, message",
    [
        ("HalfNormall(1)", r"unknown prior 'HalfNormall' \(did you mean 'HalfNormal'\?\)"),
        ("HalfNormal(-1)", "invalid prior 'HalfNormal\\(-1\\)'"),
        ("Normal(0, sigma)", "unknown parameter 'sigma'"),
        ("Normal", "must look like Name"),
        ("Normal(0, 1", "cannot parse prior"),
        ("Normal(0, 1, wrong=2)", "invalid prior"),
        (3, "must be a string"),
        (
            "HalfNormal(-1)",
            r"the scale of HalfNormal must be positive, got -1 \(did you mean 1\?\)",
        ),
        ("Gamma(0, 1)", "the concentration of Gamma must be positive, got 0"),
        ("StudentT(-3, 0, 1)", "the df of StudentT must be positive"),
        (
            "Uniform(1, -1)",
            r"lower bound 1 must be below the upper bound -1; write Uniform\(-1, 1\)",
        ),
        ("Uniform(2, 2)", "lower bound 2 must be below the upper bound 2"),
        ("TruncatedNormal(0, 1, low=1, high=-1)", "lower bound 1 must be below the upper bound -1"),
        ("Normal(0, 1, 2)", r"takes at most 2 positional arguments: Normal\(loc, scale\)"),
        ("Normal(0, 1, scal=2)", r"no argument 'scal' \(did you mean 'scale'\?\)"),
        ("Normal(0, 1, scale=2)", "'scale' is given twice"),
        ("Gamma()", r"Gamma needs concentration: Gamma\(concentration, rate\)"),
        ("Normal(0, 1, validate_args=1)", "no argument 'validate_args'"),
    ],
)
def test_prior_errors(text, message):
    with pytest.raises(SpecError, match=message) as info:
        parse_prior(text, source="m.toml", where="[parameters] x")
    assert str(info.value).startswith("m.toml: [parameters] x: ")
    assert "distribution got invalid" not in str(info.value)


# --------------------------------------------------------------------- matrix forms


def test_matrix_forms_and_shorthands():
    spec = ModelSpec.from_dict(
        {
            "model": {"latent": ["a", "b", "c"], "manifest": ["y1", "y2"], "inputs": ["u"]},
            "parameters": {
                "k": "LogNormal(0, 1)",
                "s": "HalfNormal(1)",
                "r": "Normal(0, 1)",
                "e": "HalfNormal(1)",
                "g": "Normal(0, 1)",
                "fixed": 2.5,
            },
            "derived": {"k2": "two_k / 2", "two_k": "2 * k"},  # order does not matter
            "dynamics": {
                "drift": {"diagonal": ["-k", "-k2", "-fixed"]},
                "intercept": 0,
                "diffusion_sd": {"lower": [["s"], ["r", "s"], [0, 0, 1]]},
                "input_effect": [["g"], [0], [1]],
                "impulse_effect": [[0], ["g"], [0]],
            },
            "measurement": {
                "loadings": [[1, 0, 0], [0, "g", 1]],
                "noise": {"symmetric": [["e^2"], ["0.5 * e^2", "2 * e^2"]]},
                "input_effect": [["g"], [0]],
            },
            "initial": {"mean": [1, "r", 0], "sd": {"diagonal": "s"}},
        }
    )
    assert spec.parameters == ("k", "s", "r", "e", "g")
    assert spec.constants == {"fixed": 2.5}
    p = {"k": 0.5, "s": 2.0, "r": -0.3, "e": 0.1, "g": 0.7}
    m = spec.matrices(p)
    np.testing.assert_allclose(m["drift"], np.diag([-0.5, -0.5, -2.5]))
    np.testing.assert_allclose(m["drift_intercept"], np.zeros(3))
    g = np.array([[2.0, 0, 0], [-0.3, 2.0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(m["diffusion"], g @ g.T)
    np.testing.assert_allclose(m["observation"], [[1, 0, 0], [0, 0.7, 1]])
    np.testing.assert_allclose(m["observation_noise"], [[0.01, 0.005], [0.005, 0.02]])
    np.testing.assert_allclose(m["input_effect"], [[0.7], [0], [1]])
    np.testing.assert_allclose(m["impulse_effect"], [[0], [0.7], [0]])
    np.testing.assert_allclose(m["observation_input_effect"], [[0.7], [0]])
    np.testing.assert_allclose(m["initial_mean"], [1, -0.3, 0])
    np.testing.assert_allclose(m["initial_cov"], 4.0 * np.eye(3))
    model = spec.build(p)
    assert model.initial_state == "known"
    assert model.n_inputs == 1
    np.testing.assert_allclose(spec.derived_values(p)["k2"], 0.5)


def test_inputs_default_to_zero_effects_and_rectangular_diffusion_factor():
    spec = ModelSpec(
        latent=["x", "v"],
        manifest=["y"],
        inputs=["u", "w"],
        parameters={"k": "LogNormal(0, 1)", "s": "HalfNormal(1)"},
        dynamics={"drift": [[0, 1], ["-k", "-k"]], "diffusion_sd": [[0], ["s"]]},
        measurement={"loadings": [[1, 0]], "noise_sd": "s"},
        initial={"state": "diffuse", "diffuse_scale": 100.0},
    )
    m = spec.matrices({"k": 1.0, "s": 0.5})
    np.testing.assert_allclose(m["diffusion"], [[0, 0], [0, 0.25]])
    assert m["input_effect"].shape == (2, 2)
    assert m["observation_input_effect"].shape == (1, 2)
    model = spec.build({"k": 1.0, "s": 0.5})
    assert model.initial_state == "diffuse" and model.diffuse_scale == 100.0
    assert model.n_inputs == 2


def test_ma_loadings_coefficients_and_quadratic_factors():
    base = {
        "model": {"latent": ["z0", "z1", "z2", "z3"], "manifest": ["y"]},
        "parameters": {
            "a": "LogNormal(0,1)",
            "b": "LogNormal(0,1)",
            "c": "HalfNormal(1)",
            "s": "HalfNormal(1)",
        },
        "dynamics": {
            "drift": {"builder": "companion", "coefficients": ["a", "b", 1, 2]},
            "diffusion": {"diagonal": [0, 0, 0, "s"]},
        },
        "measurement": {"noise": 0},
    }
    quad = dict(
        base,
        measurement={
            "noise": 0,
            "loadings": {"builder": "ma_loadings", "factors": [["a", "b"], "c"], "scale": "s"},
        },
    )
    coef = dict(
        base,
        measurement={
            "noise": 0,
            "loadings": {"builder": "ma_loadings", "coefficients": ["a", "b", "c"]},
        },
    )
    p = {"a": 0.5, "b": 2.0, "c": 3.0, "s": 2.0}
    # (1 + 0.5 s + 2 s²)(1 + 3 s) = 1 + 3.5 s + 3.5 s² + 6 s³
    np.testing.assert_allclose(
        ModelSpec.from_dict(quad).matrices(p)["observation"], [[2.0, 7.0, 7.0, 12.0]]
    )
    np.testing.assert_allclose(
        ModelSpec.from_dict(coef).matrices(p)["observation"], [[1.0, 0.5, 2.0, 3.0]]
    )
    np.testing.assert_allclose(
        ModelSpec.from_dict(quad).matrices(p)["drift"][-1], [-0.5, -2.0, -1.0, -2.0]
    )


# ---------------------------------------------------------------------- spec errors


@pytest.mark.parametrize(
    "changes, where, message",
    [
        (
            {"dynamics.drift": [["-thta"]]},
            r"\[dynamics\] drift\[0\]\[0\]",
            r"unknown parameter 'thta' \(did you mean 'theta'\?\)",
        ),
        (
            {"dynamics.drift": [["-x"]]},
            r"\[dynamics\] drift\[0\]\[0\]",
            r"unknown parameter 'x' \('x' is a latent variable",
        ),
        (
            {"dynamics.drift": [["-theta"], [0]]},
            r"\[dynamics\] drift",
            r"expected 1 rows \(latent: x\), got 2",
        ),
        (
            {"measurement.loadings": [[1, 0]]},
            r"\[measurement\] loadings\[0\]",
            r"expected 1 columns \(latent: x\), got 2",
        ),
        ({"dynamics.drift": None}, r"\[dynamics\]", "missing 'drift'"),
        ({"measurement.noise_sd": None}, r"\[measurement\]", "missing 'noise' \\(or 'noise_sd'\\)"),
        (
            {"dynamics.diffusion": [[1]]},
            r"\[dynamics\]",
            "give 'diffusion' or 'diffusion_sd', not both",
        ),
        (
            {"dynamics.drfit": [[1]]},
            r"\[dynamics\]",
            r"unknown key 'drfit' \(did you mean 'drift'\?\)",
        ),
        (
            {"measurement.observation": [[1]]},
            r"\[measurement\]",
            r"unknown key 'observation' \(did you mean 'loadings'\?\)",
        ),
        ({"paramters": {}}, None, r"unknown section \[paramters\] \(did you mean 'parameters'\?\)"),
        ({"parameters.theta": "Normall(0, 1)"}, r"\[parameters\] theta", "unknown prior 'Normall'"),
        ({"parameters.unused": "Normal(0, 1)"}, r"\[parameters\] unused", "declared but not used"),
        ({"parameters.exp": "Normal(0, 1)"}, r"\[parameters\] exp", "built-in function"),
        ({"parameters.2x": "Normal(0, 1)"}, r"\[parameters\] 2x", "not a valid name"),
        (
            {"parameters.theta": {"prior": "LogNormal(0,1)", "value": 1}},
            r"\[parameters\] theta",
            "exactly one of 'prior' or 'value'",
        ),
        ({"model.latent": ["x", "x"]}, r"\[model\] latent", "duplicate name"),
        ({"model.manifest": []}, r"\[model\] manifest", "at least one"),
        ({"derived": {"a": "b + theta", "b": "a * 2"}}, r"\[derived\] [ab]", "circular definition"),
        ({"dynamics.drift": [["-theta", 0]]}, r"\[dynamics\] drift\[0\]", "expected 1 columns"),
        (
            {"dynamics.drift": {"diagonal": ["-theta"], "lower": [[1]]}},
            r"\[dynamics\] drift",
            "exactly one of",
        ),
        (
            {"dynamics.drift": {"diagnal": ["-theta"]}},
            r"\[dynamics\] drift",
            r"unknown matrix form 'diagnal' \(did you mean 'diagonal'\?\)",
        ),
        (
            {"dynamics.drift": {"builder": "ma_loadings"}},
            r"\[dynamics\] drift",
            "builder 'ma_loadings' does not apply here",
        ),
        (
            {"dynamics.drift": {"builder": "companon"}},
            r"\[dynamics\] drift",
            r"unknown builder 'companon' \(did you mean 'companion'\?\)",
        ),
        ({"dynamics.input_effect": [[1]]}, r"\[dynamics\] input_effect", "declares no inputs"),
        ({"initial.state": "stationry"}, r"\[initial\] state", "must be 'stationary'"),
        (
            {"initial.sd": [["theta"]], "initial.state": "stationary"},
            r"\[initial\]",
            "takes no 'cov'/'sd'",
        ),
        ({"initial.state": "known"}, r"\[initial\]", "needs 'cov' or 'sd'"),
        (
            {"random_effects": {"parameters": ["thta"]}},
            r"\[random_effects\] parameters",
            r"unknown parameter 'thta' \(did you mean 'theta'\?\)",
        ),
        (
            {"random_effects": {"parameters": ["theta"], "correlation_prior": "LKJ(-1)"}},
            r"\[random_effects\] correlation_prior",
            "eta > 0",
        ),
        (
            {"random_effects": {"parameters": ["theta"], "sd_prior": "Normal(0, 1)"}},
            r"\[random_effects\] sd_prior",
            "must be positive",
        ),
        (
            {"random_effects": {"parameters": ["theta", "theta"]}},
            r"\[random_effects\] parameters",
            "listed twice",
        ),
        (
            {
                "parameters.fixed": 1.0,
                "dynamics.drift": [["-theta*fixed"]],
                "covariates": {"effects": {"fixed": ["age"]}},
            },
            r"\[covariates\] effects",
            "'fixed' is fixed",
        ),
        (
            {"parameters.theta": "Uniform(1, -1)"},
            r"\[parameters\] theta",
            r"lower bound 1 must be below the upper bound -1; write Uniform\(-1, 1\)",
        ),
        (
            {"parameters.sigma": "HalfNormal(-1)"},
            r"\[parameters\] sigma",
            "the scale of HalfNormal must be positive",
        ),
        (
            {"dynamics.drift": [[0.5]], "parameters.theta": None},
            r"\[dynamics\] drift",
            r"constant and not stable \(eigenvalue 0.5 .*state = 'diffuse'",
        ),
        (
            {
                "dynamics.drift": [[0, 1], [-1, 0]],
                "parameters.theta": None,
                "model.latent": ["x", "v"],
                "dynamics.diffusion_sd": {"diagonal": [0, "sigma"]},
                "measurement.loadings": [[1, 0]],
            },
            r"\[dynamics\] drift",
            "constant and not stable",
        ),
        (
            {
                "parameters.theta": 2.0,
                "derived": {"a": "3 - theta"},
                "dynamics.drift": [["a"]],
            },
            r"\[dynamics\] drift",
            "constant and not stable",
        ),
        (
            {"parameters.sigma": "Normal(0, 1)"},
            r"\[dynamics\] diffusion_sd\[0\]\[0\]",
            r"standard deviation 'sigma' can be negative: sigma has the prior 'Normal\(0, 1\)'",
        ),
        (
            {"parameters.noise": "Uniform(-1, 1)"},
            r"\[measurement\] noise_sd\[0\]\[0\]",
            "give noise a positive prior",
        ),
        (
            {
                "dynamics.diffusion_sd": None,
                "dynamics.diffusion": [["2 * sigma"]],
                "parameters.sigma": "Normal(0, 1)",
            },
            r"\[dynamics\] diffusion\[0\]\[0\]",
            r"variance '2 \* sigma' can be negative.*or write sigma\^2",
        ),
        (
            {
                "derived": {"var": "sigma * 3"},
                "dynamics.diffusion_sd": None,
                "dynamics.diffusion": {"diagonal": ["var"]},
                "parameters.sigma": "Cauchy(0, 1)",
            },
            r"\[dynamics\] diffusion\.diagonal\[0\]",
            "variance 'var' can be negative: sigma has the prior 'Cauchy",
        ),
        (
            {"measurement.noise_sd": None, "measurement.noise": -1},
            r"\[measurement\] noise",
            "a variance cannot be negative, got -1",
        ),
        (
            {"initial.sd": [["s0"]], "parameters.s0": "Laplace(0, 1)"},
            r"\[initial\] sd\[0\]\[0\]",
            "standard deviation 's0' can be negative",
        ),
        (
            {"data": {"file": "x.csv", "columns": {"yy": "Y"}}},
            r"\[data\] columns",
            r"'yy' is not a manifest, input or covariate \(did you mean 'y'\?\)",
        ),
    ],
)
def test_spec_errors(changes, where, message):
    with pytest.raises(SpecError, match=message) as info:
        ModelSpec.from_dict(_ou_dict(**changes), source="mine.toml")
    text = str(info.value)
    assert text.startswith("mine.toml: ")
    if where is not None:
        assert info.value.where is not None
        assert __import__("re").match(where, info.value.where), info.value.where


def test_companion_needs_positive_factors():
    d = {
        "model": {"latent": ["x", "v"], "manifest": ["y"]},
        "parameters": {"a": "Normal(0, 1)", "b": "LogNormal(0, 1)", "s": "HalfNormal(1)"},
        "dynamics": {
            "drift": {"builder": "companion", "factors": [["a", "b"]]},
            "diffusion": {"diagonal": [0, "s"]},
        },
        "measurement": {"loadings": [[1, 0]], "noise": 0},
    }
    with pytest.raises(
        SpecError, match=r"drift\.factors\[0\]\[0\]: AR factor coefficient 'a' must be positive"
    ):
        ModelSpec.from_dict(d)
    # Provably positive expressions and the unconstrained `coefficients` form are fine.
    for drift in (
        {"builder": "companion", "factors": [["exp(a)", "b"]]},
        {"builder": "companion", "factors": [["softplus(a) + b^2", "b * 2"]]},
        {"builder": "companion", "factors": ["b", "sqrt(a^2) + 1"]},
        {"builder": "companion", "factors": [["b / (1 + a^2)", "max(a, b) * b"]]},
        {"builder": "companion", "coefficients": ["a", "b"]},
    ):
        ModelSpec.from_dict({**d, "dynamics": {**d["dynamics"], "drift": drift}})
    for drift, cell in (
        ({"builder": "companion", "factors": [["b - a", "b"]]}, "b - a"),
        ({"builder": "companion", "factors": [["b", "a / b"]]}, "a / b"),
        ({"builder": "companion", "factors": [["b", "-b"]]}, "-b"),
        ({"builder": "companion", "factors": [["b", 0]]}, "0"),
    ):
        with pytest.raises(SpecError, match=f"coefficient '{cell}' must be positive"):
            ModelSpec.from_dict({**d, "dynamics": {**d["dynamics"], "drift": drift}})
    bad = {"builder": "companion", "factors": [["a", "b"], "b"]}
    with pytest.raises(SpecError, match="total degree 3 but there are 2 latent"):
        ModelSpec.from_dict({**d, "dynamics": {**d["dynamics"], "drift": bad}})


def test_spec_file_errors_name_the_file(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text(
        '[model]\nlatent = ["x"]\nmanifest = ["y"]\n\n[parameters]\ntheta = "LogNormal(0, 1)"\n'
        'noise = "HalfNormal(1)"\n\n[dynamics]\ndrift = [["-thta"]]\ndiffusion = [[1]]\n\n'
        '[measurement]\nloadings = [[1]]\nnoise_sd = [["noise"]]\n'
    )
    with pytest.raises(SpecError) as info:
        load_model(path)
    assert str(info.value) == (
        f"{path}: [dynamics] drift[0][0]: unknown parameter 'thta' (did you mean 'theta'?)"
    )
    path.write_text("[model\nlatent = 1")
    with pytest.raises(SpecError, match="invalid TOML"):
        load_model(path)
    with pytest.raises(SpecError, match="file not found"):
        load_model(tmp_path / "missing.toml")


# ------------------------------------------------------------------- hierarchical


@pytest.mark.slow
def test_hierarchical_prior_draws_respect_support():
    spec = load_model("panel_ctvar")
    assert spec.is_hierarchical
    assert spec.varying_parameters == ("auto1", "auto2", "mu1", "mu2")
    age = np.linspace(-1, 1, 7)
    p = jax.jit(lambda k: spec.sample_prior(k, n_subjects=7, covariates={"age": age}))(
        jax.random.PRNGKey(3)
    )
    for x in spec.parameters:
        assert np.shape(p[x]) == ((7,) if x in spec.varying_parameters else ())
    assert np.all(np.asarray(p["auto1"]) > 0) and np.all(np.asarray(p["auto2"]) > 0)
    model = jax.jit(spec.build)(p)
    assert model.drift.shape == (7, 2, 2)
    np.testing.assert_allclose(model.drift[:, 0, 0], -np.asarray(p["auto1"]))
    np.testing.assert_allclose(model.drift[:, 0, 1], np.broadcast_to(p["cross12"], 7))
    with pytest.raises(ValueError, match="covariates"):
        spec.sample_prior(jax.random.PRNGKey(3), n_subjects=7)
    population = jax.jit(spec.sample_prior)(jax.random.PRNGKey(3))
    assert all(np.shape(v) == () for v in population.values())


def test_hierarchical_non_centred_formula():
    """Subject values = T(T⁻¹(pop) + covariate effect + diag(sd) L z) at fixed sites."""
    spec = load_model("panel_ctvar")
    s_n = 5
    age = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    z = np.random.default_rng(0).standard_normal((s_n, 4))
    corr = np.array([[1, 0.3, 0, 0], [0.3, 1, 0, 0], [0, 0, 1, -0.4], [0, 0, -0.4, 1]])
    chol = np.linalg.cholesky(corr)
    sd = np.array([0.2, 0.3, 0.4, 0.5])
    fixed = {
        "re_z": z,
        "re_corr_cholesky": chol,
        "auto1": 0.8,
        "auto2": 0.5,
        "mu1": 1.0,
        "mu2": -0.5,
        "age_on_auto1": 0.2,
        "age_on_mu1": 0.7,
    }
    fixed |= {f"{x}_sd": v for x, v in zip(spec.random_effects.parameters, sd, strict=True)}
    model = handlers.substitute(handlers.seed(spec._sample_parameters, 0), data=fixed)
    tr = handlers.trace(model).get_trace(s_n, {"age": jnp.asarray(age)})
    delta = z @ (sd[:, None] * chol).T
    np.testing.assert_allclose(tr["auto1_subject"]["value"], 0.8 * np.exp(0.2 * age + delta[:, 0]))
    np.testing.assert_allclose(tr["auto2_subject"]["value"], 0.5 * np.exp(delta[:, 1]))
    np.testing.assert_allclose(tr["mu1_subject"]["value"], 1.0 + 0.7 * age + delta[:, 2])
    np.testing.assert_allclose(tr["mu2_subject"]["value"], -0.5 + delta[:, 3])
    np.testing.assert_allclose(tr["re_corr"]["value"], corr, atol=1e-12)
    assert tr["re_z"]["fn"].batch_shape == (s_n,)


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("name", ZOO)
def test_default_data_loads(name):
    spec = load_model(name)
    d = spec.default_data()
    assert d.path.is_file() and d.path.parent == models_dir()
    n_rows = d.times.shape[0]
    assert 100 <= n_rows <= 700
    assert d.y.shape == (n_rows, spec.m)
    assert np.all(np.isfinite(d.times))
    if spec.is_hierarchical:
        panel = d.to_panel()
        assert panel.y.shape[0] == 30 and np.all(panel.counts == 20)
        assert np.all(np.diff(panel.times, axis=1) > 0)
        assert set(d.covariates) == {"age"}
    else:
        assert d.subject is None
        assert np.all(np.diff(d.times) > 0)
    finite = np.isfinite(d.y)
    assert finite.mean() > 0.9 and np.any(finite, axis=1).all()


def test_real_data_match_statsmodels():
    sm = pytest.importorskip("statsmodels.datasets")
    nile = load_model("local_level").default_data()
    ref = sm.nile.load_pandas().data
    np.testing.assert_array_equal(nile.times, ref["year"].to_numpy())
    np.testing.assert_array_equal(nile.y[:, 0], ref["volume"].to_numpy())
    sun = load_model("sho").default_data()
    ref = sm.sunspots.load_pandas().data
    np.testing.assert_array_equal(sun.times, ref["YEAR"].to_numpy())
    np.testing.assert_allclose(sun.y[:, 0], ref["SUNACTIVITY"].to_numpy(), rtol=1e-12)


def test_simulated_data_reproduce_from_truth_and_seed():
    gen = _make_data()
    spec = load_model("ou")
    times, y = gen.simulate_series("ou", spec.data.truth, spec.data.seed)
    d = spec.default_data()
    np.testing.assert_array_equal(d.times, times)
    np.testing.assert_allclose(d.y, y, atol=2e-4)
    panel = load_model("panel_ctvar")
    rows = np.array(gen.simulate_panel(panel.data.truth, panel.data.seed))
    d = panel.default_data()
    np.testing.assert_array_equal(d.times, rows[:, 1])
    np.testing.assert_allclose(d.y, rows[:, 2:4], atol=2e-4)
    np.testing.assert_array_equal(d.covariates["age"], rows[:, 4])


def _write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("time,z\n0,1\n", r"missing column\(s\) 'y' \(the file has: time, z\)"),
        ("time,y\n0,1\n1,abc\n", r"line 3, column 'y': 'abc' is not a number"),
        (
            "time,y\n0,1\n2,1\n1,2\n",
            r"line 4: time 1 is before 2 \(line 3\); times must be in increasing order "
            r"\(ties allowed\): sort the rows by time",
        ),
        (
            "time,y\n0,1\n0.30000000000000004,1\n0.3,2\n",
            r"line 4: time 0.3 is before 0.30000000000000004 \(line 3\)",
        ),
        ("time,y\n0,1\n,2\n", r"line 3, column 'time': missing value"),
        ("time,y\n0,1\nNaN,2\n", r"line 3, column 'time': missing value"),
        ("time,y\n0,1\ninf,2\n", r"line 3, column 'time': 'inf' is not finite"),
        ("time,y\n0,1\n1,2,3\n", "line 3 has 3 fields but the header has 2"),
        ("time,y\n", "no data rows"),
        ("", "the file is empty"),
    ],
)
def test_read_data_errors(tmp_path, text, message):
    with pytest.raises(DataError, match=message) as info:
        load_model("ou").read_data(_write(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "d.csv"))


def test_read_data_missing_values_and_subjects(tmp_path):
    spec = load_model("ou")
    d = spec.read_data(_write(tmp_path, "subject,time,y\nA,0,1\nA,1,NA\nB,0.5,\nB,0.7,2\n"))
    np.testing.assert_array_equal(d.subject, ["A", "A", "B", "B"])
    assert np.isnan(d.y[1, 0]) and np.isnan(d.y[2, 0])
    with pytest.raises(DataError, match="within subject 'B'"):
        spec.read_data(_write(tmp_path, "subject,time,y\nA,0,1\nB,2,1\nA,1,1\nB,1,1\n"))
    with pytest.raises(DataError, match="file not found"):
        spec.read_data(tmp_path / "nope.csv")
    panel = load_model("panel_ctvar")
    with pytest.raises(DataError, match=r"covariate 'age' changes within subject '1'"):
        panel.read_data(_write(tmp_path, "id,time,y1,y2,age\n1,0,1,1,0.5\n1,1,1,1,0.7\n"))
    with pytest.raises(DataError, match="missing subject id"):
        panel.read_data(_write(tmp_path, "id,time,y1,y2,age\n1,0,1,1,0.5\n,1,1,1,0.5\n"))


def test_read_data_accepts_tied_times(tmp_path):
    # Several indicators measured at one time, one row each (long format).
    spec = load_model("ctvar")
    d = spec.read_data(_write(tmp_path, "time,y1,y2\n0,1,\n0,,2\n1.5,3,4\n1.5,,5\n"))
    np.testing.assert_array_equal(d.times, [0.0, 0.0, 1.5, 1.5])
    np.testing.assert_array_equal(np.isnan(d.y), [[0, 1], [1, 0], [0, 0], [1, 0]])
    panel = load_model("panel_ctvar")
    p = panel.read_data(
        _write(tmp_path, "id,time,y1,y2,age\n1,0,1,,0.5\n1,0,,2,0.5\n2,0,1,1,0\n")
    ).to_panel()
    np.testing.assert_array_equal(p.times, [[0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(p.counts, [2, 1])
    with pytest.raises(DataError, match=r"line 4: time 0 is before 1 \(line 3\)"):
        spec.read_data(_write(tmp_path, "time,y1,y2\n1,1,1\n1,1,1\n0,1,1\n"))


def test_read_inputs(tmp_path):
    spec = ModelSpec.from_dict(
        _ou_dict(**{"model.inputs": ["dose"], "dynamics.input_effect": [["theta"]]})
    )
    times, inputs = spec.read_inputs(_write(tmp_path, "time,dose\n0,1\n0,2\n4,0\n"))
    np.testing.assert_array_equal(times, [0.0, 0.0, 4.0])
    np.testing.assert_array_equal(inputs, [[1.0], [2.0], [0.0]])
    with pytest.raises(DataError, match=r"line 3, column 'dose': missing value"):
        spec.read_inputs(_write(tmp_path, "time,dose\n0,1\n1,\n"))
    with pytest.raises(DataError, match="ou has no inputs"):
        load_model("ou").read_inputs(_write(tmp_path, "time,dose\n0,1\n"))


def test_read_data_time_fallback_and_model_kwargs(tmp_path):
    # sho's default data use a "year" column; a user CSV with "time" works too.
    spec = load_model("sho")
    d = spec.read_data(_write(tmp_path, "time,sunactivity,other\n1,5,x\n2.5,7,y\n"))
    np.testing.assert_array_equal(d.times, [1.0, 2.5])
    assert set(d.model_kwargs()) == {"times", "y"}
    panel = load_model("panel_ctvar").default_data().model_kwargs()
    assert set(panel) == {"times", "y", "subject", "covariates"}
    assert panel["covariates"]["age"].shape == panel["times"].shape


def test_to_panel_groups_and_pads():
    times = np.array([0.0, 5.0, 1.0, 2.0, 6.0, 3.0])
    subject = np.array(["b", "a", "b", "b", "a", "c"])
    y = np.arange(6.0)[:, None]
    u = np.arange(6.0)[:, None] + 10
    p = to_panel(times, y, subject, u, {"age": np.array([1.0, 2, 1, 1, 2, 3])})
    np.testing.assert_array_equal(p.subjects, ["b", "a", "c"])
    np.testing.assert_array_equal(p.counts, [3, 2, 1])
    np.testing.assert_array_equal(p.times, [[0, 1, 2], [5, 6, 6], [3, 3, 3]])
    np.testing.assert_array_equal(p.y[0, :, 0], [0, 2, 3])
    assert np.isnan(p.y[1, 2, 0]) and np.all(np.isnan(p.y[2, 1:, 0]))
    np.testing.assert_array_equal(p.inputs[1, :2, 0], [11, 14])
    np.testing.assert_array_equal(p.covariates["age"], [1, 2, 3])
    with pytest.raises(ValueError, match="non-decreasing within subject 'b'"):
        to_panel(np.array([1.0, 0.0]), np.zeros((2, 1)), np.array(["b", "b"]))
    with pytest.raises(ValueError, match="non-decreasing within subject 'b'"):
        to_panel(np.array([0.0, np.nan]), np.zeros((2, 1)), np.array(["b", "b"]))
    # Tied times (several rows at one time) are kept, in their order.
    tied = to_panel(np.array([0.0, 1.0, 1.0]), np.arange(3.0)[:, None], np.array(["b"] * 3))
    np.testing.assert_array_equal(tied.times, [[0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(tied.y[0, :, 0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="not constant within subject"):
        to_panel(
            np.array([0.0, 1.0]),
            np.zeros((2, 1)),
            np.array(["b", "b"]),
            None,
            {"age": np.array([1.0, 2.0])},
        )


# ---------------------------------------------------------------- NumPyro model


def _distributions():
    # Skip only while the module or the class does not exist; an import error fails.
    if importlib.util.find_spec("kalmanad.distributions") is None:
        pytest.skip("kalmanad.distributions does not exist yet")
    mod = importlib.import_module("kalmanad.distributions")
    if not hasattr(mod, "LinearSDEDistribution"):
        pytest.skip("kalmanad.distributions.LinearSDEDistribution does not exist yet")
    return mod


def _ou_loglik_numpy(times, y, theta, mu, sigma, noise):
    """Exact log-likelihood of the noisy stationary OU, scalar Kalman filter in numpy."""
    mean, var = mu, sigma**2
    ll = 0.0
    for k in range(len(times)):
        if k:
            a = math.exp(-theta * (times[k] - times[k - 1]))
            mean = mu + a * (mean - mu)
            var = a * a * var + sigma**2 * (1 - a * a)
        s = var + noise**2
        r = y[k] - mean
        ll += -0.5 * (math.log(2 * math.pi * s) + r * r / s)
        gain = var / s
        mean, var = mean + gain * r, (1 - gain) * var
    return ll


def _site_log_prob(spec, args, kwargs=None, key=0):
    """jit-compiled params -> (log_prob of the "y" site, trace values): as NUTS sees it,
    with parameters traced and the data (closed over) concrete."""

    @jax.jit
    def run(params):
        model = handlers.substitute(handlers.seed(spec.numpyro_model, key), data=params)
        tr = handlers.trace(model).get_trace(*args, **(kwargs or {}))
        site = tr["y"]
        values = {k: v["value"] for k, v in tr.items() if k != "y"}
        return site["fn"].log_prob(site["value"]), values

    return run


def test_numpyro_model_single_series_log_prob():
    _distributions()
    spec = load_model("ou")
    d = spec.default_data()
    values = {"theta": 0.6, "mu": 1.8, "sigma": 1.1, "noise": 0.35}
    tr = handlers.trace(handlers.substitute(handlers.seed(spec.numpyro_model, 0), data=values))
    tr = tr.get_trace(d.times, d.y)
    assert tr["y"]["is_observed"] and tr["y"]["fn"].event_shape == (200, 1)
    assert tr["y"]["fn"].batch_shape == ()
    for x in spec.parameters:
        assert tr[x]["type"] == "sample" and not tr[x]["is_observed"]
    assert tr["timescale"]["type"] == "deterministic"
    lp, sites = _site_log_prob(spec, (d.times, d.y))(values)
    np.testing.assert_allclose(lp, _ou_loglik_numpy(d.times, d.y[:, 0], **values), rtol=1e-9)
    np.testing.assert_allclose(sites["timescale"], 1 / 0.6)


@pytest.mark.slow
def test_numpyro_model_panel_long_format_and_padding():
    dists = _distributions()
    spec = load_model("panel_ctvar")
    d = spec.default_data()
    # Drop rows to make the panel ragged: the padded model must equal per-subject fits.
    keep = np.ones(len(d.times), bool)
    keep[[5, 6, 7, 30]] = False
    times, y, subject = d.times[keep], d.y[keep], d.subject[keep]
    age = d.covariates["age"][keep]
    kwargs = {"subject": subject, "covariates": {"age": age}}
    truth = spec.data.truth
    params = {x: truth[x] for x in spec.parameters}
    params |= {f"{x}_sd": truth[f"{x}_sd"] for x in spec.random_effects.parameters}
    params |= {"age_on_auto1": 0.2, "age_on_mu1": 0.5}
    params["re_z"] = np.random.default_rng(1).standard_normal((30, 4))
    params["re_corr_cholesky"] = np.linalg.cholesky(np.asarray(truth["re_corr"]))
    lp, sites = _site_log_prob(spec, (times, y), kwargs)(params)
    assert lp.shape == (30,) and np.all(np.isfinite(lp))
    assert sites["re_z"].shape == (30, 4) and sites["auto1_subject"].shape == (30,)

    @jax.jit
    def one_subject(p, t, ys):
        return dists.LinearSDEDistribution(spec.build(p), t).log_prob(ys)

    for s in (0, 1):  # subject 0 lost 3 rows (padded), subject 1 lost 1
        rows = subject == str(s + 1)
        p = {
            x: sites[f"{x}_subject"][s] if f"{x}_subject" in sites else params[x]
            for x in spec.parameters
        }
        np.testing.assert_allclose(lp[s], one_subject(p, times[rows], y[rows]), rtol=1e-9)

    tr = handlers.trace(handlers.seed(spec.numpyro_model, 1)).get_trace(times, y, **kwargs)
    assert tr["y"]["fn"].batch_shape == (30,) and tr["y"]["fn"].event_shape == (20, 2)
    assert tr["re_corr"]["type"] == "deterministic"

    # Prior predictive: y is sampled with the panel's shape.
    @jax.jit
    def prior_predictive(key):
        tr = handlers.trace(handlers.seed(spec.numpyro_model, key)).get_trace(times, None, **kwargs)
        return tr["y"]["value"]

    assert prior_predictive(jax.random.PRNGKey(2)).shape == (30, 20, 2)
    with pytest.raises(ValueError, match="several subjects"):
        handlers.seed(spec.numpyro_model, 0)(times[:20], y[:20])


@pytest.mark.slow
def test_numpyro_model_never_raises_on_invalid_draws():
    _distributions()
    spec = load_model("ctvar")
    d = spec.default_data()
    unstable = {"auto1": 0.1, "auto2": 0.1, "cross12": 1.0, "cross21": 1.0}
    # NumPyro's initialisation traces the model eagerly with concrete draws: no exception.
    model = handlers.substitute(handlers.seed(spec.numpyro_model, 0), data=unstable)
    handlers.trace(model).get_trace(d.times, d.y)
    # As NUTS evaluates it: a -inf log-likelihood.
    params = {x: 0.5 for x in spec.parameters} | unstable
    lp, _ = _site_log_prob(spec, (d.times, d.y))(params)
    assert float(lp) == -np.inf
    # The public build() validates concrete values and says why.
    with pytest.raises(ValueError, match="stable"):
        spec.build(params)
