"""Tests of kalmanad.discretize against independent references.

References: scipy.linalg.expm of the Van Loan block (accurate where ‖A‖Δ is moderate),
numerical quadrature of the Qd integral (scipy.integrate.quad_vec), closed forms
(Brownian motion, integrated random walk, scalar OU with intercept and inputs), and the
stationary formula for long steps of stiff drifts.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from kalmanad.discretize import (
    METHODS,
    StepGrid,
    check_times,
    default_grid,
    discretize,
    discretize_augmented,
    discretize_model,
    discretize_step,
    initial_moments,
    step_grid,
)
from kalmanad.model import LinearSDE
from kalmanad.ssm import DiscreteSSM

VAN_LOAN = ("van_loan", "van_loan_expm")


def random_problem(seed, n, shift=-2.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n)) + shift * np.eye(n)
    g = rng.normal(size=(n, n))
    return a, g @ g.T


def van_loan_scipy(a, q, dt, w=None):
    """Independent reference: scipy's expm of the (forward) Van Loan block."""
    n = a.shape[0]
    w = np.zeros((n, 0)) if w is None else w
    r = w.shape[1]
    block = np.zeros((2 * n + r, 2 * n + r))
    block[:n, :n], block[:n, n : 2 * n], block[:n, 2 * n :] = a, q, w
    block[n : 2 * n, n : 2 * n] = -a.T
    f = scipy.linalg.expm(block * dt)
    ad = f[:n, :n]
    return ad, f[:n, n : 2 * n] @ ad.T, f[:n, 2 * n :]


def qd_quadrature(a, q, dt):
    def integrand(s):
        e = scipy.linalg.expm(a * s)
        return e @ q @ e.T

    return scipy.integrate.quad_vec(integrand, 0.0, dt, epsabs=0.0, epsrel=1e-13)[0]


def rel_err(x, ref):
    return np.max(np.abs(np.asarray(x) - ref)) / max(np.max(np.abs(ref)), 1e-300)


# --------------------------------------------------------------------------------------
# discretize against references
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_against_scipy_van_loan_block(method, n):
    # the block exponential at Δ is an accurate reference only while ‖A‖Δ is moderate
    a, q = random_problem(n, n)
    dts = np.array([1e-4, 0.01, 0.3, 0.7])
    ad, qd = discretize(a, q, dts, method=method)
    assert ad.shape == qd.shape == (4, n, n)
    for k, d in enumerate(dts):
        ra, rq, _ = van_loan_scipy(a, q, d)
        assert rel_err(ad[k], ra) < 1e-12
        tol = 1e-12 if method != "stationary" else 1e-12 / min(d, 1.0)
        assert rel_err(qd[k], rq) < tol
        np.testing.assert_array_equal(qd[k], np.asarray(qd[k]).T)  # symmetrised


@pytest.mark.parametrize("kind", ["stable", "unstable", "nonnormal", "oscillator", "singular"])
def test_against_quadrature(kind):
    rng = np.random.default_rng(7)
    a = {
        "stable": rng.normal(size=(3, 3)) - 2.5 * np.eye(3),
        "unstable": rng.normal(size=(3, 3)) + 0.4 * np.eye(3),
        "nonnormal": np.array([[-1.0, 30.0, 0.0], [0.0, -1.0, 30.0], [0.0, 0.0, -1.0]]),
        "oscillator": np.array([[0.0, 1.0, 0.0], [-400.0, -2.0, 0.0], [0.0, 0.0, -0.1]]),
        "singular": np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
    }[kind]
    g = rng.normal(size=(3, 3))
    q = g @ g.T
    dts = np.array([1e-3, 0.2, 1.5])
    for method in VAN_LOAN:
        ad, qd = discretize(a, q, dts, method=method)
        for k, d in enumerate(dts):
            assert rel_err(ad[k], scipy.linalg.expm(a * d)) < 1e-11
            assert rel_err(qd[k], qd_quadrature(a, q, d)) < 1e-11


@pytest.mark.parametrize("method", METHODS)
def test_routes_agree(method):
    a, q = random_problem(3, 4)
    dts = np.geomspace(1e-2, 30.0, 9)
    ad, qd = discretize(a, q, dts, method=method)
    ad0, qd0 = discretize(a, q, dts, method="van_loan")
    assert rel_err(ad, ad0) < 1e-12
    assert rel_err(qd, qd0) < 1e-12


