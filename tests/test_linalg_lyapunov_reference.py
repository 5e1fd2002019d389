"""Lyapunov solvers against scipy, their adjoint rules, and their failure modes.

Both routes are exercised: the Kronecker LU (n <= 8) and the iterative solvers
(sign function / Smith doubling, n > 8) with their Kronecker fallback.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from kalmanad.linalg import solve_continuous_lyapunov, solve_discrete_lyapunov


def _stable(n, seed, margin=0.5, nonnormal=2.0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)) + nonnormal * np.triu(rng.standard_normal((n, n)), 1)
    shift = np.max(np.linalg.eigvals(a).real) + margin
    return a - shift * np.eye(n)


def _schur_stable(n, seed, radius=0.9):
    a = np.random.default_rng(seed).standard_normal((n, n))
    return radius * a / np.max(np.abs(np.linalg.eigvals(a)))


def _rhs(n, seed, symmetric=False):
    q = np.random.default_rng(seed + 100).standard_normal((n, n))
    return q @ q.T if symmetric else q


def _rel(x, ref):
    return np.linalg.norm(np.asarray(x) - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 12, 24])
def test_continuous_matches_scipy(n):
    a, q = _stable(n, n), _rhs(n, n)
    x = solve_continuous_lyapunov(a, q)
    assert _rel(x, scipy.linalg.solve_continuous_lyapunov(a, q)) < 1e-10


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 12, 24])
def test_discrete_matches_scipy(n):
    a, q = _schur_stable(n, n), _rhs(n, n)
    x = solve_discrete_lyapunov(a, q)
    assert _rel(x, scipy.linalg.solve_discrete_lyapunov(a, q)) < 1e-10


@pytest.mark.parametrize("n", [3, 12])
def test_non_stable_drift_falls_back_and_stays_accurate(n):
    # eigenvalues on both sides of the imaginary axis, every pair sum |λi+λj| >= 1
    rng = np.random.default_rng(5)
    v = rng.standard_normal((n, n)) + 3 * np.eye(n)
    k = n // 2
    lam = np.concatenate([np.linspace(-3.0, -2.0, n - k), np.linspace(0.5, 1.0, k)])
    a = v @ np.diag(lam) @ np.linalg.inv(v)
    q = _rhs(n, 5)
    x = solve_continuous_lyapunov(a, q)
    assert _rel(x, scipy.linalg.solve_continuous_lyapunov(a, q)) < 1e-8


@pytest.mark.slow
def test_batched_equals_per_matrix_and_vmap():
    a = np.stack([_stable(4, s) for s in range(6)])
    q = np.stack([_rhs(4, s, symmetric=True) for s in range(6)])
    xb = solve_continuous_lyapunov(a, q)
    xv = jax.vmap(solve_continuous_lyapunov)(a, q)
    for i in range(6):
        ref = scipy.linalg.solve_continuous_lyapunov(a[i], q[i])
        assert _rel(xb[i], ref) < 1e-10
        assert _rel(xv[i], ref) < 1e-10


def test_symmetric_rhs_gives_symmetric_solution():
    a, q = _stable(5, 1), _rhs(5, 1, symmetric=True)
    x = np.asarray(solve_continuous_lyapunov(a, q))
    np.testing.assert_allclose(x, x.T, atol=1e-12 * np.abs(x).max())
    xd = np.asarray(solve_discrete_lyapunov(_schur_stable(5, 1), q))
    np.testing.assert_allclose(xd, xd.T, atol=1e-12 * np.abs(xd).max())


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 10])
def test_gradients_continuous(n):
    a, q = _stable(n, 2), _rhs(n, 2)
    check_grads(
        solve_continuous_lyapunov, (a, q), order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 10])
def test_gradients_discrete(n):
    a, q = _schur_stable(n, 3, 0.7), _rhs(n, 3)
    check_grads(
        solve_discrete_lyapunov, (a, q), order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5
    )


def test_adjoint_rule_continuous_against_scipy():
    """grad of <W, X(a, q)>: q̄ = Λ with aᵀΛ + Λa = W, and ā = −(Λ Xᵀ + Λᵀ X)."""
    a, q, w = _stable(4, 7), _rhs(4, 7), _rhs(4, 8)
    ga, gq = jax.grad(lambda a, q: jnp.sum(w * solve_continuous_lyapunov(a, q)), (0, 1))(a, q)
    lam = scipy.linalg.solve_continuous_lyapunov(a.T, w)
    x = scipy.linalg.solve_continuous_lyapunov(a, q)
    np.testing.assert_allclose(gq, lam, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ga, -(lam @ x.T + lam.T @ x), rtol=1e-9, atol=1e-12)


def test_adjoint_rule_discrete_against_scipy():
    """Λ − aᵀΛa = W; q̄ = Λ; ā = Λ a Xᵀ + Λᵀ a X."""
    a, q, w = _schur_stable(4, 9), _rhs(4, 9), _rhs(4, 10)
    ga, gq = jax.grad(lambda a, q: jnp.sum(w * solve_discrete_lyapunov(a, q)), (0, 1))(a, q)
    lam = scipy.linalg.solve_discrete_lyapunov(a.T, w)
    x = scipy.linalg.solve_discrete_lyapunov(a, q)
    np.testing.assert_allclose(gq, lam, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ga, lam @ a @ x.T + lam.T @ a @ x, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000), c=st.floats(-3.0, 3.0))
def test_residual_and_linearity_in_q(n, seed, c):
    a, q1, q2 = _stable(n, seed), _rhs(n, seed), _rhs(n, seed + 1)
    x1 = np.asarray(solve_continuous_lyapunov(a, q1))
    x2 = np.asarray(solve_continuous_lyapunov(a, q2))
    res = a @ x1 + x1 @ a.T - q1
    assert np.linalg.norm(res) <= 1e-10 * (
        np.linalg.norm(q1) + 2 * np.linalg.norm(a) * np.linalg.norm(x1)
    )
    x12 = np.asarray(solve_continuous_lyapunov(a, q1 + c * q2))
    np.testing.assert_allclose(x12, x1 + c * x2, atol=1e-9 * (1 + np.abs(x12).max()))


def test_singular_equations_return_nan():
    """No unique solution (continuous: λi + λj = 0, e.g. a = 0; discrete: λi λj = 1,
    e.g. a = I) gives NaN, documented, not garbage and not a hang."""
    q = np.eye(3)
    assert np.all(np.isnan(solve_continuous_lyapunov(np.zeros((3, 3)), q)))
    assert np.all(np.isnan(solve_discrete_lyapunov(np.eye(3), q)))
    assert np.all(np.isnan(solve_continuous_lyapunov(np.zeros((10, 10)), np.eye(10))))
    # One singular matrix in a batch does not spoil the others.
    a = np.stack([np.zeros((2, 2)), _stable(2, 0)])
    x = solve_continuous_lyapunov(a, np.stack([np.eye(2)] * 2))
    assert np.all(np.isnan(x[0]))
    assert _rel(x[1], scipy.linalg.solve_continuous_lyapunov(a[1], np.eye(2))) < 1e-10


def test_nan_in_nan_out_under_jit():
    a = _stable(10, 0)
    a[2, 3] = np.nan
    x = jax.jit(solve_continuous_lyapunov)(a, np.eye(10))
    assert np.all(np.isnan(x))
    xd = jax.jit(solve_discrete_lyapunov)(np.full((3, 3), np.nan), np.eye(3))
    assert np.all(np.isnan(xd))


def test_bad_shapes_raise_and_integers_promote():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        solve_continuous_lyapunov(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        solve_continuous_lyapunov(np.eye(2), np.eye(3))
    x = solve_continuous_lyapunov(-2 * np.eye(2, dtype=int), np.eye(2, dtype=int))
    assert jnp.issubdtype(x.dtype, jnp.floating)
    np.testing.assert_allclose(x, -0.25 * np.eye(2))


def test_float32():
    a, q = _stable(4, 11).astype(np.float32), _rhs(4, 11, True).astype(np.float32)
    x = solve_continuous_lyapunov(a, q)
    assert x.dtype == jnp.float32
    ref = scipy.linalg.solve_continuous_lyapunov(a.astype(float), q.astype(float))
    assert _rel(x, ref) < 1e-4
