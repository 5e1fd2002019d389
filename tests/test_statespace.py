"""End-to-end references for the continuous-time front end (model → discretise → filter).

References: statsmodels' Kalman filter (Nile local level, a VAR(1) with
measurement error), tinygp's quasiseparable GPs on irregular times (Exp, Matern32,
Matern52, SHO, CARMA), and a dense Gaussian built independently with scipy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import kalmanad
from kalmanad import LinearSDE

# The sqrt and parallel filters are checked against the same references in the slow job
# (``pytest -m slow``); the default job runs the sequential filter here, and
# tests/test_filter_core.py compares all three on every reference.
METHODS = (
    "sequential",
    pytest.param("sqrt", marks=pytest.mark.slow),
    pytest.param("parallel", marks=pytest.mark.slow),
)


def _rel(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


# ----------------------------------------------------------------------- statsmodels


@pytest.fixture(scope="module")
def nile():
    sm = pytest.importorskip("statsmodels.api")
    return np.asarray(sm.datasets.nile.load_pandas().data["volume"], float)


@pytest.mark.parametrize("method", METHODS)
def test_nile_local_level_known_start_matches_statsmodels(nile, method):
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    s2_eps, s2_eta, a1, p1 = 15099.0, 1469.1, 1120.0, 5000.0
    # statsmodels' own filter with a known start (UnobservedComponents would burn the
    # first observation: its loglikelihood_burn stays 1 after initialize_known).
    kf = KalmanFilter(k_endog=1, k_states=1)
    kf.bind(nile[:, None].copy())
    kf["design"] = np.eye(1)
    kf["obs_cov"] = [[s2_eps]]
    kf["transition"] = np.eye(1)
    kf["selection"] = np.eye(1)
    kf["state_cov"] = [[s2_eta]]
    kf.initialize_known(np.array([a1]), np.array([[p1]]))
    ref = kf.loglike()
    # Continuous-time random walk observed at unit steps: A = 0, diffusion rate σ²_η.
    model = LinearSDE(
        drift=[[0.0]],
        diffusion=[[s2_eta]],
        observation=[[1.0]],
        observation_noise=[[s2_eps]],
        initial_mean=[a1],
        initial_cov=[[p1]],
    )
    times = np.arange(len(nile), dtype=float)
    ll = kalmanad.log_likelihood(model, times, nile[:, None], method=method)
    assert _rel(ll, ref) < 1e-8


@pytest.mark.parametrize("method", METHODS)
def test_nile_local_level_diffuse_start_matches_statsmodels(nile, method):
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    s2_eps, s2_eta = 15099.0, 1469.1
    mod = UnobservedComponents(nile, "llevel", use_exact_diffuse=True)
    ref = mod.loglike(np.array([s2_eps, s2_eta]))
    model = LinearSDE(
        drift=[[0.0]],
        diffusion=[[s2_eta]],
        observation=[[1.0]],
        observation_noise=[[s2_eps]],
        initial_state="diffuse",
    )
    times = np.arange(len(nile), dtype=float)
    ll = kalmanad.log_likelihood(model, times, nile[:, None], method=method)
    assert _rel(ll, ref) < 1e-8


def _var_data(seed=0, T=150):
    rng = np.random.default_rng(seed)
    drift = np.array([[-0.6, 0.3], [-0.2, -0.4]])
    diffusion = np.array([[0.5, 0.1], [0.1, 0.3]])
    obs = np.array([[1.0, 0.0], [0.4, 1.0], [0.0, 2.0]])
    noise = np.diag([0.2, 0.1, 0.3])
    y = rng.standard_normal((T, 3))
    y[rng.random((T, 3)) < 0.1] = np.nan
    return drift, diffusion, obs, noise, y


@pytest.mark.parametrize("method", METHODS)
def test_ct_var_with_measurement_error_matches_statsmodels(method):
    """A CT-VAR observed at unit steps is a VAR(1) + noise: statsmodels' own filter on
    the discretisation computed independently with scipy."""
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    drift, diffusion, obs, noise, y = _var_data()
    n = 2
    block = np.block([[-drift, diffusion], [np.zeros((n, n)), drift.T]])
    f = scipy.linalg.expm(block)
    ad = f[n:, n:].T
    qd = ad @ f[:n, n:]
    p0 = scipy.linalg.solve_continuous_lyapunov(drift, -diffusion)
    kf = KalmanFilter(k_endog=3, k_states=2)
    kf.bind(y.copy())
    kf["design"] = obs
    kf["obs_cov"] = noise
    kf["transition"] = ad
    kf["selection"] = np.eye(2)
    kf["state_cov"] = 0.5 * (qd + qd.T)
    kf.initialize_known(np.zeros(2), p0)
    ref = kf.loglike()
    model = LinearSDE(drift, diffusion, obs, noise)
    ll = kalmanad.log_likelihood(model, np.arange(len(y), dtype=float), y, method=method)
    assert _rel(ll, ref) < 1e-8


# ---------------------------------------------------------------------------- tinygp


def _tinygp_kernels():
    q = pytest.importorskip("tinygp.kernels.quasisep")
    return {
        "exp": q.Exp(scale=1.7, sigma=1.3),
        "matern32": q.Matern32(scale=0.8, sigma=0.9),
        "matern52": q.Matern52(scale=1.2, sigma=1.1),
        "sho_underdamped": q.SHO(omega=2.0, quality=3.0, sigma=0.7),
        "sho_overdamped": q.SHO(omega=1.5, quality=0.3, sigma=1.2),
        "carma21": q.CARMA.init(alpha=jnp.array([0.5, 1.2]), beta=jnp.array([1.0, 0.4])),
    }


def _sde_of_kernel(kernel, noise_var):
    """The LinearSDE whose stationary output covariance is tinygp's kernel:
    A = design matrix, P∞ = stationary covariance, GGᵀ = -(A P∞ + P∞ Aᵀ), H = observation."""
    a = np.asarray(kernel.design_matrix(), float)
    p = np.asarray(kernel.stationary_covariance(), float)
    h = np.asarray(kernel.observation_model(jnp.zeros(())), float).reshape(1, -1)
    q = -(a @ p + p @ a.T)
    return LinearSDE(a, 0.5 * (q + q.T), h, [[noise_var]])


def _irregular(seed=0, n=120):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 30, n))
    y = np.sin(t) + 0.5 * rng.standard_normal(n)
    return t, y


@pytest.mark.parametrize(
    "name", ["exp", "matern32", "matern52", "sho_underdamped", "sho_overdamped", "carma21"]
)
@pytest.mark.parametrize("method", METHODS)
def test_log_likelihood_matches_tinygp_quasisep(name, method):
    from tinygp import GaussianProcess

    kernel = _tinygp_kernels()[name]
    t, y = _irregular()
    noise = 0.3
    ref = GaussianProcess(kernel, t, diag=noise).log_probability(y)
    ll = kalmanad.log_likelihood(_sde_of_kernel(kernel, noise), t, y[:, None], method=method)
    assert _rel(ll, ref) < 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_gradient_matches_tinygp_matern32(method):
    from tinygp import GaussianProcess
    from tinygp.kernels.quasisep import Matern32

    t, y = _irregular(seed=3, n=80)

    def ref(params):
        scale, sigma, noise = params
        return GaussianProcess(Matern32(scale=scale, sigma=sigma), t, diag=noise).log_probability(y)

    def ours(params):
        scale, sigma, noise = params
        lam = jnp.sqrt(3.0) / scale
        a = jnp.array([[0.0, 1.0], [-(lam**2), -2 * lam]])
        q = 4 * lam**3 * sigma**2
        model = LinearSDE(
            a, jnp.array([[0.0, 0.0], [0.0, q]]), jnp.array([[1.0, 0.0]]), noise * jnp.eye(1)
        )
        return kalmanad.log_likelihood(model, t, y[:, None], method=method)

    p = jnp.array([0.9, 1.1, 0.25])
    assert _rel(ours(p), ref(p)) < 1e-9
    np.testing.assert_allclose(jax.grad(ours)(p), jax.grad(ref)(p), rtol=1e-7)


# ------------------------------------------------------------------ dense reference


def _dense_loglik(drift, diffusion, obs, noise, c, d, m0, p0, times, y):
    """log N(y_obs; μ, Σ) with the joint moments built from scipy's expm (Van Loan)."""
    n = drift.shape[0]
    T = len(times)
    means, covs, trans = [], [], []
    m, p = m0, p0
    for k in range(T):
        dt = 0.0 if k == 0 else times[k] - times[k - 1]
        big = np.zeros((2 * n + 1, 2 * n + 1))
        big[:n, :n] = -drift
        big[:n, n : 2 * n] = diffusion
        big[n : 2 * n, n : 2 * n] = drift.T
        f = scipy.linalg.expm(big * dt)
        ad = f[n : 2 * n, n : 2 * n].T
        qd = ad @ f[:n, n : 2 * n]
        aug = np.zeros((n + 1, n + 1))
        aug[:n, :n] = drift
        aug[:n, n] = c
        bd = scipy.linalg.expm(aug * dt)[:n, n]
        m = ad @ m + bd
        p = ad @ p @ ad.T + 0.5 * (qd + qd.T)
        means.append(m)
        covs.append(p)
        trans.append(ad)
    # Cov(x_j, x_i) = A_j ... A_{i+1} P_i for j >= i.
    big_cov = np.zeros((T * n, T * n))
    for i in range(T):
        phi = np.eye(n)
        for j in range(i, T):
            if j > i:
                phi = trans[j] @ phi
            block = phi @ covs[i]
            big_cov[j * n : (j + 1) * n, i * n : (i + 1) * n] = block
            big_cov[i * n : (i + 1) * n, j * n : (j + 1) * n] = block.T
    hbig = np.kron(np.eye(T), obs)
    mu = hbig @ np.concatenate(means) + np.tile(d, T)
    sig = hbig @ big_cov @ hbig.T + np.kron(np.eye(T), noise)
    yv = y.reshape(-1)
    ok = np.isfinite(yv)
    return scipy.stats.multivariate_normal(mu[ok], sig[np.ix_(ok, ok)]).logpdf(yv[ok])


