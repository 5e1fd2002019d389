"""Exact diffuse smoothing, forecasting and simulation, consistent with the exact diffuse
filter: statsmodels' exact diffuse smoother (Nile local level, local linear trend),
the dense flat-prior posterior (cross covariances, partial diffuse masks, missing
entries), and the front ends (``rts_smoother``, ``forecast``, ``simulate``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanad
from kalmanad import models
from kalmanad.filter.smoother import diffuse_smoother_ssm
from kalmanad.model import LinearSDE
from kalmanad.ssm import DiscreteSSM

sm = pytest.importorskip("statsmodels.api")

S2E, S2L, S2S = 15099.0, 1469.1, 10.0


def _nile(missing: bool = False):
    y = sm.datasets.nile.load_pandas().data["volume"].to_numpy(float).copy()
    if missing:
        y[[3, 4, 40, 41, 42, 99]] = np.nan
    return y


def _llt_ssm(T, s2e, s2l, s2s):
    """statsmodels' 'lltrend' as a DiscreteSSM; step 0 is the start (A = I, Q = 0)."""
    A = np.broadcast_to(np.array([[1.0, 1.0], [0.0, 1.0]]), (T, 2, 2)).copy()
    A[0] = np.eye(2)
    Q = np.broadcast_to(np.diag([s2l, s2s]), (T, 2, 2)).copy()
    Q[0] = 0.0
    return DiscreteSSM(
        A,
        np.zeros((T, 2)),
        Q,
        np.broadcast_to([[1.0, 0.0]], (T, 1, 2)),
        np.zeros((T, 1)),
        np.full((T, 1, 1), s2e),
        np.zeros(2),
        np.zeros((2, 2)),
    )


def _local_level(s2e=S2E, s2l=S2L):
    """The continuous-time local level; yearly steps give statsmodels' 'llevel'."""
    return LinearSDE([[0.0]], [[s2l]], [[1.0]], [[s2e]], initial_state="diffuse")


@pytest.mark.parametrize("missing", [False, True])
def test_nile_local_level_matches_statsmodels(missing):
    y = _nile(missing)
    ref = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True).smooth([S2E, S2L])
    times = 1871.0 + np.arange(len(y))
    got = kalmanad.rts_smoother(_local_level(), times, y[:, None])
    np.testing.assert_allclose(got.smoothed_mean[:, 0], ref.smoothed_state[0], rtol=1e-8)
    np.testing.assert_allclose(got.smoothed_cov[:, 0, 0], ref.smoothed_state_cov[0, 0], rtol=1e-8)
    # statsmodels' smoothed_state_autocov[..., t] is Cov(x_t, x_{t+1}); it leaves the
    # diffuse step t = 0 at zero.
    np.testing.assert_allclose(
        got.smoothed_cross_cov[1:, 0, 0], ref.smoothed_state_autocov[0, 0, 1:-1], rtol=1e-8
    )
    assert got.gain is None


@pytest.mark.parametrize("s2l", [S2L, 0.0])  # 0: singular process noise (smooth trend)
def test_local_linear_trend_matches_statsmodels(s2l):
    y = _nile(missing=True)
    ref = sm.tsa.UnobservedComponents(y, "lltrend", use_exact_diffuse=True).smooth([S2E, s2l, S2S])
    got = diffuse_smoother_ssm(_llt_ssm(len(y), S2E, s2l, S2S), y[:, None], np.array([True, True]))
    scale = np.abs(ref.smoothed_state_cov).max()
    np.testing.assert_allclose(got.smoothed_mean, ref.smoothed_state.T, rtol=1e-8)
    np.testing.assert_allclose(
        got.smoothed_cov, ref.smoothed_state_cov.transpose(2, 0, 1), rtol=1e-8, atol=1e-10 * scale
    )


def _dense_posterior(ssm, y, mask):
    """Mean and covariance of (x_0..x_{T-1}) | y from the joint precision, with a flat
    prior on the masked components of x_0 (step 0 must be A = I, Q = 0)."""
    A, b, Q, H, d, R, m0, P0 = (np.asarray(x) for x in ssm)
    T, n = b.shape
    N = T * n
    J, h = np.zeros((N, N)), np.zeros(N)

    def sel(k):
        S = np.zeros((n, N))
        S[:, k * n : (k + 1) * n] = np.eye(n)
        return S

    keep = ~mask
    S0 = sel(0)[keep]
    P0i = np.linalg.inv(P0[np.ix_(keep, keep)])
    J += S0.T @ P0i @ S0
    h += S0.T @ P0i @ (m0 + b[0])[keep]
    for k in range(1, T):
        S = sel(k) - A[k] @ sel(k - 1)
        Qi = np.linalg.inv(Q[k])
        J += S.T @ Qi @ S
        h += S.T @ Qi @ b[k]
    for k in range(T):
        o = ~np.isnan(y[k])
        if o.any():
            Hk = H[k][o] @ sel(k)
            Ri = np.linalg.inv(R[k][np.ix_(o, o)])
            J += Hk.T @ Ri @ Hk
            h += Hk.T @ Ri @ (y[k][o] - d[k][o])
    C = np.linalg.inv(J)
    return (C @ h).reshape(T, n), C


