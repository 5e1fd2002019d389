"""Tests of kalmanad.filter on hand-made DiscreteSSMs (no dependence on discretize.py).

References: a dense joint Gaussian of all observations (scipy), statsmodels'
Kalman filter (Nile local level, VAR(1) with measurement error, exact diffuse),
dynamax's LGSSM filter and smoother, and Gaussian conditioning for the smoother.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from _helpers import random_ssm, to_jax
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from kalmanad.filter import (
    METHODS,
    FilterResult,
    filter_ssm,
    forecast_ssm,
    rts_smoother_ssm,
    simulate_ssm,
)
from kalmanad.ssm import DiscreteSSM

# --------------------------------------------------------------------------- helpers


def dense_state_moments(ssm):
    """Mean (T, n) and joint covariance (T n, T n) of all states."""
    A, b, Q, _, _, _, m0, P0 = [np.asarray(x, np.float64) for x in ssm]
    T, n = b.shape
    mx = np.zeros((T, n))
    V = np.zeros((T * n, T * n))
    m_prev, P_prev = m0, P0
    for k in range(T):
        mx[k] = A[k] @ m_prev + b[k]
        P = A[k] @ P_prev @ A[k].T + Q[k]
        sl = slice(k * n, (k + 1) * n)
        V[sl, sl] = P
        for j in range(k):
            sj = slice(j * n, (j + 1) * n)
            V[sl, sj] = A[k] @ V[(k - 1) * n : k * n, sj]
            V[sj, sl] = V[sl, sj].T
        m_prev, P_prev = mx[k], P
    return mx, V


def dense_joint(ssm):
    """Mean and covariance of the stacked (states, observations)."""
    _, b, _, H, d, R, _, _ = [np.asarray(x, np.float64) for x in ssm]
    T, n = b.shape
    m = d.shape[1]
    mx, V = dense_state_moments(ssm)
    Hb = scipy.linalg.block_diag(*H)
    Rb = scipy.linalg.block_diag(*R)
    my = Hb @ mx.reshape(-1) + d.reshape(-1)
    Syy = Hb @ V @ Hb.T + Rb
    Sxy = V @ Hb.T
    return mx.reshape(-1), V, my, Syy, Sxy, (T, n, m)


def dense_loglik(ssm, y):
    _, _, my, Syy, _, _ = dense_joint(ssm)
    yy = np.asarray(y, np.float64).reshape(-1)
    o = ~np.isnan(yy)
    if not o.any():
        return 0.0
    return scipy.stats.multivariate_normal(my[o], Syy[np.ix_(o, o)]).logpdf(yy[o])


def dense_condition(ssm, y, upto=None):
    """E and Cov of all states given the observations of steps < ``upto`` (all if None)."""
    mx, V, my, Syy, Sxy, (T, n, _) = dense_joint(ssm)
    yy = np.array(y, np.float64)
    if upto is not None:
        yy[upto:] = np.nan
    o = ~np.isnan(yy.reshape(-1))
    if not o.any():
        return mx.reshape(T, n), V
    G = np.linalg.solve(Syy[np.ix_(o, o)], Sxy[:, o].T).T
    mean = mx + G @ (yy.reshape(-1)[o] - my[o])
    cov = V - G @ Sxy[:, o].T
    return mean.reshape(T, n), cov


def block(cov, k, n):
    return cov[k * n : (k + 1) * n, k * n : (k + 1) * n]


def with_missing(rng, y, frac=0.25, full_rows=()):
    y = np.array(y)
    y[rng.random(y.shape) < frac] = np.nan
    for k in full_rows:
        y[k] = np.nan
    return y


def loglik_fn(y, method, **kw):
    return lambda s: filter_ssm(s, y, method, validate=False, **kw).log_likelihood


# ---------------------------------------------------------------- dense reference


@pytest.mark.parametrize("method", METHODS)
def test_dense_reference_with_missing_and_zero_steps(method):
    rng = np.random.default_rng(0)
    T, n, m = 8, 3, 2
    ssm = random_ssm(rng, T, n, m, zero_steps=(0, 4))
    y = rng.normal(size=(T, m))
    y[1, 0] = np.nan
    y[5] = np.nan
    y[6, 1] = np.nan
    r = filter_ssm(ssm, y, method)
    ref = dense_loglik(ssm, y)
    np.testing.assert_allclose(float(r.log_likelihood), ref, rtol=1e-9)
    # pointwise = increments of the dense log-likelihood of growing prefixes
    prefix = [0.0] + [
        dense_loglik(ssm, np.where(np.arange(T)[:, None] <= k, y, np.nan)) for k in range(T)
    ]
    np.testing.assert_allclose(
        np.asarray(r.pointwise_log_likelihood), np.diff(prefix), rtol=1e-9, atol=1e-10
    )
    assert float(r.pointwise_log_likelihood[5]) == 0.0
    # predicted / filtered moments = dense Gaussian conditioning
    for k in range(T):
        mp, Pp = dense_condition(ssm, y, upto=k)
        mf, Pf = dense_condition(ssm, y, upto=k + 1)
        np.testing.assert_allclose(r.predicted_mean[k], mp[k], rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(r.predicted_cov[k], block(Pp, k, n), rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(r.filtered_mean[k], mf[k], rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(r.filtered_cov[k], block(Pf, k, n), rtol=1e-8, atol=1e-9)
    if method == "sqrt":
        for L, P in [(r.filtered_chol, r.filtered_cov), (r.predicted_chol, r.predicted_cov)]:
            np.testing.assert_allclose(L @ jnp.swapaxes(L, -1, -2), P, rtol=1e-9, atol=1e-10)
            assert np.all(np.triu(np.asarray(L), 1) == 0)
            assert np.all(np.diagonal(np.asarray(L), axis1=-2, axis2=-1) > 0)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    shape=st.sampled_from([(1, 1, 1), (5, 2, 3), (6, 3, 1)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_dense_reference_property(shape, seed):
    # few distinct shapes (each compiles once); random models and missing patterns
    T, n, m = shape
    rng = np.random.default_rng(seed)
    ssm = random_ssm(rng, T, n, m, zero_steps=(0,))
    y = with_missing(rng, rng.normal(size=(T, m)), 0.3)
    ref = dense_loglik(ssm, y)
    for method in METHODS:
        got = float(filter_ssm(ssm, y, method).log_likelihood)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12, err_msg=method)


@pytest.mark.slow
def test_methods_agree_long_series():
    rng = np.random.default_rng(1)
    T, n, m = 64, 3, 2
    ssm = random_ssm(rng, T, n, m, zero_steps=(0, 17, 18, 50))
    y = with_missing(rng, rng.normal(size=(T, m)), 0.2, full_rows=(5, 6, 63))
    res = {meth: filter_ssm(ssm, y, meth) for meth in METHODS}
    ref = res["sequential"]
    for meth in ("sqrt", "parallel"):
        r = res[meth]
        np.testing.assert_allclose(float(r.log_likelihood), float(ref.log_likelihood), rtol=1e-8)
        np.testing.assert_allclose(
            r.pointwise_log_likelihood, ref.pointwise_log_likelihood, rtol=1e-7, atol=1e-9
        )
        np.testing.assert_allclose(r.filtered_mean, ref.filtered_mean, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(r.filtered_cov, ref.filtered_cov, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(r.predicted_cov, ref.predicted_cov, rtol=1e-7, atol=1e-8)


@pytest.mark.slow
def test_partial_missing_equals_dropping_the_channel():
    rng = np.random.default_rng(2)
    T, n = 6, 2
    ssm = random_ssm(rng, T, n, 2)
    y = rng.normal(size=(T, 2))
    y[:, 1] = np.nan  # channel 1 never observed
    one = ssm._replace(
        observation=ssm.observation[:, :1],
        observation_offset=ssm.observation_offset[:, :1],
        observation_cov=ssm.observation_cov[:, :1, :1],
    )
    for method in METHODS:
        a = filter_ssm(ssm, y, method)
        b = filter_ssm(one, y[:, :1], method)
        np.testing.assert_allclose(
            a.pointwise_log_likelihood, b.pointwise_log_likelihood, rtol=1e-12, atol=1e-13
        )
        np.testing.assert_allclose(a.filtered_cov, b.filtered_cov, rtol=1e-12, atol=1e-13)


@pytest.mark.slow
def test_all_missing_contributes_exactly_zero():
    rng = np.random.default_rng(3)
    ssm = random_ssm(rng, 5, 2, 2)
    y = np.full((5, 2), np.nan)
    for method in METHODS:
        r = filter_ssm(ssm, y, method)
        assert float(r.log_likelihood) == 0.0
        assert np.all(np.asarray(r.pointwise_log_likelihood) == 0.0)


# -------------------------------------------------------------------- statsmodels


def _nile():
    import statsmodels.api as sm

    return sm.datasets.nile.load_pandas().data["volume"].to_numpy(float).copy()


def _local_level_ssm(T, s2_level, s2_irregular, m0=0.0, p0=0.0):
    ones = np.ones((T, 1, 1))
    Q = ones * s2_level
    Q[0] = 0.0  # statsmodels' initial state is the predicted state at the first time
    return DiscreteSSM(
        ones,
        np.zeros((T, 1)),
        Q,
        ones,
        np.zeros((T, 1)),
        ones * s2_irregular,
        np.array([m0]),
        np.array([[p0]]),
    )


@pytest.mark.parametrize("method", METHODS)
def test_statsmodels_nile_known_initialisation(method):
    # statsmodels' generic KalmanFilter: UnobservedComponents would burn the first
    # observation of the likelihood (its loglikelihood_burn for the diffuse level).
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    y = _nile()
    y[[10, 11, 50]] = np.nan
    s2e, s2l, a1, p1 = 15099.0, 1469.1, 1000.0, 2.0e4
    kf = KalmanFilter(k_endog=1, k_states=1)
    kf.bind(y.copy())
    kf["design"] = np.ones((1, 1))
    kf["obs_cov"] = np.array([[s2e]])
    kf["transition"] = np.ones((1, 1))
    kf["selection"] = np.ones((1, 1))
    kf["state_cov"] = np.array([[s2l]])
    kf.initialize_known(np.array([a1]), np.array([[p1]]))
    ref = kf.loglike()
    ssm = _local_level_ssm(len(y), s2l, s2e, a1, p1)
    got = filter_ssm(ssm, y[:, None], method)
    np.testing.assert_allclose(float(got.log_likelihood), ref, rtol=1e-8)
    # the same filtered states as statsmodels
    res = kf.filter()
    np.testing.assert_allclose(got.filtered_mean[:, 0], res.filtered_state[0], rtol=1e-8)
    np.testing.assert_allclose(got.filtered_cov[:, 0, 0], res.filtered_state_cov[0, 0], rtol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_statsmodels_var1_with_measurement_error(method):
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    rng = np.random.default_rng(4)
    T, n = 120, 2
    Phi = np.array([[0.6, 0.2], [-0.3, 0.5]])
    Sig = np.array([[1.0, 0.3], [0.3, 0.5]])
    Rm = np.array([[0.2, 0.05], [0.05, 0.1]])
    c = np.array([0.5, -0.2])
    x = np.zeros(n)
    y = np.zeros((T, n))
    for t in range(T):
        x = Phi @ x + c + rng.multivariate_normal(np.zeros(n), Sig)
        y[t] = x + rng.multivariate_normal(np.zeros(n), Rm)
    y[7, 1] = np.nan
    y[30] = np.nan
    a1, P1 = np.array([1.0, 0.0]), np.eye(n) * 2.0

    kf = KalmanFilter(k_endog=n, k_states=n)
    kf.bind(y.copy())
    kf["design"] = np.eye(n)
    kf["obs_cov"] = Rm
    kf["transition"] = Phi
    kf["state_intercept"] = c
    kf["selection"] = np.eye(n)
    kf["state_cov"] = Sig
    kf.initialize_known(a1, P1)
    ref = kf.loglike()

    A = np.broadcast_to(Phi, (T, n, n)).copy()
    A[0] = np.eye(n)
    b = np.broadcast_to(c, (T, n)).copy()
    b[0] = 0.0
    Q = np.broadcast_to(Sig, (T, n, n)).copy()
    Q[0] = 0.0
    ssm = DiscreteSSM(
        A,
        b,
        Q,
        np.broadcast_to(np.eye(n), (T, n, n)),
        np.zeros((T, n)),
        np.broadcast_to(Rm, (T, n, n)),
        a1,
        P1,
    )
    got = float(filter_ssm(ssm, y, method).log_likelihood)
    np.testing.assert_allclose(got, ref, rtol=1e-8)


# ----------------------------------------------------------------- exact diffuse


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("missing", [(), (0,), (3, 40, 41)])
def test_diffuse_nile_local_level_matches_statsmodels(missing, method):
    import statsmodels.api as sm

    y = _nile()
    y[list(missing)] = np.nan
    s2e, s2l = 15099.0, 1469.1
    ref = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True).loglike([s2e, s2l])
    ssm = _local_level_ssm(len(y), s2l, s2e, m0=123.0, p0=1e9)  # ignored: diffuse
    got = filter_ssm(ssm, y[:, None], method, diffuse_mask=np.array([True]), diffuse_steps=2)
    np.testing.assert_allclose(float(got.log_likelihood), ref, rtol=1e-8)
    assert np.isfinite(np.asarray(got.pointwise_log_likelihood)).all()
    np.testing.assert_allclose(np.sum(got.pointwise_log_likelihood), ref, rtol=1e-8)


def test_diffuse_local_linear_trend_matches_statsmodels():
    import statsmodels.api as sm

    y = _nile()
    T = len(y)
    s2e, s2l, s2s = 15099.0, 1469.1, 10.0
    ref = sm.tsa.UnobservedComponents(y, "lltrend", use_exact_diffuse=True).loglike([s2e, s2l, s2s])
    A = np.broadcast_to(np.array([[1.0, 1.0], [0.0, 1.0]]), (T, 2, 2)).copy()
    A[0] = np.eye(2)
    Q = np.broadcast_to(np.diag([s2l, s2s]), (T, 2, 2)).copy()
    Q[0] = 0.0
    ssm = DiscreteSSM(
        A,
        np.zeros((T, 2)),
        Q,
        np.broadcast_to([[1.0, 0.0]], (T, 1, 2)),
        np.zeros((T, 1)),
        np.full((T, 1, 1), s2e),
        np.zeros(2),
        np.zeros((2, 2)),
    )
    got = filter_ssm(ssm, y[:, None], diffuse_mask=np.array([True, True]))
    np.testing.assert_allclose(float(got.log_likelihood), ref, rtol=1e-8)
    g = jax.grad(loglik_fn(y[:, None], "sequential", diffuse_mask=np.array([True, True])))(
        to_jax(ssm)
    )
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)


def test_diffuse_multivariate_is_large_variance_limit():
    # log p_κ(y) + ½ q log κ → diffuse log-likelihood (Koopman & Durbin), q diffuse states.
    rng = np.random.default_rng(5)
    T, n, m = 6, 3, 2
    ssm = random_ssm(rng, T, n, m)
    y = with_missing(rng, rng.normal(size=(T, m)), 0.2)
    y[0] = rng.normal(size=m)
    mask = np.array([True, False, True])
    got = filter_ssm(ssm, y, diffuse_mask=mask, diffuse_steps=3)
    kappa = 1e7
    P0 = np.array(ssm.initial_cov)
    P0[mask, :] = 0.0
    P0[:, mask] = 0.0
    P0 = P0 + kappa * np.diag(mask.astype(float))
    m0 = np.where(mask, 0.0, ssm.initial_mean)
    approx = dense_loglik(ssm._replace(initial_cov=P0, initial_mean=m0), y)
    approx += 0.5 * mask.sum() * np.log(kappa)
    np.testing.assert_allclose(float(got.log_likelihood), approx, atol=1e-4)


def test_diffuse_window_too_short_is_minus_inf():
    y = _nile()[:20]
    y[0] = np.nan
    ssm = _local_level_ssm(20, 1469.1, 15099.0)
    got = filter_ssm(ssm, y[:, None], diffuse_mask=np.array([True]), diffuse_steps=1)
    assert float(got.log_likelihood) == -np.inf


# ------------------------------------------------------------------------ dynamax


def _dynamax_params(ssm):
    from dynamax.linear_gaussian_ssm.inference import make_lgssm_params

    A, b, Q, H, d, R, m0, P0 = [jnp.asarray(x) for x in ssm]
    # dynamax's initial distribution is that of the first state; its step t -> t+1
    # uses the parameters at index t+1, as in our convention.
    mu1 = A[0] @ m0 + b[0]
    S1 = A[0] @ P0 @ A[0].T + Q[0]
    return make_lgssm_params(mu1, S1, A, Q, H, R, dynamics_bias=b, emissions_bias=d)


def test_dynamax_filter_and_smoother():
    from dynamax.linear_gaussian_ssm.inference import lgssm_filter, lgssm_smoother

    rng = np.random.default_rng(6)
    T, n, m = 40, 3, 2
    ssm = random_ssm(rng, T, n, m)
    y = rng.normal(size=(T, m))
    params = _dynamax_params(ssm)
    ref = lgssm_filter(params, jnp.asarray(y))
    ref_s = lgssm_smoother(params, jnp.asarray(y))
    # dynamax forms K = P Hᵀ S⁻¹ differently; agreement to ~1e-8 absolute (our filters
    # match the dense reference to 1e-9 in the tests above).
    for method in METHODS:
        r = filter_ssm(ssm, y, method)
        np.testing.assert_allclose(float(r.log_likelihood), float(ref.marginal_loglik), rtol=1e-9)
        np.testing.assert_allclose(r.filtered_mean, ref.filtered_means, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(r.filtered_cov, ref.filtered_covariances, rtol=1e-7, atol=1e-7)
        for smethod in ("sequential", "parallel"):
            s = rts_smoother_ssm(ssm, r, smethod)
            np.testing.assert_allclose(s.smoothed_mean, ref_s.smoothed_means, rtol=1e-7, atol=1e-7)
            np.testing.assert_allclose(
                s.smoothed_cov, ref_s.smoothed_covariances, rtol=1e-7, atol=1e-7
            )
            outer = jnp.einsum("ti,tj->tij", s.smoothed_mean[:-1], s.smoothed_mean[1:])
            np.testing.assert_allclose(
                s.smoothed_cross_cov + outer, ref_s.smoothed_cross_covariances, rtol=1e-7, atol=1e-7
            )


@pytest.mark.parametrize("smethod", ["sequential", "parallel"])
def test_smoother_matches_dense_conditioning(smethod):
    rng = np.random.default_rng(7)
    T, n, m = 7, 2, 2
    ssm = random_ssm(rng, T, n, m, zero_steps=(3,))
    y = with_missing(rng, rng.normal(size=(T, m)), 0.3, full_rows=(6,))
    mean, cov = dense_condition(ssm, y)
    s = rts_smoother_ssm(ssm, filter_ssm(ssm, y, "sqrt"), smethod)
    np.testing.assert_allclose(s.smoothed_mean, mean, rtol=1e-8, atol=1e-9)
    for k in range(T):
        np.testing.assert_allclose(s.smoothed_cov[k], block(cov, k, n), rtol=1e-8, atol=1e-9)
    for k in range(T - 1):
        cross = cov[k * n : (k + 1) * n, (k + 1) * n : (k + 2) * n]
        np.testing.assert_allclose(s.smoothed_cross_cov[k], cross, rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------------- gradients


@pytest.mark.parametrize("method", METHODS)
def test_check_grads(method):
    rng = np.random.default_rng(8)
    T, n, m = 5, 2, 2
    ssm = to_jax(random_ssm(rng, T, n, m))
    y = with_missing(rng, rng.normal(size=(T, m)), 0.0)
    y[1, 0] = np.nan
    y[3] = np.nan
    f = loglik_fn(y, method)
    check_grads(f, (ssm,), order=1, modes=("fwd", "rev"))
    if method == "sequential":
        check_grads(f, (ssm,), order=2, modes=("rev",))


@pytest.mark.slow
def test_gradients_at_zero_length_steps_are_finite_and_agree():
    # Q = 0 (Δ = 0) and a singular initial covariance: the square root of a covariance
    # has an infinite derivative there, the log-likelihood does not.
    rng = np.random.default_rng(9)
    T, n, m = 4, 2, 2
    ssm = random_ssm(rng, T, n, m, zero_steps=(0, 2, 3))
    ssm = to_jax(ssm._replace(initial_cov=np.zeros((n, n))))
    y = rng.normal(size=(T, m))
    grads = {meth: jax.jit(jax.grad(loglik_fn(y, meth)))(ssm) for meth in METHODS}
    for meth in METHODS:
        for name, g in zip(DiscreteSSM._fields, grads[meth], strict=True):
            assert bool(jnp.all(jnp.isfinite(g))), (meth, name)
            np.testing.assert_allclose(
                g,
                getattr(grads["sequential"], name),
                rtol=1e-7,
                atol=1e-9,
                err_msg=f"{meth} {name}",
            )
    # and it is the derivative: a one-sided difference along a PSD direction of Q
    f = jax.jit(loglik_fn(y, "sequential"))
    direction = jnp.zeros_like(ssm.transition_cov).at[jnp.array([0, 2, 3])].set(jnp.eye(n))
    eps = 1e-7
    fd = (f(ssm._replace(transition_cov=ssm.transition_cov + eps * direction)) - f(ssm)) / eps
    np.testing.assert_allclose(
        jnp.sum(grads["sqrt"].transition_cov * direction), fd, rtol=1e-5, atol=1e-6
    )


# ---------------------------------------------------------------------- float32


def _matern32_ssm(T, rng, dtype):
    """Matérn-3/2 GP (ℓ = 1, σ = 1) at irregular times: exact discretisation by expm."""
    lam = np.sqrt(3.0)
    F = np.array([[0.0, 1.0], [-(lam**2), -2.0 * lam]])
    Pinf = np.diag([1.0, lam**2])
    dt = rng.exponential(0.05, size=T)
    dt[0] = 0.0
    A = np.stack([scipy.linalg.expm(F * t) for t in dt])
    Q = Pinf[None] - A @ Pinf @ np.swapaxes(A, 1, 2)
    Q = 0.5 * (Q + np.swapaxes(Q, 1, 2))
    H = np.broadcast_to([[1.0, 0.0]], (T, 1, 2))
    R = np.full((T, 1, 1), 1e-4)
    ssm = DiscreteSSM(A, np.zeros((T, 2)), Q, H, np.zeros((T, 1)), R, np.zeros(2), Pinf)
    x = simulate_ssm(ssm, jax.random.PRNGKey(0)).observations
    return DiscreteSSM(*[np.asarray(v, dtype) for v in ssm]), np.asarray(x, dtype)


# What the float32 sqrt and parallel filters promise against float64 on a well-scaled
# model (values and steps of order one) up to T = 10⁴ (docs/guide/precision.md): the
# log-likelihood to relative F32_LL_RTOL, its gradient to F32_GRAD_RTOL of the gradient's
# largest entry. Measured (T = 4096): 1e-7 and 7e-5 at worst.
F32_LL_RTOL = 2e-6
F32_GRAD_RTOL = 1e-3


def _scaled(theta, ssm):
    """θ = (process-noise scale, measurement-noise scale, observation offset)."""
    return ssm._replace(
        transition_cov=ssm.transition_cov * theta[0],
        observation_cov=ssm.observation_cov * theta[1],
        observation_offset=ssm.observation_offset + theta[2],
    )


def _check_float32(method, T):
    """Value and gradient (w.r.t. θ of ``_scaled``) of the float32 ``method`` filter
    against the float64 sequential filter on the same model and data."""
    rng = np.random.default_rng(10)
    ssm64, y64 = _matern32_ssm(T, rng, np.float64)
    ssm32 = DiscreteSSM(*[v.astype(np.float32) for v in ssm64])
    y32 = y64.astype(np.float32)

    def ll(theta, ssm, y, method):
        return filter_ssm(_scaled(theta, ssm), y, method, validate=False).log_likelihood

    value_and_grad = jax.jit(jax.value_and_grad(ll), static_argnums=3)
    theta = np.array([1.0, 1.0, 0.0])
    v64, g64 = value_and_grad(theta, ssm64, y64, "sequential")
    v32, g32 = value_and_grad(theta.astype(np.float32), ssm32, y32, method)
    assert v32.dtype == g32.dtype == jnp.float32
    np.testing.assert_allclose(float(v32), float(v64), rtol=F32_LL_RTOL)
    g64 = np.asarray(g64)
    np.testing.assert_allclose(
        np.asarray(g32, np.float64), g64, rtol=0, atol=F32_GRAD_RTOL * np.abs(g64).max()
    )
    if method == "sqrt":
        r = jax.jit(lambda s, y: filter_ssm(s, y, method, validate=False))(ssm32, y32)
        d = np.diagonal(np.asarray(r.filtered_chol), axis1=-2, axis2=-1)
        assert np.all(d > 0)
        assert np.all(np.isfinite(np.asarray(r.filtered_chol)))
        assert np.all(np.linalg.eigvalsh(np.asarray(r.filtered_cov, np.float64)) > 0)


def test_float32_sqrt_long_series():
    _check_float32("sqrt", 10_000)


def test_float32_parallel_long_series():
    # The compilation of the associative scan's gradient (independent of T) dominates:
    # the run itself takes milliseconds.
    _check_float32("parallel", 4096)


@pytest.mark.slow
def test_float32_parallel_longer_series():
    _check_float32("parallel", 10_000)


# -------------------------------------------------------------- simulate / forecast


def test_simulate_moments():
    rng = np.random.default_rng(11)
    T, n, m = 4, 2, 2
    ssm = random_ssm(rng, T, n, m, zero_steps=(2,))
    N = 40_000
    sim = simulate_ssm(ssm, jax.random.PRNGKey(1), n_samples=N)
    assert sim.states.shape == (N, T, n) and sim.observations.shape == (N, T, m)
    mx, V, my, Syy, Sxy, _ = dense_joint(ssm)
    z = np.concatenate(
        [np.asarray(sim.states).reshape(N, -1), np.asarray(sim.observations).reshape(N, -1)], axis=1
    )
    mean = np.concatenate([mx, my])
    cov = np.block([[V, Sxy], [Sxy.T, Syy]])
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(z.mean(0) - mean) < 5 * sd / np.sqrt(N))
    emp = np.cov(z, rowvar=False)
    # standard error of a covariance entry ≈ sqrt((σ_ii σ_jj + σ_ij²)/N)
    se = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / N)
    assert np.all(np.abs(emp - cov) < 6 * se)
    # a zero-length step (A = I, Q = 0) only adds its offset: no noise
    np.testing.assert_allclose(
        sim.states[:, 2] - sim.states[:, 1], np.broadcast_to(ssm.offset[2], (N, n)), atol=1e-12
    )
    one = simulate_ssm(ssm, jax.random.PRNGKey(1))
    assert one.states.shape == (T, n)


@pytest.mark.slow
def test_forecast_matches_dense_moments():
    rng = np.random.default_rng(12)
    T, n, m = 5, 3, 2
    ssm = random_ssm(rng, T, n, m)
    fc = forecast_ssm(ssm)
    mx, V, my, Syy, _, _ = dense_joint(ssm)
    np.testing.assert_allclose(fc.state_mean, mx.reshape(T, n), rtol=1e-10)
    np.testing.assert_allclose(fc.observation_mean, my.reshape(T, m), rtol=1e-10)
    for k in range(T):
        np.testing.assert_allclose(fc.state_cov[k], block(V, k, n), rtol=1e-10)
        np.testing.assert_allclose(fc.observation_cov[k], block(Syy, k, m), rtol=1e-10)
    # forecasting from the last filtered state = filtering with missing future data
    y = rng.normal(size=(2 * T, m))
    both = random_ssm(rng, 2 * T, n, m)
    r_all = filter_ssm(both, np.concatenate([y[:T], np.full((T, m), np.nan)]))
    r_obs = filter_ssm(
        jax.tree_util.tree_map(
            lambda a: a, both._replace(**{f: getattr(both, f)[:T] for f in DiscreteSSM._fields[:6]})
        ),
        y[:T],
    )
    future = both._replace(**{f: getattr(both, f)[T:] for f in DiscreteSSM._fields[:6]})
    fc2 = forecast_ssm(future, r_obs.filtered_mean[-1], r_obs.filtered_cov[-1])
    np.testing.assert_allclose(fc2.state_mean, r_all.predicted_mean[T:], rtol=1e-10)
    np.testing.assert_allclose(fc2.state_cov, r_all.predicted_cov[T:], rtol=1e-10)


# ------------------------------------------------------------------ ragged / batch


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_vmap_ragged_subjects_padding_contributes_nothing(method):
    rng = np.random.default_rng(13)
    T, n, m = 12, 2, 1
    ssms = [random_ssm(rng, T, n, m) for _ in range(3)]
    ys = [rng.normal(size=(T, m)) for _ in range(3)]
    lengths = [12, 12, 8]
    ys[2][8:] = np.nan  # subject 2 has 8 observations, padded with all-NaN rows
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ssms)
    Y = jnp.asarray(np.stack(ys))
    f = jax.jit(jax.vmap(lambda s, y: filter_ssm(s, y, method).log_likelihood))
    got = np.asarray(f(stacked, Y))
    for i in range(3):
        k = lengths[i]
        short = ssms[i]._replace(**{f: getattr(ssms[i], f)[:k] for f in DiscreteSSM._fields[:6]})
        ref = float(filter_ssm(short, ys[i][:k], method).log_likelihood)
        np.testing.assert_allclose(got[i], ref, rtol=1e-12)
    # built-in leading batch dimensions give the same, with a shared model too
    np.testing.assert_allclose(filter_ssm(stacked, Y, method).log_likelihood, got, rtol=1e-12)
    shared = filter_ssm(ssms[0], Y, method).log_likelihood
    assert shared.shape == (3,)
    np.testing.assert_allclose(shared[0], got[0], rtol=1e-12)


# ---------------------------------------------------------- invalid values (in NUTS)


def _invalid_cases(ssm):
    n = ssm.initial_mean.shape[0]
    nan_A = ssm.transition.at[3, 0, 1].set(jnp.nan)
    inf_Q = ssm.transition_cov.at[2, 1, 1].set(jnp.inf)
    bad_R = ssm.observation_cov.at[4].set(-jnp.eye(ssm.observation_cov.shape[-1]))
    huge_A = ssm.transition.at[2].set(1e200 * jnp.eye(n))
    return {
        "nan_transition": ssm._replace(transition=nan_A),
        "inf_transition_cov": ssm._replace(transition_cov=inf_Q),
        "negative_observation_cov": ssm._replace(observation_cov=bad_R),
        "overflowing_transition": ssm._replace(transition=huge_A),
        "nan_initial_cov": ssm._replace(initial_cov=ssm.initial_cov.at[0, 0].set(jnp.nan)),
    }


@pytest.mark.parametrize("method", METHODS)
def test_invalid_values_give_minus_inf_and_finite_gradients(method):
    rng = np.random.default_rng(14)
    T, n, m = 8, 2, 2
    ssm = to_jax(random_ssm(rng, T, n, m))
    y = rng.normal(size=(T, m))
    vg = jax.jit(jax.value_and_grad(loglik_fn(y, method)))
    for name, bad in _invalid_cases(ssm).items():
        val, g = vg(bad)
        assert float(val) == -np.inf, (method, name)
        for field, gi in zip(DiscreteSSM._fields, g, strict=True):
            assert bool(jnp.all(jnp.isfinite(gi))), (method, name, field)
        r = jax.jit(lambda s: filter_ssm(s, y, method, validate=False))(bad)
        assert not np.any(np.isnan(np.asarray(r.pointwise_log_likelihood))), (method, name)
    # an infinite observation is invalid, not missing
    y_inf = y.copy()
    y_inf[2, 0] = np.inf
    val, g = jax.jit(jax.value_and_grad(loglik_fn(y_inf, method)))(ssm)
    assert float(val) == -np.inf
    assert all(bool(jnp.all(jnp.isfinite(gi))) for gi in g)


@pytest.mark.parametrize("method", METHODS)
def test_invalid_values_diffuse(method):
    y = _nile()[:30, None]
    ssm = to_jax(_local_level_ssm(30, 1469.1, 15099.0))
    bad = ssm._replace(observation_cov=ssm.observation_cov.at[5].set(-1.0))
    f = loglik_fn(y, method, diffuse_mask=np.array([True]))
    val, g = jax.jit(jax.value_and_grad(f))(bad)
    assert float(val) == -np.inf
    assert all(bool(jnp.all(jnp.isfinite(gi))) for gi in g)


# ---------------------------------------------------------------------- bad input


def test_bad_input_raises_value_error():
    rng = np.random.default_rng(15)
    ssm = random_ssm(rng, 5, 2, 1)
    y = rng.normal(size=(5, 1))
    with pytest.raises(ValueError, match=r"y must have shape \(T, m\) = \(5, 1\)"):
        filter_ssm(ssm, y[:4])
    with pytest.raises(ValueError, match="y must have shape"):
        filter_ssm(ssm, y[:, 0])
    with pytest.raises(ValueError, match="offset: expected"):
        filter_ssm(ssm._replace(offset=np.zeros((5, 3))), y)
    with pytest.raises(ValueError, match="initial_cov must have 2 dimensions"):
        filter_ssm(ssm._replace(initial_cov=np.eye(2)[None]), y)
    with pytest.raises(ValueError, match="method must be one of"):
        filter_ssm(ssm, y, "fast")
    Q = np.array(ssm.transition_cov)
    Q[3, 0, 1] += 0.5
    with pytest.raises(ValueError, match=r"transition_cov is not symmetric at index \(3,\)"):
        filter_ssm(ssm._replace(transition_cov=Q), y)
    with pytest.raises(ValueError, match="observation_cov is not positive semi-definite"):
        filter_ssm(ssm._replace(observation_cov=-np.ones((5, 1, 1))), y)
    A = np.array(ssm.transition)
    A[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="transition has a non-finite entry"):
        filter_ssm(ssm._replace(transition=A), y)
    with pytest.raises(ValueError, match="infinite entry"):
        filter_ssm(ssm, np.where(np.arange(5)[:, None] == 2, np.inf, y))
    # shape errors are static: raised under jit too
    with pytest.raises(ValueError, match="offset: expected"):
        jax.jit(lambda s: filter_ssm(s, y).log_likelihood)(
            to_jax(ssm._replace(offset=np.zeros((5, 3))))
        )


def test_integer_input_is_promoted_and_float32_is_kept():
    T = 4
    ssm = DiscreteSSM(
        np.ones((T, 1, 1), int),
        np.zeros((T, 1), int),
        np.ones((T, 1, 1), int),
        np.ones((T, 1, 1), int),
        np.zeros((T, 1), int),
        np.ones((T, 1, 1), int),
        np.zeros(1, int),
        np.ones((1, 1), int),
    )
    y = np.arange(T)[:, None]
    ref = dense_loglik(DiscreteSSM(*[np.asarray(x, float) for x in ssm]), y.astype(float))
    for method in METHODS:
        r = filter_ssm(ssm, y, method)
        assert isinstance(r, FilterResult)
        np.testing.assert_allclose(float(r.log_likelihood), ref, rtol=1e-12)
        r32 = filter_ssm(
            DiscreteSSM(*[np.asarray(x, np.float32) for x in ssm]), y.astype(np.float32), method
        )
        assert r32.log_likelihood.dtype == jnp.float32
        assert r32.filtered_cov.dtype == jnp.float32