@pytest.mark.parametrize("method", METHODS)
def test_dense_gaussian_reference_with_intercepts_missing_and_ties(method):
    rng = np.random.default_rng(7)
    drift = np.array([[-0.5, 1.0, 0.0], [-1.0, -0.3, 0.2], [0.0, 0.1, 0.0]])  # singular-ish
    g = rng.standard_normal((3, 3)) * 0.5
    diffusion = g @ g.T
    obs = rng.standard_normal((2, 3))
    noise = np.array([[0.3, 0.05], [0.05, 0.2]])
    c = np.array([0.2, -0.1, 0.05])
    d = np.array([1.0, -2.0])
    m0 = np.array([0.5, 0.0, -0.5])
    p0 = np.diag([1.0, 0.5, 2.0])
    times = np.sort(rng.uniform(0, 8, 14))
    times[5] = times[4]  # a tie: a zero step
    y = rng.standard_normal((14, 2))
    y[3, 0] = np.nan
    y[9] = np.nan
    ref = _dense_loglik(drift, diffusion, obs, noise, c, d, m0, p0, times, y)
    model = LinearSDE(
        drift,
        diffusion,
        obs,
        noise,
        drift_intercept=c,
        observation_intercept=d,
        initial_mean=m0,
        initial_cov=p0,
    )
    res = kalmanad.kalman_filter(model, times, y, method=method)
    assert _rel(res.log_likelihood, ref) < 1e-9
    np.testing.assert_allclose(res.pointwise_log_likelihood.sum(), res.log_likelihood, rtol=1e-12)
    assert res.pointwise_log_likelihood[9] == 0.0