@pytest.mark.parametrize("mask", [[True, True, True], [True, False, True]])
def test_matches_dense_flat_prior_posterior(mask):
    """Correlated noise over two channels, missing entries and rows inside the diffuse
    period, time-varying A and Q: means, covariances and lag-one cross covariances."""
    rng = np.random.default_rng(0)
    T, n, m = 7, 3, 2
    A = np.stack(
        [np.eye(n)] + [0.8 * np.eye(n) + 0.2 * rng.normal(size=(n, n)) for _ in range(T - 1)]
    )
    Q = np.zeros((T, n, n))
    for k in range(1, T):
        g = rng.normal(size=(n, n))
        Q[k] = g @ g.T / n + 0.2 * np.eye(n)
    H = rng.normal(size=(T, m, n))
    R = np.broadcast_to(np.array([[0.4, 0.1], [0.1, 0.2]]), (T, m, m)).copy()
    ssm = DiscreteSSM(
        A,
        0.1 * rng.normal(size=(T, n)),
        Q,
        H,
        0.1 * rng.normal(size=(T, m)),
        R,
        rng.normal(size=n),
        np.diag([0.5, 0.7, 0.9]),
    )
    y = rng.normal(size=(T, m))
    y[0, 1] = y[2, 0] = y[5, 0] = np.nan
    y[3] = np.nan
    mask = np.array(mask)
    got = diffuse_smoother_ssm(ssm, y, mask)
    mean, C = _dense_posterior(ssm, y, mask)
    np.testing.assert_allclose(got.smoothed_mean, mean, atol=1e-11)
    for k in range(T):
        blk = C[k * n : (k + 1) * n, k * n : (k + 1) * n]
        np.testing.assert_allclose(got.smoothed_cov[k], blk, atol=1e-11)
    for k in range(T - 1):
        blk = C[k * n : (k + 1) * n, (k + 1) * n : (k + 2) * n]
        np.testing.assert_allclose(got.smoothed_cross_cov[k], blk, atol=1e-11)


def test_improper_posterior_is_nan():
    """One observation cannot pin down a level and a slope: the posterior is improper."""
    y = np.full((5, 1), np.nan)
    y[2] = 1.0
    got = diffuse_smoother_ssm(_llt_ssm(5, 1.0, 1.0, 1.0), y, np.array([True, True]))
    assert np.all(np.isnan(got.smoothed_mean)) and np.all(np.isnan(got.smoothed_cov))


def test_bad_mask_is_a_named_error():
    with pytest.raises(ValueError, match=r"diffuse_mask must be a boolean array of shape \(n,\)"):
        diffuse_smoother_ssm(_llt_ssm(5, 1.0, 1.0, 1.0), np.ones((5, 1)), np.array([1, 1]))


@pytest.mark.parametrize("diffuse", [True, False])
def test_front_end_panel_is_each_subject_smoothed(diffuse):
    """A panel (leading subject dim) is smoothed subject by subject, for the exact
    diffuse smoother and for the RTS smoother."""
    y = _nile()[:30]
    times = np.arange(30.0)
    ys = np.stack([y, y[::-1]])[..., None]
    model = _local_level() if diffuse else models.ou(0.3, 150.0, 900.0, 120.0)
    both = kalmanad.rts_smoother(model, times, ys)
    for s in range(2):
        one = kalmanad.rts_smoother(model, times, ys[s])
        np.testing.assert_allclose(both.smoothed_mean[s], one.smoothed_mean, rtol=1e-12)
        np.testing.assert_allclose(both.smoothed_cov[s], one.smoothed_cov, rtol=1e-12)


def test_forecast_matches_statsmodels_exact_diffuse():
    y = _nile()
    res = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True).smooth([S2E, S2L])
    ref = res.get_forecast(3)
    times = 1871.0 + np.arange(len(y))
    fc = kalmanad.forecast(_local_level(), times, y[:, None], times[-1] + np.arange(1.0, 4.0))
    np.testing.assert_allclose(fc.observation_mean[:, 0], ref.predicted_mean, rtol=1e-10)
    np.testing.assert_allclose(fc.observation_cov[:, 0, 0], ref.var_pred_mean, rtol=1e-10)


def test_forecast_before_the_diffuse_period_ends_is_an_error():
    model = LinearSDE(
        [[0.0, 1.0], [0.0, 0.0]],
        np.diag([0.0, 1.0]),
        [[1.0, 0.0]],
        [[0.1]],
        initial_state="diffuse",
    )
    with pytest.raises(ValueError, match="diffuse initial state"):
        kalmanad.forecast(model, np.array([0.0]), np.array([[1.0]]), np.array([1.0]))


def test_simulate_from_a_diffuse_start_is_conditional_on_the_initial_mean():
    """A diffuse start has no distribution: the paths start at x(t_0) = initial_mean,
    exactly the draws of a known start with that mean and zero covariance."""
    model = _local_level().replace(initial_mean=jnp.array([1100.0]))
    times = np.arange(5.0)
    sim = kalmanad.simulate(model, times, jax.random.key(0), sample_shape=(3,))
    np.testing.assert_array_equal(sim.states[:, 0, 0], 1100.0)
    known = model.replace(initial_state="known", initial_cov=jnp.zeros((1, 1)))
    ref = kalmanad.simulate(known, times, jax.random.key(0), sample_shape=(3,))
    np.testing.assert_array_equal(sim.observations, ref.observations)


def test_float32():
    y = _nile()
    ref = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True).smooth([S2E, S2L])
    model = models.local_level(np.float32(np.sqrt(S2L)), np.float32(np.sqrt(S2E)))
    got = kalmanad.rts_smoother(model, np.arange(100, dtype=np.float32), y[:, None].astype("f4"))
    assert got.smoothed_mean.dtype == np.float32
    np.testing.assert_allclose(got.smoothed_mean[:, 0], ref.smoothed_state[0], rtol=2e-6)
    np.testing.assert_allclose(got.smoothed_cov[:, 0, 0], ref.smoothed_state_cov[0, 0], rtol=2e-5)
