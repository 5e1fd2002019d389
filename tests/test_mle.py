"""Maximum likelihood (kalmanad.mle): estimates, standard errors, intervals, reports."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import kalmanad
from kalmanad.mle import MLEResult, NotIdentifiedError, fit_mle
from kalmanad.spec import ModelSpec

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parent.parent
FLAT_REAL = dist.ImproperUniform(dist.constraints.real, (), ())
FLAT_POSITIVE = dist.ImproperUniform(dist.constraints.positive, (), ())


def normal_model(times, y=None):
    mu = numpyro.sample("mu", FLAT_REAL)
    sd = numpyro.sample("sd", FLAT_POSITIVE)
    numpyro.sample("y", dist.Normal(mu, sd), obs=y)


def sd_model(times, y=None):
    sd = numpyro.sample("sd", dist.HalfNormal(1.0))  # only its support is used
    numpyro.sample("y", dist.Normal(0.0, sd), obs=y)


def test_normal_sd_is_root_mean_square():
    y = np.random.default_rng(0).normal(0.0, 2.0, 50)
    r = fit_mle(sd_model, None, y)
    n = y.size
    sd_hat = np.sqrt(np.mean(y**2))
    np.testing.assert_allclose(r.params["sd"], sd_hat, rtol=1e-10)
    # ℓ̂ = -n/2 (log 2π σ̂² + 1); observed-information SE σ̂ / √(2n).
    np.testing.assert_allclose(r.log_likelihood, -n / 2 * (np.log(2 * np.pi * sd_hat**2) + 1))
    np.testing.assert_allclose(r.se[0], sd_hat / np.sqrt(2 * n), rtol=1e-8)
    assert r.n == n and r.k == 1 and r.converged
    np.testing.assert_allclose(r.aic, r.minus2ll + 2)
    np.testing.assert_allclose(r.bic, r.minus2ll + np.log(n))


def test_fit_map_with_a_flat_prior_is_not_the_mle():
    # The unconstrained-space mode includes the log-Jacobian of exp: √(Σy²/(n−1)).
    from kalmanad.inference import fit_map

    def model(times, y=None):  # sites sampled out of alphabetical order
        sd = numpyro.sample("sd", FLAT_POSITIVE)
        mu = numpyro.sample("mu", FLAT_REAL)
        numpyro.sample("y", dist.Normal(mu, sd), obs=y)

    y = np.random.default_rng(0).normal(0.0, 2.0, 20)
    res = fit_map(model, None, y, num_starts=1, num_draws=0)
    n, ss = y.size, np.sum((y - y.mean()) ** 2)
    np.testing.assert_allclose(res.params["sd"], np.sqrt(ss / (n - 1)), rtol=1e-5)
    assert res.names == ("sd", "mu") and res.cov.shape == (2, 2)
    # cov in names order: Var(log sd) = 1/(2(n-1)), Var(mu) = sd²/n at the mode.
    np.testing.assert_allclose(np.diag(res.cov), [0.5 / (n - 1), ss / (n - 1) / n], rtol=1e-4)
    np.testing.assert_allclose(fit_mle(model, None, y).params["sd"], np.sqrt(ss / n), rtol=1e-9)


def test_profile_matches_wald_when_nearly_quadratic():
    y = np.random.default_rng(1).normal(3.0, 1.5, 2000)
    r = fit_mle(normal_model, None, y)
    np.testing.assert_allclose(r.params["mu"], y.mean(), rtol=1e-10)
    prof = r.profile()
    wald = r.wald_ci()
    for i, name in enumerate(r.names):
        lo, hi = prof[name]
        assert lo < r.estimate[i] < hi
        # within a tenth of an SE (the sd's profile is slightly skewed to the right)
        np.testing.assert_allclose([lo, hi], wald[i], atol=0.1 * r.se[i])
    # The profile bound of mu solves n/2 log(1 + (μ-ȳ)²/σ̂²) = χ²₁(0.95)/2 exactly.
    s2 = np.mean((y - y.mean()) ** 2)
    half = np.sqrt(s2 * np.expm1(3.841458820694124 / y.size))
    np.testing.assert_allclose(prof["mu"], [y.mean() - half, y.mean() + half], rtol=1e-7)
    assert "profile lo" in r.summary()


def test_not_identified_names_the_parameters():
    def model(times, y=None):
        a = numpyro.sample("a", FLAT_REAL)
        b = numpyro.sample("b", FLAT_REAL)
        numpyro.sample("y", dist.Normal(a + b, 1.0), obs=y)

    with pytest.raises(NotIdentifiedError, match="a, b") as err:
        fit_mle(model, None, np.arange(5.0), num_starts=1)
    np.testing.assert_allclose(sum(err.value.result.estimate), 2.0, rtol=1e-8)
    assert set(err.value.directions[0]) == {"a", "b"}


def test_an_estimate_on_the_boundary_warns():
    # z ~ N(0, v + 1) with |z| < 1: ℓ decreases in v on [0, ∞), so v̂ = 0.
    def model(times, y=None):
        v = numpyro.sample("v", FLAT_POSITIVE)
        numpyro.sample("y", dist.Normal(0.0, jnp.sqrt(v + 1.0)), obs=y)

    with pytest.warns(UserWarning, match="edge of the support of v"):
        r = fit_mle(model, None, np.array([0.5, -0.3]), num_starts=1, se=False)
    assert r.params["v"] < 1e-4


def test_starts_that_disagree_warn():
    # ℓ(θ) = -(θ² - 1)²/2 - (θ + 5)²/200: local maxima near θ = -1 (best) and θ = +1.
    def model(times, y=None):
        theta = numpyro.sample("theta", FLAT_REAL)
        numpyro.sample("y", dist.Normal(theta**2, 1.0), obs=y)
        numpyro.sample("z", dist.Normal(theta, 10.0), obs=jnp.array(-5.0))

    with pytest.warns(UserWarning, match="different optima"):
        r = fit_mle(model, None, np.array(1.0), start=[{"theta": 1.2}, {"theta": -1.2}])
    assert r.best_start == 1 and r.params["theta"] < 0
    assert r.starts[0].minus2ll > r.starts[1].minus2ll + 0.1
    with pytest.raises(ValueError, match="unknown parameter"):
        fit_mle(model, None, np.array(1.0), start={"thetta": 1.0})


# --------------------------------------------------------------------------- Nile
@pytest.fixture(scope="module")
def nile():
    spec = kalmanad.load_model("local_level")
    data = spec.default_data()
    return spec, data, fit_mle(spec, data.times, data.y)


def test_nile_matches_statsmodels_exact_diffuse(nile):
    sm = pytest.importorskip("statsmodels.api")
    _, data, r = nile
    mod = sm.tsa.UnobservedComponents(data.y[:, 0], "llevel", use_exact_diffuse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(method="lbfgs", disp=False, maxiter=10000, pgtol=1e-12, factr=10.0)
    # statsmodels' parameters are the variances (irregular, level).
    ours = np.array([r.params["noise"] ** 2, r.params["sigma_level"] ** 2])
    np.testing.assert_allclose(ours, res.params, rtol=1e-6)
    np.testing.assert_allclose(r.log_likelihood, res.llf, rtol=1e-8)
    np.testing.assert_allclose(r.log_likelihood, mod.loglike(ours), rtol=1e-12)
    # Durbin & Koopman (2012), §2.10.3: σ²_ε = 15099, σ²_η = 1469.1.
    np.testing.assert_allclose(ours, [15099, 1469.1], rtol=1e-4)


def test_nile_hessian_and_delta_method_against_finite_differences(nile):
    _, _, r = nile
    loglik = jax.jit(r._loglik)
    x = r.estimate
    h = 1e-4 * np.abs(x)
    k = x.size
    fd = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h[i], np.eye(k)[j] * h[j]
            f = [float(loglik(jnp.asarray(x + a + b))) for a, b in ((ei, ej), (ei, -ej), (-ei, ej))]
            f.append(float(loglik(jnp.asarray(x - ei - ej))))
            fd[i, j] = (f[0] - f[1] - f[2] + f[3]) / (4 * h[i] * h[j])
    np.testing.assert_allclose(r.hessian, fd, rtol=1e-4)
    np.testing.assert_allclose(r.cov, np.linalg.inv(-r.hessian), rtol=1e-12)

    def snr(p):  # signal-to-noise ratio q = σ²_η / σ²_ε
        return p["sigma_level"] ** 2 / p["noise"] ** 2

    d = r.delta(snr)
    names = list(r.names)
    g = np.array([2 * x[0] / x[1] ** 2, -2 * x[0] ** 2 / x[1] ** 3])
    assert names == ["sigma_level", "noise"]
    np.testing.assert_allclose(d.estimate, [x[0] ** 2 / x[1] ** 2])
    np.testing.assert_allclose(d.cov[0, 0], g @ r.cov @ g, rtol=1e-10)
    # numeric Jacobian of g gives the same SE
    gn = np.array(
        [
            (snr(dict(zip(names, x + e, strict=True))) - snr(dict(zip(names, x - e, strict=True))))
            / (2 * e.sum())
            for e in np.diag(h)
        ]
    )
    np.testing.assert_allclose(d.se, np.sqrt(gn @ r.cov @ gn), rtol=1e-6)


def test_nile_summary_order_dataframe_and_arviz(nile):
    r = nile[2]
    text = r.summary()
    assert text.index("sigma_level") < text.index("\nnoise")  # the spec's order
    for word in ("-2 log-likelihood", "AIC", "BIC", "observations n:", "100", "P>|z|"):
        assert word in text
    df = r.to_dataframe()
    assert list(df.index) == ["sigma_level", "noise"]
    np.testing.assert_allclose(df["se"], r.se)
    idata = r.to_arviz()
    np.testing.assert_allclose(idata.posterior["noise"].values, [[r.params["noise"]]])
    assert idata.posterior.attrs["method"] == "mle"
    lo, hi = r.profile("sigma_level")["sigma_level"]
    assert 0 < lo < r.params["sigma_level"] < hi
    assert json.dumps(r.to_dict())


# ---------------------------------------------------- panels, inputs, missing, initial
PANEL = {
    "model": {"name": "ou_input", "latent": ["x"], "manifest": ["y"], "inputs": ["u"]},
    "parameters": {
        "theta": "flat(low=0)",
        "sigma": "flat(low=0)",
        "b": "flat",
        "mu": "flat",
        "noise": "flat(low=0)",
    },
    "dynamics": {"drift": [["-theta"]], "diffusion_sd": [["sigma"]], "input_effect": [["b"]]},
    "measurement": {"loadings": [[1]], "intercept": ["mu"], "noise_sd": [["noise"]]},
    "initial": {"state": "known", "mean": [0.0], "sd": [[1.0]]},
}


def test_panel_with_inputs_and_missing_values():
    # A stationary start (the known one: the OpenMx and ctsem cases; diffuse: the Nile).
    spec = ModelSpec.from_dict({**PANEL, "initial": {}})
    assert "theta ~ flat(low=0)" in spec.describe() and "b     ~ flat\n" in spec.describe()
    truth = {"theta": 0.7, "sigma": 0.8, "b": 1.5, "mu": 2.0, "noise": 0.3}
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.exponential(0.5, (4, 40)), axis=1)
    inputs = rng.normal(size=(4, 40, 1))
    y = np.array(
        kalmanad.simulate(
            spec.build(truth), jnp.asarray(times), jax.random.PRNGKey(0), inputs=inputs
        ).observations
    )
    y[rng.random(y.shape) < 0.1] = np.nan
    r = fit_mle(spec, times, y, inputs, num_starts=2)
    assert r.converged and r.n == int(np.isfinite(y).sum())
    direct = kalmanad.log_likelihood(spec.build(r.params), times, y, inputs)
    np.testing.assert_allclose(r.log_likelihood, float(jnp.sum(direct)), rtol=1e-10)
    assert abs(r.params["b"] - truth["b"]) < 4 * r.se[r.names.index("b")]
    assert r.names == ("theta", "sigma", "b", "mu", "noise")


OPENMX_PANEL = Path(__file__).parent / "data" / "openmx_panel.toml"


@pytest.mark.slow
def test_openmx_reference_panel():
    """OpenMx 2.21's SSCT ML fit of a ragged panel (benchmarks/peers/openmx_mle_reference.R)."""
    ref = json.loads((ROOT / "tests" / "data" / "openmx_panel_reference.json").read_text())
    spec = ModelSpec.from_toml(OPENMX_PANEL)
    data = spec.read_data(ROOT / "tests" / "data" / "openmx_panel.csv", subject="id")
    r = fit_mle(spec, data.times, data.y, subject=data.subject, num_starts=1)
    assert ref["status_code"] == 0 and r.converged
    # Measured: -2LL equal to 1e-10, estimates to 1e-6, SEs (OpenMx's from a numerical
    # Hessian) to 1e-4 relative.
    np.testing.assert_allclose(r.minus2ll, ref["minus2ll"], rtol=1e-9)
    est = [ref["estimates"][k] for k in r.names]
    se = [ref["standard_errors"][k] for k in r.names]
    np.testing.assert_allclose(r.estimate, est, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r.se, se, rtol=1e-3)