# ----------------------------------------------------------- panels, inputs, validity


@pytest.mark.slow
def test_panel_of_subjects_with_ragged_padding_equals_separate_fits():
    drift, diffusion, obs, noise, y = _var_data(seed=2, T=30)
    model = LinearSDE(drift, diffusion, obs, noise)
    rng = np.random.default_rng(0)
    t1 = np.cumsum(rng.exponential(0.7, 30))
    t2 = np.cumsum(rng.exponential(1.3, 22))
    y2 = y[:22] + 1.0
    ll1 = kalmanad.log_likelihood(model, t1, y)
    ll2 = kalmanad.log_likelihood(model, t2, y2)
    # Pad subject 2 with its last time and NaN rows.
    times = np.stack([t1, np.concatenate([t2, np.full(8, t2[-1])])])
    ys = np.stack([y, np.concatenate([y2, np.full((8, 3), np.nan)])])
    lls = kalmanad.log_likelihood(model, times, ys)
    np.testing.assert_allclose(lls, [ll1, ll2], rtol=1e-12)
    # A batched model (one per subject) gives the same numbers.
    batched = jax.vmap(lambda s: LinearSDE(drift * s, diffusion, obs, noise))(jnp.ones(2))
    np.testing.assert_allclose(kalmanad.log_likelihood(batched, times, ys), [ll1, ll2], rtol=1e-12)