def test_stiff_long_steps_match_stationary_formula():
    # The textbook block exponential at Δ loses the slow mode (its e^{-AᵀΔ} block is huge);
    # the composed route does not. Reference: P∞ - Ad P∞ Adᵀ, exact in this regime.
    u = np.linalg.qr(np.random.default_rng(0).normal(size=(2, 2)))[0]
    a = u @ np.diag([-200.0, -0.01]) @ u.T
    q = np.array([[1.0, 0.3], [0.3, 2.0]])
    p_inf = scipy.linalg.solve_continuous_lyapunov(a, -q)
    dts = np.array([1.0, 10.0, 100.0, 1000.0])
    plain = van_loan_scipy(a, q, 10.0)[1]
    for method in VAN_LOAN:
        _, qd = discretize(a, q, dts, method=method)
        for k, d in enumerate(dts):
            e = scipy.linalg.expm(a * d)
            ref = p_inf - e @ p_inf @ e.T
            assert rel_err(qd[k], ref) < 1e-11
    assert (
        not rel_err(plain, p_inf - scipy.linalg.expm(a * 10) @ p_inf @ scipy.linalg.expm(a * 10).T)
        < 1e-3
    )


@pytest.mark.slow
def test_singular_drift_closed_forms():
    q = np.array([[2.0, 0.5], [0.5, 1.0]])
    dts = np.array([0.0, 1e-3, 0.5, 7.0, 1e4])
    for method in VAN_LOAN:
        ad, qd = discretize(np.zeros((2, 2)), q, dts, method=method)
        np.testing.assert_array_equal(ad, np.broadcast_to(np.eye(2), (5, 2, 2)))
        np.testing.assert_allclose(qd, dts[:, None, None] * q, rtol=1e-15, atol=0)
        # integrated random walk: x'' = noise with intensity s
        s = 0.7
        ad, qd = discretize([[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, s]], dts, method=method)
        for k, d in enumerate(dts):
            np.testing.assert_allclose(ad[k], [[1.0, d], [0.0, 1.0]], rtol=1e-14, atol=0)
            ref = s * np.array([[d**3 / 3, d**2 / 2], [d**2 / 2, d]])
            np.testing.assert_allclose(qd[k], ref, rtol=1e-13, atol=0)


def test_scalar_ou_closed_forms_stable_and_unstable():
    dts = np.array([1e-6, 0.1, 1.0, 5.0])
    for a in (-1.3, 0.8):
        q = 0.9
        methods = METHODS if a < 0 else VAN_LOAN
        for method in methods:
            ad, qd = discretize([[a]], [[q]], dts, method=method)
            np.testing.assert_allclose(ad[:, 0, 0], np.exp(a * dts), rtol=1e-14)
            exact = q * np.expm1(2 * a * dts) / (2 * a)
            rtol = 1e-14 if method != "stationary" else 1e-9
            np.testing.assert_allclose(qd[:, 0, 0], exact, rtol=rtol)


@pytest.mark.slow
def test_intercept_and_zoh_input_closed_forms():
    a, q, c, b = -0.7, 0.5, 1.3, np.array([[2.0, -1.0]])
    dts = np.array([0.0, 1e-5, 0.4, 3.0])
    phi = np.expm1(a * dts) / a  # ∫₀^Δ e^{as} ds, never formed as a⁻¹(e^{aΔ}-1) by us
    for method in METHODS:
        _, _, fd = discretize_augmented(
            [[a]], [[q]], dts, np.array([[c, 2.0, -1.0]]), method=method
        )
        np.testing.assert_allclose(fd[:, 0, 0], phi * c, rtol=1e-13, atol=0)
        np.testing.assert_allclose(fd[:, 0, 1:], phi[:, None] * b, rtol=1e-13, atol=0)
    # singular drift: Fd = Δ W exactly
    _, _, fd = discretize_augmented([[0.0]], [[q]], dts, [[c]])
    np.testing.assert_allclose(fd[:, 0, 0], dts * c, rtol=1e-15)
    # a 2-state singular drift against scipy's augmented exponential
    a2 = np.array([[0.0, 1.0], [0.0, -0.5]])
    w = np.array([[0.3, 1.0], [1.0, -2.0]])
    _, _, fd = discretize_augmented(a2, np.eye(2), dts, w)
    for k, d in enumerate(dts):
        aug = np.zeros((4, 4))
        aug[:2, :2], aug[:2, 2:] = a2, w
        np.testing.assert_allclose(
            fd[k], scipy.linalg.expm(aug * d)[:2, 2:], rtol=1e-13, atol=1e-16
        )


@pytest.mark.parametrize("method", METHODS)
def test_zero_step_is_exactly_identity_and_zero(method):
    a, q = random_problem(1, 3)
    ad, qd, fd = discretize_augmented(
        a, q, np.array([0.0, 2.0, 0.0]), np.ones((3, 2)), method=method
    )
    for k in (0, 2):
        np.testing.assert_array_equal(ad[k], np.eye(3))
        np.testing.assert_array_equal(qd[k], np.zeros((3, 3)))
        np.testing.assert_array_equal(fd[k], np.zeros((3, 2)))


