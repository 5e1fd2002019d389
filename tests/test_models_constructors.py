"""kalmanad.models: the zoo's families from plain numbers, the CARMA conventions (closed
forms, EzTao/celerite mappings), and the public stationary covariance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import kalmanad
from kalmanad import models
from kalmanad.model import _FIELDS, LinearSDE
from kalmanad.models import stationary_covariance
from kalmanad.spec import load_model

# zoo name -> (parameter values, the constructor's model at those values)
CASES = {
    "ou": (
        {"theta": 0.5, "mu": 2.0, "sigma": 1.2, "noise": 0.3},
        lambda p: models.ou(p["theta"], p["sigma"], p["mu"], p["noise"]),
    ),
    "ctvar": (
        {
            "auto1": 0.8,
            "auto2": 0.5,
            "cross12": 0.3,
            "cross21": -0.4,
            "sigma1": 0.8,
            "sigma2": 0.6,
            "mu1": 1.0,
            "mu2": -1.0,
            "noise1": 0.2,
            "noise2": 0.25,
        },
        lambda p: models.ctvar(
            [[-p["auto1"], p["cross12"]], [p["cross21"], -p["auto2"]]],
            [p["sigma1"], p["sigma2"]],
            observation_intercept=[p["mu1"], p["mu2"]],
            noise_sd=[p["noise1"], p["noise2"]],
        ),
    ),
    "sho": (
        {"omega": 0.57, "quality": 2.0, "sigma": 40.0, "mu": 50.0, "noise": 10.0},
        lambda p: models.sho(p["omega"], p["quality"], p["sigma"], p["mu"], p["noise"]),
    ),
    "matern32": (
        {"lengthscale": 2.0, "sigma": 1.0, "mu": 0.5, "noise": 0.2},
        lambda p: models.matern32(p["lengthscale"], p["sigma"], p["mu"], p["noise"]),
    ),
    "matern52": (
        {"lengthscale": 3.0, "sigma": 1.5, "mu": -0.5, "noise": 0.2},
        lambda p: models.matern52(p["lengthscale"], p["sigma"], p["mu"], p["noise"]),
    ),
    "car": (
        {"a1": 0.3, "a2": 1.0, "r": 0.5, "sigma": 1.0, "mu": 0.1, "noise": 0.1},
        lambda p: models.car(
            models.ar_from_factors([[p["a1"], p["a2"]], p["r"]]),
            p["sigma"],
            mean=p["mu"],
            noise=p["noise"],
        ),
    ),
    "carma": (
        {"a1": 0.4, "a2": 0.33, "tau": 1.5, "sigma": 40.0, "mu": 50.0, "noise": 10.0},
        lambda p: models.carma(
            [p["a1"], p["a2"]], [1.0, p["tau"]], p["sigma"], mean=p["mu"], noise=p["noise"]
        ),
    ),
    "local_level": (
        {"sigma_level": 38.0, "noise": 123.0},
        lambda p: models.local_level(p["sigma_level"], p["noise"]),
    ),
    "local_linear_trend": (
        {"sigma_level": 30.0, "sigma_slope": 2.0, "noise": 120.0},
        lambda p: models.local_linear_trend(p["sigma_level"], p["sigma_slope"], p["noise"]),
    ),
}


def _assert_same_model(got: LinearSDE, ref: LinearSDE):
    assert got.initial_state == ref.initial_state
    for name in _FIELDS:
        a, b = getattr(got, name), getattr(ref, name)
        if b is None:
            assert a is None, name
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_constructor_is_the_zoo_model(name):
    params, build = CASES[name]
    _assert_same_model(build(params), load_model(name).build(params))


def test_every_zoo_family_has_a_constructor():
    from kalmanad.spec import list_models

    single = {n for n in list_models() if not load_model(n).is_hierarchical}
    assert single - {"panel_ctvar"} <= set(CASES)


def test_carma_log_likelihood_matches_the_zoo_on_sunspots():
    spec = load_model("carma")
    data = spec.default_data()
    t, y = data.times[:80], data.y[:80]
    params, build = CASES["carma"]
    ref = kalmanad.log_likelihood(spec.build(params), t, y)
    got = kalmanad.log_likelihood(build(params), t, y)
    assert np.isfinite(ref)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_ar_and_ma_from_factors():
    # (s² + 0.3 s + 1)(s + 0.5): roots of numpy's highest-first polynomial
    ar = models.ar_from_factors([[0.3, 1.0], 0.5])
    np.testing.assert_allclose([1.0, *ar], np.poly([*np.roots([1, 0.3, 1.0]).tolist(), -0.5]))
    # (1 + 2 s)(1 + 0.5 s + 0.25 s²) lowest first
    np.testing.assert_allclose(
        models.ma_from_factors([2.0, [0.5, 0.25]]), [1.0, 2.5, 1.25, 0.5], rtol=1e-15
    )


def _kelly_autocov(ar, ma, tau):
    """CARMA autocovariance from the AR roots (Kelly et al. 2014, eq. 4; celerite's
    CARMASolver::covariance): unit white noise, b(s) = Σ ma[k] s^k."""
    r = np.roots([1.0, *ar])
    total = 0.0
    for k in range(len(r)):
        n1 = sum(b * r[k] ** j for j, b in enumerate(ma))
        n2 = sum(b * (-r[k]) ** j for j, b in enumerate(ma))
        term = n1 * n2 / r[k].real
        for j in range(len(r)):
            if j != k:
                term /= (r[j] - r[k]) * (np.conj(r[j]) + r[k])
        total += term * np.exp(r[k] * tau)
    return -0.5 * total.real


def _model_autocov(model, tau):
    p = np.asarray(stationary_covariance(model))
    h = np.asarray(model.observation)[0]
    return h @ scipy.linalg.expm(np.asarray(model.drift) * tau) @ p @ h


def test_car1_closed_form():
    """CAR(1), EzTao's DRW (a1, b0): variance b0²/(2 a1) and autocovariance e^{−a1 τ}; the
    same law of y as ou(theta=a1, sigma=b0/√(2 a1)) (b0 scales the state there, the
    observation here)."""
    a1, b0 = 0.7, 1.3
    m = models.carma([a1], [b0])
    for tau in (0.0, 0.4, 2.0):
        want = b0**2 / (2 * a1) * np.exp(-a1 * tau)
        np.testing.assert_allclose(_model_autocov(m, tau), want, rtol=1e-12)
        np.testing.assert_allclose(_kelly_autocov([a1], [b0], tau), want, rtol=1e-12)
    drw = models.ou(a1, b0 / np.sqrt(2 * a1), noise=0.2)
    t = np.array([0.0, 0.5, 1.7, 2.0])
    y = np.array([[0.3], [-0.1], [0.8], [0.5]])
    np.testing.assert_allclose(
        kalmanad.log_likelihood(models.carma([a1], [b0], noise=0.2), t, y),
        kalmanad.log_likelihood(drw, t, y),
        rtol=1e-12,
    )


@pytest.mark.parametrize("ar", [[0.6, 2.0], [3.0, 1.0]])  # complex and real AR roots
def test_carma21_closed_form(ar):
    """CARMA(2,1), EzTao's DHO (a1, a2, b0, b1): Var x = (b0² + a2 b1²)/(2 a1 a2), and the
    autocovariance of Kelly et al. (EzTao's and celerite's formula) at several lags."""
    (a1, a2), (b0, b1) = ar, (0.8, 1.7)
    m = models.carma(ar, [b0, b1])
    var = (b0**2 + a2 * b1**2) / (2 * a1 * a2)
    np.testing.assert_allclose(_model_autocov(m, 0.0), var, rtol=1e-12)
    for tau in (0.0, 0.3, 1.1, 4.0):
        np.testing.assert_allclose(
            _model_autocov(m, tau), _kelly_autocov(ar, [b0, b1], tau), rtol=1e-10, atol=1e-14
        )
    # with sigma the stationary sd is sigma, whatever the scale of ma
    scaled = models.carma(ar, [5 * b0, 5 * b1], sigma=2.0)
    np.testing.assert_allclose(_model_autocov(scaled, 0.0), 4.0, rtol=1e-12)
    np.testing.assert_allclose(
        _model_autocov(scaled, 1.1), 4.0 * _kelly_autocov(ar, [b0, b1], 1.1) / var, rtol=1e-10
    )


def test_carma_matches_tinygp():
    """tinygp's CARMA kernel (α lowest power first, σ absorbed into β): ar = α reversed."""
    quasisep = pytest.importorskip("tinygp.kernels.quasisep")
    alpha, beta = np.array([2.0, 0.6]), np.array([0.8, 1.7])
    tau = np.array([0.0, 0.3, 1.1, 4.0])
    kernel = quasisep.CARMA.init(alpha=alpha, beta=beta)
    want = np.asarray(kernel(jnp.zeros(1), jnp.asarray(tau)))[0]
    got = [_model_autocov(models.carma(alpha[::-1], beta), t) for t in tau]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_carma_argument_errors():
    with pytest.raises(ValueError, match=r"q < p"):
        models.carma([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one AR coefficient"):
        models.carma([], [1.0])
    with pytest.raises(ValueError, match=r"AR polynomial has a root with real part .* >= 0"):
        models.carma([-0.5, 1.0], [1.0])


def test_constructors_trace_with_finite_gradients():
    """Sampled values: every constructor runs under jit and grad (as in a NumPyro model)."""

    def total(theta):
        a, b, c = jnp.exp(theta)
        built = [
            models.ou(a, b, c, 0.1),
            models.ctvar(-a * jnp.eye(2), jnp.stack([b, c]), noise_sd=jnp.stack([c, c])),
            models.carma([a, b], [1.0, c], c, mean=a, noise=0.1),
            models.car(models.ar_from_factors([[a, b], c]), b),
            models.sho(a, b, c),
            models.matern32(a, b),
            models.matern52(a, b),
            models.local_level(a, b),
            models.local_linear_trend(a, b, c),
        ]
        out = sum(jnp.sum(m.drift) + jnp.sum(m.diffusion) + jnp.sum(m.observation) for m in built)
        return out + jnp.sum(stationary_covariance(built[2]))

    theta = jnp.log(jnp.array([0.4, 1.3, 0.5]))
    value, grad = jax.jit(jax.value_and_grad(total))(theta)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, total(theta), rtol=1e-12)


def test_stationary_covariance_matches_scipy():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 3)) - 3.0 * np.eye(3)
    g = rng.normal(size=(3, 3))
    model = LinearSDE(a, g @ g.T, np.eye(3), np.eye(3))
    want = scipy.linalg.solve_continuous_lyapunov(a, -g @ g.T)
    np.testing.assert_allclose(stationary_covariance(model), want, rtol=1e-10, atol=1e-12)
    # whatever the initial state: a known start does not change it
    known = model.replace(initial_state="known", initial_cov=np.eye(3))
    np.testing.assert_allclose(stationary_covariance(known), want, rtol=1e-10, atol=1e-12)


def test_stationary_covariance_of_an_unstable_drift():
    walk = models.local_level(1.0, 1.0)
    with pytest.raises(ValueError, match="the stationary covariance needs a stable drift"):
        stationary_covariance(walk)

    def p(rate):  # traced: NaN where not stable, finite gradient
        m = LinearSDE([[rate]], [[1.0]], [[1.0]], [[1.0]], initial_state="diffuse")
        return stationary_covariance(m)[0, 0]

    assert np.isnan(jax.jit(p)(0.5))
    np.testing.assert_allclose(jax.jit(p)(-0.5), 1.0, rtol=1e-12)
    np.testing.assert_allclose(jax.grad(p)(-0.5), 2.0, rtol=1e-10)  # d/da (−1/2a) = 1/2a²
    assert np.isfinite(jax.grad(lambda r: jnp.nan_to_num(p(r)))(0.5))