@pytest.mark.slow
def test_invalid_parameters_give_minus_inf_and_finite_gradients():
    t, y = _irregular(n=40)

    def ll(theta):
        # theta > 0 makes the drift unstable: a stationary start is then invalid.
        model = LinearSDE(jnp.array([[theta]]), jnp.eye(1), jnp.eye(1), 0.1 * jnp.eye(1))
        return kalmanad.log_likelihood(model, t, y[:, None])

    f = jax.jit(jax.value_and_grad(ll))
    v, g = f(0.5)
    assert v == -jnp.inf
    assert jnp.isfinite(g)
    v, g = f(-0.5)
    assert jnp.isfinite(v) and jnp.isfinite(g)


def test_eager_calls_run_one_compiled_function_with_the_same_results():
    """An eager ``kalman_filter`` runs its whole computation as one compiled function
    (the step grid found outside it); its results are those of the inner function with
    the same grid, and bad concrete input still gets the uncompiled path's error."""
    from kalmanad import statespace

    rng = np.random.default_rng(5)
    model = LinearSDE([[-0.7]], [[0.4]], [[1.0], [0.5]], np.diag([0.2, 0.1]), [0.3], [0.1, -0.2])
    t = np.cumsum(rng.exponential(0.6, 25))
    y = rng.standard_normal((25, 2))
    y[rng.random((25, 2)) < 0.1] = np.nan
    res = kalmanad.kalman_filter(model, t, y)
    grid = statespace._observed_grid(model, t, ())
    opts = {"method": "sequential", "discretization": "van_loan", "checkpoint": None}
    # (the reference jitted by the test, only to keep it fast)
    uncompiled = jax.jit(lambda m: statespace._kalman_filter(m, t, y, None, grid, **opts))
    ref = uncompiled(model)
    for x, r in zip(res, ref, strict=True):
        if r is not None:
            np.testing.assert_allclose(x, r, rtol=1e-12, atol=1e-14)
    # The same numbers with the times and y as lists, and under grad.
    np.testing.assert_allclose(
        kalmanad.log_likelihood(model, list(t), y.tolist()), ref.log_likelihood, rtol=1e-12
    )
    g = jax.grad(lambda m: kalmanad.log_likelihood(m, t, y))(model)
    g_ref = jax.jit(jax.grad(lambda m: uncompiled(m).log_likelihood))(model)
    for x, r in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(x, r, rtol=1e-10, atol=1e-12)

    # And the numbers are right: the dense joint Gaussian of the observations (scipy's
    # expm, stationary start) and central differences of it in the drift.
    def dense(a):
        drift, c = np.array([[a]]), np.array([0.3])
        m0, p0 = -c / a, np.array([[0.4 / (-2 * a)]])
        obs, noise, d = np.array([[1.0], [0.5]]), np.diag([0.2, 0.1]), np.array([0.1, -0.2])
        return _dense_loglik(drift, np.array([[0.4]]), obs, noise, c, d, m0, p0, t, y)

    np.testing.assert_allclose(res.log_likelihood, dense(-0.7), rtol=1e-10)
    fd = (dense(-0.7 + 1e-6) - dense(-0.7 - 1e-6)) / 2e-6
    np.testing.assert_allclose(g.drift[0, 0], fd, rtol=1e-6)
    # A non-finite result from concrete input is re-run uncompiled, which names the problem.
    y_bad = np.array(y)
    y_bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"y has an infinite entry at index \(3, 1\)"):
        kalmanad.kalman_filter(model, t, y_bad)