@pytest.mark.slow
def test_dt_shapes_and_dedupe():
    a, q = random_problem(2, 2)
    ad, qd = discretize(a, q, 0.5)
    assert ad.shape == qd.shape == (2, 2)
    dts = np.array([[0.5, 0.1, 0.5], [0.1, 0.0, 0.5]])
    ad, qd = discretize(a, q, dts)
    assert ad.shape == (2, 3, 2, 2)
    ad1, qd1 = discretize(a, q, np.array([0.1, 0.5, 0.0]))
    np.testing.assert_allclose(ad[0, 0], ad1[1], rtol=1e-14)
    np.testing.assert_allclose(qd[1, 0], qd1[0], rtol=1e-14)
    np.testing.assert_array_equal(ad[0, 0], ad[0, 2])  # one discretisation per distinct Δ
    # traced dt (no dedupe) gives the same numbers
    ad2, qd2 = jax.jit(discretize)(a, q, jnp.asarray(dts))
    np.testing.assert_allclose(ad2, ad, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(qd2, qd, rtol=1e-14, atol=1e-16)


@pytest.mark.slow
def test_steps_beyond_coverage_are_nan_not_wrong():
    a = np.diag([-1e4, -1.0])  # two states: the general route (one state has a closed form)
    ad, qd = discretize(a, np.eye(2), np.array([1.0, 1e4]))
    assert np.isfinite(ad[0]).all() and np.isfinite(qd[0]).all()
    np.testing.assert_allclose(qd[0, 0, 0], 0.5e-4, rtol=1e-14)
    assert np.isnan(ad[1]).all() and np.isnan(qd[1]).all()


def test_one_state_closed_form_against_the_general_route_and_scipy():
    # n = 1 uses Ad = e^{aΔ}, Qd = qΔφ(2aΔ), Fd = Δφ(aΔ)W; the general route and scipy's
    # augmented block exponential are the references, over 12 decades of aΔ.
    dts = np.array([0.0, 1e-9, 1e-4, 9.9e-4, 1.01e-3, 0.05, 1.0, 7.0])
    w = np.array([[1.3, -0.4]])
    for a in (-2.0, -1e-7, 0.0, 0.6):
        q = np.array([[0.7]])
        ad, qd, fd = discretize_augmented([[a]], q, dts, w)
        ad2, qd2, fd2 = discretize_augmented([[a]], q, dts, w, method="van_loan_expm")
        np.testing.assert_allclose(ad, ad2, rtol=1e-14)
        np.testing.assert_allclose(qd, qd2, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(fd, fd2, rtol=1e-13, atol=1e-300)
        for k, d in enumerate(dts[1:], start=1):
            ra, rq, rf = van_loan_scipy(np.array([[a]]), q, d, w)
            np.testing.assert_allclose(ad[k], ra, rtol=1e-14)
            np.testing.assert_allclose(qd[k], rq, rtol=1e-12)
            np.testing.assert_allclose(fd[k], rf, rtol=1e-12)


def test_one_state_closed_form_overflow_is_nan_with_finite_gradient():
    dts = jnp.array([0.5, 1e3])  # e^{2·0.9·1000} overflows

    def total(a):
        ad, qd = discretize(jnp.reshape(a, (1, 1)), jnp.eye(1), dts)
        return ad, qd

    ad, qd = total(0.9)
    assert np.isfinite(ad[0]).all() and np.isnan(ad[1]).all() and np.isnan(qd[1]).all()
    g = jax.grad(lambda a: jnp.sum(jnp.where(jnp.isfinite(total(a)[1]), total(a)[1], 0.0)))(0.9)
    assert np.isfinite(g)
    # and the derivative is right where finite: d/da of qΔφ(2aΔ) at Δ = 0.5
    f = lambda a: total(a)[1][0, 0, 0]  # noqa: E731
    check_grads(f, (0.9,), order=2, modes=("fwd", "rev"))
    check_grads(f, (1e-5,), order=2, modes=("fwd", "rev"))  # the series branch


def test_float32():
    a, q = random_problem(5, 3)
    dts = np.array([1e-5, 0.01, 0.5, 4.0])
    ad64, qd64 = discretize(a, q, dts)
    for method in VAN_LOAN:
        ad, qd = discretize(
            a.astype(np.float32), q.astype(np.float32), dts.astype(np.float32), method=method
        )
        assert ad.dtype == qd.dtype == jnp.float32
        for k in range(len(dts)):
            assert rel_err(qd[k], qd64[k]) < 2e-6
            assert np.max(np.abs(ad[k] - ad64[k])) < 2e-6


@pytest.mark.slow
@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.floats(0.01, 3.0), st.floats(0.01, 3.0))
def test_semigroup_and_psd(seed, s, t):
    a, q = random_problem(seed, 3, shift=np.random.default_rng(seed).uniform(-3, 1))
    ad, qd = discretize(a, q, np.array([s, t, s + t]))
    np.testing.assert_allclose(ad[2], ad[1] @ ad[0], rtol=1e-10, atol=1e-12 * np.abs(ad[2]).max())
    compose = qd[1] + ad[1] @ qd[0] @ ad[1].T
    np.testing.assert_allclose(qd[2], compose, rtol=1e-10, atol=1e-11 * np.abs(qd[2]).max())
    for k in range(3):
        assert np.linalg.eigvalsh(qd[k])[0] > -1e-12 * np.abs(qd[k]).max()


# --------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------
def _grad_objective(method, dts):
    w = np.random.default_rng(0).normal(size=(2, 2, dts.size))

    def f(a, q):
        ad, qd = discretize(a, q, dts, method=method)
        return jnp.einsum("kij,ijk->", ad, w) + jnp.einsum("kij,ijk->", qd, w**2)

    return f


@pytest.mark.parametrize(
    "method",
    [m if m != "van_loan_expm" else pytest.param(m, marks=pytest.mark.slow) for m in METHODS],
)
def test_check_grads_drift_diffusion(method):
    a, q = random_problem(11, 2)
    f = _grad_objective(method, np.array([0.05, 0.7, 3.0]))
    check_grads(f, (a, q), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_taylor_coefficients_values_and_derivatives():
    # z^j/j! from the two power tables, against exact rational arithmetic rounded once;
    # the custom JVP (dc[j]/dz = c[j-1]) against finite differences, to second order,
    # and the step-length gradient of the whole route against central differences.
    from fractions import Fraction
    from math import factorial

    from kalmanad.linalg import taylor_coefficients

    z = np.array([0.0, 1e-300, 1e-8, 0.37, 1.0, 1.999])
    for degree in (16, 33):
        c = np.asarray(taylor_coefficients(jnp.asarray(z), degree))
        assert c.shape == (degree + 1, z.size)
        exact = np.array(
            [[float(Fraction(x) ** j / factorial(j)) for x in z] for j in range(degree + 1)]
        )
        np.testing.assert_allclose(c, exact, rtol=8e-16, atol=0.0)
    zs = jnp.asarray([0.2, 0.9, 1.7])
    check_grads(lambda x: taylor_coefficients(x, 33), (zs,), order=2, modes=("fwd", "rev"))
    a, q = random_problem(3, 3)

    def f(dt):
        ad, qd = discretize(a, q, dt)
        return jnp.sum(jnp.sin(ad)) + jnp.sum(qd**2)

    check_grads(f, (jnp.asarray([0.05, 0.7, 1.3]),), order=1, modes=("fwd", "rev"))


@pytest.mark.slow
def test_check_grads_second_order():
    a, q = random_problem(11, 2)
    f = _grad_objective("van_loan", np.array([0.3, 2.0]))
    check_grads(f, (a, q), order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_check_grads_long_steps_and_forcing():
    # long steps use the higher tables (the cond's other branch); forcing columns too
    a = np.array([[-0.8, 0.4], [-0.3, -1.1]])
    q = np.array([[0.5, 0.1], [0.1, 0.3]])
    wf = np.array([[1.0], [-0.5]])
    dts = np.array([0.3, 150.0])

    def f(a, q, wf):
        ad, qd, fd = discretize_augmented(a, q, dts, wf)
        return jnp.sum(jnp.sin(ad)) + jnp.sum(qd**2) + jnp.sum(fd**2)

    check_grads(f, (a, q, wf), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_gradient_matches_jax_ad_through_scipy_style_block():
    a, q = random_problem(3, 3)
    dts = jnp.asarray([0.1, 0.9, 2.0])

    def ref(a, q):
        def one(d):
            blk = jnp.block([[a, q], [jnp.zeros_like(a), -a.T]]) * d
            f = jax.scipy.linalg.expm(blk)
            return jnp.sum(f[:3, :3] ** 2) + jnp.sum((f[:3, 3:] @ f[:3, :3].T) ** 2)

        return jnp.sum(jax.vmap(one)(dts))

    def ours(a, q):
        ad, qd = discretize(a, q, dts)
        return jnp.sum(ad**2) + jnp.sum(qd**2)

    ga, gq = jax.grad(ours, (0, 1))(a, q)
    ra, rq = jax.grad(ref, (0, 1))(a, q)
    np.testing.assert_allclose(ga, ra, rtol=1e-10)
    np.testing.assert_allclose(gq + gq.T, rq + rq.T, rtol=1e-10)


# --------------------------------------------------------------------------------------
# times
# --------------------------------------------------------------------------------------
def test_step_grid_merges_rounding_noise_and_keeps_ties():
    t = np.arange(0.0, 10.0, 0.1)
    assert np.unique(np.diff(t)).size > 1  # rounding noise in the raw differences
    grid = step_grid(t)
    assert grid.dt.size == 2  # {0, 0.1}
    assert grid.dt[0] == 0.0 and abs(grid.dt[1] - 0.1) < 1e-15
    assert grid.index.shape == t.shape and grid.index[0] == 0
    t = np.array([0.0, 1.0, 1.0, 2.5, 3.5, 3.5])
    grid = step_grid(t)
    np.testing.assert_array_equal(grid.dt, [0.0, 1.0, 1.5])
    np.testing.assert_array_equal(grid.index, [0, 1, 0, 2, 1, 0])
    grid = step_grid(np.array([[0.0, 1.0, 3.0], [5.0, 7.0, 7.0]]))
    np.testing.assert_array_equal(grid.dt, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(grid.index, [[0, 1, 2], [0, 2, 0]])


def test_default_grid_discretises_irregular_steps_in_place():
    """Irregular times (fewer than half the steps repeat): every step in place, at its
    merged size (index None); repeated steps: the distinct ones once, gathered back.
    Both give the numbers of the explicit grid, and a grid in place is checked."""
    t = np.cumsum(np.random.default_rng(3).exponential(0.5, 40))
    grid = default_grid(t)
    assert grid.index is None and grid.dt.shape == t.shape and grid.dt[0] == 0.0
    full = step_grid(t)
    np.testing.assert_array_equal(grid.dt, full.dt[full.index])
    regular = default_grid(np.arange(40.0) * 0.1)
    assert regular.index is not None and regular.dt.size == 2
    assert default_grid(jnp.arange(3.0)) is not None  # concrete jax arrays too
    assert jax.jit(lambda t: default_grid(t) is None and t)(jnp.ones(3)) is not None

    a, q = random_problem(4, 2)
    model = LinearSDE(a, q, np.eye(2), 0.1 * np.eye(2))
    ref = discretize_model(model, t, grid=full)
    for g in (None, grid):
        out = discretize_model(model, t, grid=g)
        for x, r in zip(out, ref, strict=True):
            np.testing.assert_allclose(x, r, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match=r"grid.dt has shape \(39,\) but times is \(40,\)"):
        discretize_model(model, t, grid=StepGrid(grid.dt[1:], None))


def test_time_validation_messages():
    with pytest.raises(
        ValueError, match=re.escape("times must be non-decreasing; times[4]=1.5 < times[3]=2.0")
    ):
        check_times([0.0, 0.5, 1.0, 2.0, 1.5])
    with pytest.raises(ValueError, match=re.escape("times[1, 2]=0.5 < times[1, 1]=1.0")):
        check_times([[0.0, 1.0, 2.0], [0.0, 1.0, 0.5]])
    with pytest.raises(ValueError, match=re.escape("times must be finite, got times[2]=nan")):
        check_times([0.0, 1.0, np.nan])
    with pytest.raises(ValueError, match="times must have shape"):
        check_times(1.0)
    with pytest.raises(ValueError, match="times must have shape"):
        check_times(np.zeros((3, 0)))
    assert jax.jit(lambda t: check_times(t) is None and t)(jnp.ones(3)) is not None
    with pytest.raises(ValueError, match="step_grid needs concrete times"):
        jax.jit(step_grid)(jnp.arange(3.0))


def test_dt_validation():
    with pytest.raises(ValueError, match=re.escape("dt must be >= 0, got dt[1]=-0.5")):
        discretize([[-1.0]], [[1.0]], [0.1, -0.5])
    with pytest.raises(ValueError, match="dt must be finite"):
        discretize([[-1.0]], [[1.0]], [0.1, np.inf])
    with pytest.raises(ValueError, match=re.escape("method must be one of")):
        discretize([[-1.0]], [[1.0]], [0.1], method="pade")
    with pytest.raises(
        ValueError, match=re.escape("diffusion has shape (2, 2) but drift is (1, 1)")
    ):
        discretize([[-1.0]], np.eye(2), [0.1])
    with pytest.raises(ValueError, match="drift must be a square"):
        discretize([-1.0], [[1.0]], [0.1])
    with pytest.raises(ValueError, match=re.escape("forcing has shape (2, 1) but drift is (1, 1)")):
        discretize_augmented([[-1.0]], [[1.0]], [0.1], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="method='stationary' needs a stable drift"):
        discretize([[0.1]], [[1.0]], [0.1], method="stationary")
    # traced: no value checks, no raise
    jax.jit(lambda d: discretize([[0.1]], [[1.0]], d, method="stationary"))(jnp.array([-1.0]))


# --------------------------------------------------------------------------------------
# the discrete model
# --------------------------------------------------------------------------------------
def full_model(**kw):
    args = dict(
        drift=[[-0.6, 0.2], [0.0, -1.5]],
        diffusion=[[0.4, 0.1], [0.1, 0.9]],
        observation=[[1.0, 0.0], [0.5, 1.0], [0.0, 2.0]],
        observation_noise=np.diag([0.1, 0.2, 0.3]),
        drift_intercept=[0.3, -0.2],
        observation_intercept=[1.0, 2.0, 3.0],
        input_effect=[[1.0, 0.0], [0.5, -1.0]],
        observation_input_effect=[[0.1, 0.2], [0.0, 0.0], [1.0, -1.0]],
        impulse_effect=[[0.0, 2.0], [1.0, 0.0]],
    )
    args.update(kw)
    return LinearSDE(**args)


@pytest.mark.slow
def test_discretize_model_convention():
    m = full_model()
    times = np.array([0.5, 0.9, 0.9, 2.0, 4.5])
    u = np.random.default_rng(3).normal(size=(5, 2))
    ssm = discretize_model(m, times, u)
    assert isinstance(ssm, DiscreteSSM)
    assert ssm.transition.shape == (5, 2, 2) and ssm.offset.shape == (5, 2)
    assert ssm.observation.shape == (5, 3, 2) and ssm.observation_cov.shape == (5, 3, 3)
    a, q = np.asarray(m.drift), np.asarray(m.diffusion)
    w = np.concatenate([np.asarray(m.drift_intercept)[:, None], np.asarray(m.input_effect)], 1)
    bimp, d, dmat = (
        np.asarray(m.impulse_effect),
        np.asarray(m.observation_intercept),
        np.asarray(m.observation_input_effect),
    )
    # step 0: zero-length, impulse at t_0
    np.testing.assert_array_equal(ssm.transition[0], np.eye(2))
    np.testing.assert_array_equal(ssm.transition_cov[0], np.zeros((2, 2)))
    np.testing.assert_allclose(ssm.offset[0], bimp @ u[0], rtol=1e-15)
    for k in range(1, 5):
        dt = times[k] - times[k - 1]
        ra, rq, rf = van_loan_scipy(a, q, dt, w)
        np.testing.assert_allclose(ssm.transition[k], ra, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ssm.transition_cov[k], rq, rtol=1e-12, atol=1e-15)
        expect = rf[:, 0] + rf[:, 1:] @ u[k - 1] + bimp @ u[k]  # ZOH u_{k-1}, impulse u_k
        np.testing.assert_allclose(ssm.offset[k], expect, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ssm.observation_offset, d + u @ dmat.T, rtol=1e-14)
    np.testing.assert_array_equal(ssm.observation, np.broadcast_to(m.observation, (5, 3, 2)))
    np.testing.assert_array_equal(
        ssm.observation_cov, np.broadcast_to(m.observation_noise, (5, 3, 3))
    )
    # tie: a zero step
    np.testing.assert_array_equal(ssm.transition[2], np.eye(2))
    # stationary start: P∞ and -A⁻¹c
    np.testing.assert_allclose(
        ssm.initial_cov, scipy.linalg.solve_continuous_lyapunov(a, -q), rtol=1e-12
    )
    np.testing.assert_allclose(ssm.initial_mean, -np.linalg.solve(a, m.drift_intercept), rtol=1e-13)


@pytest.mark.slow
def test_dedupe_equals_per_step_and_traced_times():
    m = full_model()
    rng = np.random.default_rng(4)
    times = np.cumsum(rng.choice([0.0, 0.25, 0.5, 1.0, 3.0], size=40))
    u = rng.normal(size=(40, 2))
    ded = discretize_model(m, times, u)
    traced = jax.jit(discretize_model)(m, jnp.asarray(times), jnp.asarray(u))
    grid = step_grid(times)
    assert grid.dt.size <= 5
    via_grid = jax.jit(lambda t, i: discretize_model(m, t, u, grid=StepGrid(grid.dt, i)))(
        jnp.asarray(times), grid.index
    )
    for x, y, z in zip(ded, traced, via_grid, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(x, z, rtol=1e-14, atol=1e-16)


@pytest.mark.slow
def test_panel_batch_and_padding():
    m = full_model()
    times = np.array([[0.0, 1.0, 2.5, 2.5], [0.0, 0.5, 1.5, 3.0]])  # subject 0 padded
    u = np.zeros((2, 4, 2))
    u[:, :3] = np.random.default_rng(5).normal(size=(2, 3, 2))
    ssm = discretize_model(m, times, u)
    assert ssm.transition.shape == (2, 4, 2, 2)
    assert ssm.initial_mean.shape == (2, 2) and ssm.initial_cov.shape == (2, 2, 2)
    one = discretize_model(m, times[1], u[1])
    for x, y in zip(ssm, one, strict=True):
        np.testing.assert_allclose(x[1], y, rtol=1e-14, atol=1e-16)
    np.testing.assert_array_equal(ssm.transition[0, 3], np.eye(2))  # padding: a zero step
    np.testing.assert_array_equal(ssm.transition_cov[0, 3], np.zeros((2, 2)))
    np.testing.assert_array_equal(ssm.offset[0, 3], np.zeros(2))
    # shared inputs broadcast over subjects
    ssm2 = discretize_model(m, times, u[1])
    np.testing.assert_allclose(ssm2.offset[1], ssm.offset[1], rtol=1e-14)


def test_vmap_over_models_with_a_shared_grid():
    times = np.array([[0.0, 1.0, 2.0], [0.0, 0.5, 2.5]])
    grid = step_grid(times)
    drifts = jnp.stack([-jnp.eye(2), -2.0 * jnp.eye(2)])
    models = jax.vmap(lambda a: LinearSDE(a, jnp.eye(2), jnp.ones((1, 2)), jnp.eye(1)))(drifts)
    ssm = jax.vmap(lambda mod, t, i: discretize_model(mod, t, grid=StepGrid(grid.dt, i)))(
        models, jnp.asarray(times), grid.index
    )
    for s in range(2):
        ad = scipy.linalg.expm(np.asarray(drifts[s]) * (times[s, 2] - times[s, 1]))
        np.testing.assert_allclose(ssm.transition[s, 2], ad, rtol=1e-13)
        np.testing.assert_allclose(ssm.initial_cov[s], np.eye(2) / (2.0 * (s + 1)), rtol=1e-13)


def test_discretize_step_for_forecasting():
    m = full_model()
    dt = np.array([0.3, 2.0])
    u = np.array([[1.0, -1.0], [0.5, 0.0]])
    v = np.array([[0.0, 1.0], [2.0, 0.0]])
    ad, bd, qd = discretize_step(m, dt, u, v)
    w = np.concatenate([np.asarray(m.drift_intercept)[:, None], np.asarray(m.input_effect)], 1)
    for k in range(2):
        ra, rq, rf = van_loan_scipy(np.asarray(m.drift), np.asarray(m.diffusion), dt[k], w)
        np.testing.assert_allclose(ad[k], ra, rtol=1e-13)
        np.testing.assert_allclose(qd[k], rq, rtol=1e-12)
        expect = rf[:, 0] + rf[:, 1:] @ u[k] + np.asarray(m.impulse_effect) @ v[k]
        np.testing.assert_allclose(bd[k], expect, rtol=1e-13)
    _, bd0, _ = discretize_step(m, dt)  # no inputs: intercept only
    np.testing.assert_allclose(
        bd0[1],
        van_loan_scipy(np.asarray(m.drift), np.asarray(m.diffusion), 2.0, w)[2][:, 0],
        rtol=1e-13,
    )
    with pytest.raises(
        ValueError, match=re.escape("inputs has shape (2, 3) but the model has p=2 inputs")
    ):
        discretize_step(m, dt, np.ones((2, 3)))


def test_initial_moments():
    m = full_model(initial_mean=[1.0, 2.0], initial_cov=[[2.0, 0.1], [0.1, 1.0]])
    m0, p0 = initial_moments(m)
    np.testing.assert_array_equal(m0, [1.0, 2.0])
    np.testing.assert_array_equal(p0, [[2.0, 0.1], [0.1, 1.0]])
    m0, p0 = initial_moments(full_model(initial_state="diffuse", diffuse_scale=1e7))
    np.testing.assert_array_equal(m0, [0.0, 0.0])
    np.testing.assert_array_equal(p0, 1e7 * np.eye(2))
    m0, p0 = initial_moments(full_model(initial_mean=[5.0, 5.0]))  # stationary cov, given mean
    np.testing.assert_array_equal(m0, [5.0, 5.0])

    # traced and unstable (a sampler's proposal): finite, flagged invalid
    @jax.jit
    def traced(a):
        mod = LinearSDE(a, jnp.eye(2), jnp.ones((1, 2)), jnp.eye(1), drift_intercept=jnp.ones(2))
        mean, cov = initial_moments(mod)
        return mean, cov, mod.is_valid()

    mean, cov, ok = traced(jnp.array([[0.5, 0.0], [0.0, -1.0]]))
    assert np.isfinite(mean).all() and np.isfinite(cov).all() and not bool(ok)
    mean, cov, ok = traced(jnp.array([[0.0, 1.0], [0.0, 0.0]]))  # singular
    assert np.isfinite(mean).all() and np.isfinite(cov).all() and not bool(ok)
    g = jax.grad(lambda a: jnp.sum(traced(a)[1]))(jnp.array([[0.5, 0.0], [0.0, -1.0]]))
    assert np.isfinite(g).all()
    mean, cov, ok = traced(jnp.array([[-1.0, 0.0], [0.0, -2.0]]))
    np.testing.assert_allclose(cov, np.diag([0.5, 0.25]), rtol=1e-13)
    np.testing.assert_allclose(mean, [1.0, 0.5], rtol=1e-13)
    assert bool(ok)


@pytest.mark.slow  # 50 s; the drift/diffusion check_grads stay in the default run
def test_check_grads_through_discretize_model():
    times = np.array([0.0, 0.4, 1.0, 2.2])
    u = np.random.default_rng(6).normal(size=(4, 1))

    def f(a, q, c, b, bimp):
        q = 0.5 * (q + q.T)  # check_grads perturbs q asymmetrically; the model wants it symmetric
        m = LinearSDE(
            a,
            q,
            jnp.ones((1, 2)),
            jnp.eye(1),
            drift_intercept=c,
            input_effect=b,
            impulse_effect=bimp,
        )
        ssm = discretize_model(m, times, u)
        return (
            jnp.sum(ssm.transition**2)
            + jnp.sum(jnp.sin(ssm.offset))
            + jnp.sum(ssm.transition_cov**2)
            + jnp.sum(ssm.initial_cov)
            + jnp.sum(ssm.initial_mean**2)
        )

    args = (
        np.array([[-0.9, 0.3], [-0.2, -0.7]]),
        np.array([[0.5, 0.1], [0.1, 0.4]]),
        np.array([0.2, -0.1]),
        np.array([[1.0], [0.3]]),
        np.array([[0.5], [0.0]]),
    )
    check_grads(f, args, order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "msg"),
    [
        (
            lambda m: discretize_model(m, [0.0, 2.0, 1.0], np.zeros((3, 2))),
            "times must be non-decreasing; times[2]=1.0 < times[1]=2.0",
        ),
        (lambda m: discretize_model(m, [0.0, np.nan], np.zeros((2, 2))), "times must be finite"),
        (
            lambda m: discretize_model(m, [0.0, 1.0]),
            "the model has p=2 inputs (input effects with 2 columns): pass inputs of shape "
            "(..., T, 2) = (..., 2, 2)",
        ),
        (
            lambda m: discretize_model(m, [0.0, 1.0], np.zeros((3, 2))),
            "inputs has shape (3, 2) but times is (2,) and the model has p=2 inputs: "
            "expected (..., 2, 2)",
        ),
        (lambda m: discretize_model(m, [0.0, 1.0], np.zeros(2)), "inputs has shape (2,)"),
        (
            lambda m: discretize_model(m, [0.0, 1.0], [[0.0, 1.0], [np.nan, 0.0]]),
            "inputs must be finite",
        ),
        (
            lambda m: discretize_model(m, [[0.0, 1.0]] * 2, np.zeros((3, 2, 2))),
            "do not broadcast with times",
        ),
        (
            lambda m: discretize_model(m, [0.0, 1.0], np.zeros((2, 2)), method="euler"),
            "method must be one of",
        ),
        (
            lambda m: discretize_model(
                m, [0.0, 1.0], np.zeros((2, 2)), grid=step_grid([0.0, 1.0, 2.0])
            ),
            "grid.index has shape (3,) but times is (2,)",
        ),
        (
            lambda m: discretize_model(
                m.replace(input_effect=None, observation_input_effect=None, impulse_effect=None),
                [0.0, 1.0],
                np.zeros((2, 1)),
            ),
            "the model has p=0 inputs",
        ),
        (
            lambda m: discretize_model(
                m.replace(drift=[[0.1, 0.0], [0.0, -1.0]], initial_cov=np.eye(2)),
                [0.0, 1.0],
                np.zeros((2, 2)),
                method="stationary",
            ),
            "method='stationary' needs a stable drift",
        ),
    ],
)
def test_discretize_model_errors(call, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        call(full_model())


def test_discretize_model_type_error_and_traced_no_raise():
    with pytest.raises(TypeError, match="model must be a LinearSDE"):
        discretize_model({"drift": 1}, [0.0, 1.0])
    m = full_model()
    # unsorted traced times never raise (values cannot be checked inside a sampler)
    out = jax.jit(lambda t: discretize_model(m, t, jnp.zeros((3, 2))).transition)(
        jnp.array([0.0, 2.0, 1.0])
    )
    assert out.shape == (3, 2, 2)


def test_step_grid_rows_is_step_grid_of_each_row():
    from kalmanad.discretize import step_grid, step_grid_rows

    rng = np.random.default_rng(7)
    times = np.cumsum(rng.choice([0.0, 0.5, 1.0, 1.3], size=(4, 9)), axis=1)
    times[2] = np.arange(9) * 0.1  # a regular row: one step size (and Δ0 = 0)
    grid = step_grid_rows(times)
    assert grid.index.shape == times.shape
    for r in range(4):
        row = step_grid(times[r])
        np.testing.assert_array_equal(grid.dt[r, : row.dt.size], row.dt)
        np.testing.assert_array_equal(grid.dt[r, row.dt.size :], 0.0)  # padding: Δ = 0
        np.testing.assert_allclose(
            grid.dt[r][grid.index[r]], np.diff(times[r], prepend=times[r, 0])
        )
    assert grid.dt.shape[1] == max(step_grid(t).dt.size for t in times)
    with pytest.raises(ValueError, match="non-decreasing"):
        step_grid_rows(times[:, ::-1])