# -------------------------------------------------------------------------- the CLI
def test_cli_fit_method_mle(tmp_path, capsys):
    from kalmanad.cli import main

    out = tmp_path / "out"
    assert main(["fit", "local_level", "--method", "mle", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Maximum-likelihood estimates" in text and "sigma_level" in text
    saved = json.loads((out / "local_level_mle.json").read_text())
    np.testing.assert_allclose(saved["minus2ll"], 1266.9291272725, rtol=1e-8)
    assert (
        (out / "local_level_mle.csv")
        .read_text()
        .splitlines()[0]
        .startswith("parameter,estimate,se")
    )
    for bad, fragment in (
        (["--start", "noise=-1"], "noise"),
        (["--start", "noise"], "NAME=VALUE"),
        (["--starts", "0"], "--starts"),
        (["--start", "nosie=3"], "unknown parameter"),
    ):
        assert main(["fit", "local_level", "--method", "mle", *bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1


def test_cli_simulate_needs_values_for_flat_priors(tmp_path, capsys):
    from kalmanad.cli import main

    path = tmp_path / "flat.toml"
    path.write_text(
        '[model]\nlatent = ["x"]\nmanifest = ["y"]\n[parameters]\ntheta = "flat(low=0)"\n'
        'noise = "HalfNormal(1)"\n[dynamics]\ndrift = [["-theta"]]\ndiffusion = [[1]]\n'
        '[measurement]\nloadings = [[1]]\nnoise_sd = [["noise"]]\n'
    )
    assert main(["describe", str(path)]) == 0
    assert "theta ~ flat(low=0)" in capsys.readouterr().out
    assert main(["simulate", str(path), "--n", "3"]) == 2
    assert "--param theta=VALUE" in capsys.readouterr().err
    assert main(["simulate", str(path), "--n", "3", "--param", "theta=0.5"]) == 0
    assert "theta=0.5" in capsys.readouterr().out


# ----------------------------------------------------------- published ctsem fits
def _ctsem_example():
    path = ROOT / "examples" / "ml_ctsem.py"
    spec = importlib.util.spec_from_file_location("ml_ctsem", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ml_ctsem"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["oscillating", "anomauth"])
def test_ctsem_published_fits(name):
    ex = _ctsem_example()
    if name == "oscillating":  # the default starts end on a degenerate optimum: warned
        with pytest.warns(UserWarning, match="different optima"):
            result, _ = ex.fit(name)
    else:
        result, _ = ex.fit(name)
    assert isinstance(result, MLEResult) and result.converged
    # ctsem's test asserts its own value to 0.01 (test-knownFits.R).
    assert abs(result.minus2ll - ex.PUBLISHED[name]) < 0.05
    if name == "anomauth":  # ctsem's test also checks the SE of the mean of Y1 (0.036)
        assert abs(result.se[result.names.index("mm1")] - 0.036) < 0.01


def test_a_specs_start_values_are_where_the_fits_start():
    """``start`` in a spec is the first start of fit_mle and the init of NUTS/fit_map."""
    from numpyro import handlers

    from kalmanad.spec import from_equations

    text = (Path(__file__).parents[1] / "models" / "ou.kal").read_text()
    spec = from_equations(text + "\nstart theta = 0.7 ; start mu = 0.25\n")
    assert spec.starts == {"theta": 0.7, "mu": 0.25}
    from kalmanad.spec import load_model

    data = load_model("ou").default_data()
    r = fit_mle(spec, data.times, data.y, num_starts=1, se=False)
    assert r.starts[0].start["theta"] == pytest.approx(0.7)
    assert r.starts[0].start["mu"] == pytest.approx(0.25)
    # The init strategy: the start where given, the prior median elsewhere.
    from numpyro.infer import init_to_median

    def start_of(strategy):
        seeded = handlers.seed(spec.numpyro_model, rng_seed=0)
        trace = handlers.trace(handlers.substitute(seeded, substitute_fn=strategy)).get_trace(
            data.times, y=data.y
        )
        return {k: float(trace[k]["value"]) for k in spec.parameters}

    given, median = start_of(spec.init_strategy()), start_of(init_to_median(num_samples=15))
    assert given["theta"] == pytest.approx(0.7) and given["mu"] == pytest.approx(0.25)
    assert median["theta"] != pytest.approx(0.7)
    assert given["sigma"] == median["sigma"] and given["noise"] == median["noise"]