def test_eager_smoother_and_simulation_are_compiled_with_the_same_results():
    """``rts_smoother`` and ``simulate`` also run eagerly as one compiled function: the
    results equal their inner functions' on the same grid, and non-finite inputs still
    get the uncompiled path's error."""
    from kalmanad import statespace

    rng = np.random.default_rng(6)
    model = LinearSDE(
        [[-0.7]], [[0.4]], [[1.0]], [[0.2]], input_effect=[[0.5]], observation_intercept=[0.1]
    )
    t = np.cumsum(rng.exponential(0.6, 20))
    u = rng.standard_normal((20, 1))
    y = rng.standard_normal((20, 1))
    grid = statespace._observed_grid(model, t, ())
    sm = kalmanad.rts_smoother(model, t, y, u)
    ref = jax.jit(
        lambda m: statespace._rts_smoother(
            m, t, y, u, grid, method="sequential", discretization="van_loan"
        )
    )(model)
    for x, r in zip(sm, ref, strict=True):
        np.testing.assert_allclose(x, r, rtol=1e-12, atol=1e-14)
    key = jax.random.key(2)
    sim = kalmanad.simulate(model, t, key, u, sample_shape=(3,))
    assert sim.observations.shape == (3, 20, 1)
    ref = jax.jit(
        lambda m: statespace._simulate(
            m, t, key, u, grid, sample_shape=(3,), discretization="van_loan"
        )
    )(model)
    for x, r in zip(sim, ref, strict=True):
        np.testing.assert_allclose(x, r, rtol=1e-12, atol=1e-14)
    u_bad = u.copy()
    u_bad[4, 0] = np.nan
    with pytest.raises(ValueError, match="inputs"):
        kalmanad.simulate(model, t, key, u_bad)
    with pytest.raises(ValueError, match="inputs"):
        kalmanad.rts_smoother(model, t, y, u_bad)


def test_models_batched_over_two_dims_match_one_by_one():
    """One model per subject on a (2, 3) grid of subjects, each with its own times:
    every subject discretises its own steps, and the results equal separate calls."""
    rng = np.random.default_rng(8)
    rates = rng.uniform(0.3, 2.0, (2, 3))
    times = np.cumsum(rng.exponential(0.5, (2, 3, 12)), axis=-1)
    y = rng.standard_normal((2, 3, 12, 1))

    def make(rate):
        return LinearSDE(
            -rate[None, None], 0.5 * jnp.ones((1, 1)), jnp.ones((1, 1)), 0.1 * jnp.eye(1)
        )

    batched = jax.vmap(jax.vmap(make))(jnp.asarray(rates))
    lls = kalmanad.log_likelihood(batched, times, y)
    assert lls.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            ref = kalmanad.log_likelihood(make(jnp.asarray(rates[i, j])), times[i, j], y[i, j])
            np.testing.assert_allclose(lls[i, j], ref, rtol=1e-12)


def test_unstable_drift_with_stationary_start_is_a_clear_error():
    with pytest.raises(ValueError, match="stable"):
        LinearSDE([[0.3]], [[1.0]], [[1.0]], [[0.1]])


def test_bad_y_shape_and_unsorted_times_raise():
    model = LinearSDE([[-1.0]], [[1.0]], [[1.0]], [[0.1]])
    with pytest.raises(ValueError, match="y must have shape"):
        kalmanad.log_likelihood(model, np.arange(5.0), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="non-decreasing"):
        kalmanad.log_likelihood(model, np.array([0.0, 2.0, 1.0]), np.zeros((3, 1)))


@pytest.mark.slow
def test_simulate_then_filter_moments():
    """Exact simulation: the sample mean and variance of the draws match the filter's
    prior predictive moments (all-missing data gives the marginals)."""
    model = LinearSDE(
        [[-0.7]],
        [[0.9]],
        [[1.0]],
        [[0.05]],
        drift_intercept=[0.7],
        initial_mean=[3.0],
        initial_cov=[[0.2]],
    )
    times = np.array([0.0, 0.3, 1.0, 2.5, 6.0])
    sim = kalmanad.simulate(model, times, jax.random.PRNGKey(0), sample_shape=(20000,))
    assert sim.observations.shape == (20000, 5, 1)
    res = kalmanad.kalman_filter(model, times, np.full((5, 1), np.nan))
    mean = res.predicted_mean[:, 0]
    var = res.predicted_cov[:, 0, 0] + 0.05
    np.testing.assert_allclose(sim.observations[..., 0].mean(0), mean, atol=0.03)
    np.testing.assert_allclose(sim.observations[..., 0].var(0), var, rtol=0.05)


def test_forecast_matches_closed_form_ou():
    theta, mu, s2, r = 0.8, 1.5, 0.6, 0.1
    model = LinearSDE([[-theta]], [[s2]], [[1.0]], [[r]], drift_intercept=[theta * mu])
    times = np.array([0.0, 1.0, 2.0])
    y = np.array([[1.0], [2.0], [1.7]])
    res = kalmanad.kalman_filter(model, times, y)
    m_last, p_last = float(res.filtered_mean[-1, 0]), float(res.filtered_cov[-1, 0, 0])
    new = np.array([2.5, 4.0])
    fc = kalmanad.forecast(model, times, y, new)
    for k, t in enumerate(new):
        dt = t - times[-1]
        e = np.exp(-theta * dt)
        mean = mu + (m_last - mu) * e
        var = p_last * e**2 + s2 / (2 * theta) * (1 - e**2)
        np.testing.assert_allclose(fc.state_mean[k, 0], mean, rtol=1e-12)
        np.testing.assert_allclose(fc.state_cov[k, 0, 0], var, rtol=1e-12)
        np.testing.assert_allclose(fc.observation_cov[k, 0, 0], var + r, rtol=1e-12)


@pytest.mark.slow
def test_rts_smoother_matches_dense_conditioning():
    rng = np.random.default_rng(1)
    drift = np.array([[-0.4, 0.8], [-0.8, -0.4]])
    diffusion = np.diag([0.2, 0.5])
    obs = np.array([[1.0, 0.0]])
    noise = np.array([[0.1]])
    times = np.sort(rng.uniform(0, 6, 9))
    y = rng.standard_normal((9, 1))
    y[4] = np.nan
    model = LinearSDE(drift, diffusion, obs, noise)
    sm = kalmanad.rts_smoother(model, times, y)
    # Dense: joint Gaussian of (x_1..x_T, y_obs), condition on y_obs.
    n, T = 2, 9
    p0 = scipy.linalg.solve_continuous_lyapunov(drift, -diffusion)
    cov = np.zeros((T * n, T * n))
    for i in range(T):
        for j in range(i, T):
            blk = scipy.linalg.expm(drift * (times[j] - times[i])) @ p0
            cov[j * n : (j + 1) * n, i * n : (i + 1) * n] = blk
            cov[i * n : (i + 1) * n, j * n : (j + 1) * n] = blk.T
    hbig = np.kron(np.eye(T), obs)
    ok = np.isfinite(y[:, 0])
    h = hbig[ok]
    syy = h @ cov @ h.T + noise[0, 0] * np.eye(ok.sum())
    gain = cov @ h.T @ np.linalg.inv(syy)
    post_mean = gain @ y[ok, 0]
    post_cov = cov - gain @ h @ cov
    np.testing.assert_allclose(sm.smoothed_mean.reshape(-1), post_mean, atol=1e-10)
    diag_blocks = np.stack([post_cov[k * n : (k + 1) * n, k * n : (k + 1) * n] for k in range(T)])
    np.testing.assert_allclose(sm.smoothed_cov, diag_blocks, atol=1e-10)


# ------------------------------------------------------------ stiff drifts, long gaps


def _stiff_model(rate=3000.0):
    drift = jnp.array([[-rate, 1.0], [0.0, -rate]])
    return LinearSDE(drift, jnp.eye(2), jnp.eye(2), 0.1 * jnp.eye(2))


def test_stiff_drift_over_long_gaps_is_a_named_error_suggesting_stationary():
    """‖A‖Δ = 9e6: the Van Loan routes overflow. The filter, smoother and simulation
    name the step, ‖A‖Δ and the remedy, not an internal DiscreteSSM entry; simulate
    raises too, rather than returning NaN."""
    model = _stiff_model()
    t = np.arange(5) * 3000.0
    y = np.random.default_rng(0).standard_normal((5, 2))
    message = (
        r"'van_loan' discretisation of the drift over the step of Δ = 3000 "
        r"\(times\[1\] - times\[0\]\) overflowed: ‖A‖Δ = 9e\+06, beyond the longest step "
        r"the Van Loan routes cover for this drift \(Δ ≈ 512\)\. The drift is stable "
        r"\(stiff\): pass discretization='stationary'.*rescale time"
    )
    with pytest.raises(ValueError, match=message):
        kalmanad.log_likelihood(model, t, y)
    with pytest.raises(ValueError, match=message):
        kalmanad.rts_smoother(model, t, y)
    with pytest.raises(ValueError, match=message):
        kalmanad.simulate(model, t, jax.random.key(0))
    with pytest.raises(ValueError, match=r"'van_loan_expm' discretisation.*Δ = 3000"):
        kalmanad.log_likelihood(model, t, y, discretization="van_loan_expm")
    # The covered range is what the message says: a step of 511 is fine, 513 is not.
    assert np.isfinite(kalmanad.log_likelihood(model, np.array([0.0, 511.0]), y[:2]))
    with pytest.raises(ValueError, match=r"Δ = 513 .*Δ ≈ 512"):
        kalmanad.log_likelihood(model, np.array([0.0, 513.0]), y[:2])


def test_stiff_drift_over_long_gaps_with_the_stationary_discretisation_is_exact():
    """Over gaps of 3000 the state forgets everything (e^{AΔ} underflows to 0), so the
    exact log-likelihood is that of independent N(0, P∞ + R) draws; the stationary
    discretisation gives it, with finite gradients, for every filter, and simulates."""
    t = np.arange(6) * 3000.0
    y = np.random.default_rng(1).standard_normal((6, 2))
    drift = np.array([[-3000.0, 1.0], [0.0, -3000.0]])
    p_inf = scipy.linalg.solve_continuous_lyapunov(drift, -np.eye(2))
    ref = scipy.stats.multivariate_normal(np.zeros(2), p_inf + 0.1 * np.eye(2)).logpdf(y).sum()
    for method in ("sequential", "sqrt", "parallel"):

        def ll(rate, method=method):
            return kalmanad.log_likelihood(
                _stiff_model(rate), t, y, method=method, discretization="stationary"
            )

        v, g = jax.value_and_grad(ll)(3000.0)
        np.testing.assert_allclose(v, ref, rtol=1e-12)
        assert np.isfinite(g)
    sim = kalmanad.simulate(_stiff_model(), t, jax.random.key(0), discretization="stationary")
    assert np.all(np.isfinite(sim.observations))


def test_overflowing_discretisation_names_the_subject_and_an_unstable_drift():
    # One stiff subject of two: the message names it.
    batched = jax.vmap(_stiff_model)(jnp.array([1.0, 3000.0]))
    t = np.arange(3) * 3000.0
    with pytest.raises(ValueError, match=r"subject \(1,\), times\[1\] - times\[0\]"):
        kalmanad.log_likelihood(batched, t, np.zeros((3, 2)))
    # An unstable drift (diffuse start) whose e^{AΔ} overflows.
    model = LinearSDE([[0.5]], [[1.0]], [[1.0]], [[0.1]], initial_state="diffuse")
    with pytest.raises(ValueError, match=r"Δ = 2000 .*not stable .*real part 0\.5.*shorten"):
        kalmanad.log_likelihood(model, np.array([0.0, 2000.0]), np.zeros((2, 1)))


def test_overflowing_discretisation_inside_numpyro_runs_stays_non_finite():
    """Where invalid values must not raise (a NumPyro handler, deferred_value_errors),
    the stiff model gives -inf and NaN draws, as before."""
    from kalmanad._validation import deferred_value_errors

    model = _stiff_model()
    t = np.arange(4) * 3000.0
    with deferred_value_errors():
        assert kalmanad.log_likelihood(model, t, np.zeros((4, 2))) == -np.inf
        sim = kalmanad.simulate(model, t, jax.random.key(0))
    assert np.all(np.isnan(sim.observations[1:]))
    numpyro = pytest.importorskip("numpyro")

    def numpyro_model():
        ll = kalmanad.log_likelihood(model, t, np.zeros((4, 2)))
        numpyro.factor("ll", ll)

    tr = numpyro.handlers.trace(numpyro.handlers.seed(numpyro_model, 0)).get_trace()
    assert tr["ll"]["fn"].log_factor == -np.inf
