"""Tests for kalmanad.linalg.lyapunov: scipy references, adjoint rules, properties, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from kalmanad.linalg import lyapunov as lyap
from kalmanad.linalg import solve_continuous_lyapunov, solve_discrete_lyapunov

# Sizes on both sides of the static route choice (Kronecker for n <= 3 continuous and
# n <= 2 discrete, iterations above); test_sizes_cover_both_routes guards this.
SIZES = [1, 2, 3, 5, 16, 24]
SMALL_CONT, LARGE_CONT = 3, 6
SMALL_DISC, LARGE_DISC = 2, 6

cont = jax.jit(solve_continuous_lyapunov)
disc = jax.jit(solve_discrete_lyapunov)


def _stable(rng, n, margin=0.5, nonnormal=2.0):
    """Random non-normal matrix with all eigenvalues at real part <= -margin."""
    a = rng.standard_normal((n, n)) + nonnormal * np.triu(rng.standard_normal((n, n)), 1)
    a /= np.sqrt(n)
    return a - (np.linalg.eigvals(a).real.max() + margin) * np.eye(n)


def _contractive(rng, n, rho=0.9, nonnormal=2.0):
    """Random non-normal matrix with spectral radius rho."""
    a = rng.standard_normal((n, n)) + nonnormal * np.triu(rng.standard_normal((n, n)), 1)
    return rho * a / np.abs(np.linalg.eigvals(a)).max()


def _with_eigenvalues(rng, values):
    """Non-normal matrix with the given (real) eigenvalues."""
    v = np.eye(len(values)) + 0.3 * rng.standard_normal((len(values), len(values)))
    return v @ np.diag(values) @ np.linalg.inv(v)


def _rel(x, ref):
    return np.linalg.norm(np.asarray(x) - ref) / np.linalg.norm(ref)


def _cont_residual(a, q, x):
    """Relative (normwise backward) residual; 0 for the trivial q = 0, X = 0."""
    scale = 2 * np.linalg.norm(a) * np.linalg.norm(x) + np.linalg.norm(q)
    return np.linalg.norm(a @ x + x @ a.T - q) / max(scale, np.finfo(float).tiny)


def _disc_residual(a, q, x):
    scale = (np.linalg.norm(a) ** 2 + 1) * np.linalg.norm(x) + np.linalg.norm(q)
    return np.linalg.norm(a @ x @ a.T - x + q) / max(scale, np.finfo(float).tiny)


def test_sizes_cover_both_routes():
    for small, large, limit in [
        (SMALL_CONT, LARGE_CONT, lyap._KRON_MAX_N_CONTINUOUS),
        (SMALL_DISC, LARGE_DISC, lyap._KRON_MAX_N_DISCRETE),
    ]:
        assert small <= limit < large
        assert min(SIZES) <= limit < max(SIZES)


# ------------------------------------------------------------------- against scipy


@pytest.mark.parametrize("n", SIZES)
def test_continuous_matches_scipy(n):
    rng = np.random.default_rng(n)
    a = _stable(rng, n)
    q = rng.standard_normal((n, n))  # not symmetric
    x = np.asarray(cont(a, q))
    ref = scipy.linalg.solve_continuous_lyapunov(a, q)
    assert _rel(x, ref) <= 1e-10
    assert _cont_residual(a, q, x) <= 1e-14


@pytest.mark.parametrize("n", SIZES)
def test_discrete_matches_scipy(n):
    rng = np.random.default_rng(100 + n)
    a = _contractive(rng, n)
    q = rng.standard_normal((n, n))
    x = np.asarray(disc(a, q))
    ref = scipy.linalg.solve_discrete_lyapunov(a, q)
    assert _rel(x, ref) <= 1e-10
    assert _disc_residual(a, q, x) <= 1e-14


@pytest.mark.parametrize("n", [SMALL_DISC, LARGE_CONT])
def test_batched_with_broadcasting(n):
    rng = np.random.default_rng(7)
    a_c = np.stack([[_stable(rng, n) for _ in range(3)] for _ in range(2)])  # (2, 3, n, n)
    a_d = np.stack([[_contractive(rng, n) for _ in range(3)] for _ in range(2)])
    q = rng.standard_normal((3, n, n))  # broadcasts against (2, 3)
    x_c, x_d = cont(a_c, q), disc(a_d, q)
    assert x_c.shape == x_d.shape == (2, 3, n, n)
    for i in range(2):
        for j in range(3):
            ref_c = scipy.linalg.solve_continuous_lyapunov(a_c[i, j], q[j])
            ref_d = scipy.linalg.solve_discrete_lyapunov(a_d[i, j], q[j])
            assert _rel(x_c[i, j], ref_c) <= 1e-10
            assert _rel(x_d[i, j], ref_d) <= 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("n", [6, 12])
def test_non_stable_falls_back_to_kronecker(n):
    """Large n, a matrices outside the iterations' domain: still scipy's answer."""
    rng = np.random.default_rng(n)
    # Continuous: eigenvalues in both half-planes, no pair summing to zero.
    a = _with_eigenvalues(rng, np.linspace(-2.0, 1.3, n))
    ev = np.linalg.eigvals(a)
    assert np.abs(ev[:, None] + ev[None, :]).min() > 1e-2
    # Discrete: spectral radius above one, no pair with product one.
    ad = _with_eigenvalues(rng, np.geomspace(0.2, 1.6, n) * np.where(np.arange(n) % 2, 1, -1))
    evd = np.linalg.eigvals(ad)
    assert np.abs(evd[:, None] * evd[None, :] - 1).min() > 1e-2
    q = rng.standard_normal((n, n))
    ref = scipy.linalg.solve_continuous_lyapunov(a, q)
    ref_d = scipy.linalg.solve_discrete_lyapunov(ad, q)
    assert _rel(cont(a, q), ref) <= 1e-9
    assert _rel(disc(ad, q), ref_d) <= 1e-9
    # A batch mixing both kinds: each matrix gets its own route.
    stable, contractive = _stable(rng, n), _contractive(rng, n)
    x = cont(np.stack([stable, a]), q)
    xd = disc(np.stack([contractive, ad]), q)
    assert _rel(x[0], scipy.linalg.solve_continuous_lyapunov(stable, q)) <= 1e-10
    assert _rel(x[1], ref) <= 1e-9
    assert _rel(xd[0], scipy.linalg.solve_discrete_lyapunov(contractive, q)) <= 1e-10
    assert _rel(xd[1], ref_d) <= 1e-9


@pytest.mark.parametrize("kind", ["stiff", "nearly_marginal", "lightly_damped"])
@pytest.mark.parametrize("n", [SMALL_CONT, 8])
def test_ill_conditioned_accuracy_comparable_to_scipy(kind, n):
    """Known solution X, q = a X + X aᵀ: forward error within a small factor of scipy's."""
    rng = np.random.default_rng(11)
    if kind == "stiff":
        v = rng.standard_normal((n, n))
        a = v @ np.diag(-np.logspace(-3, 3, n)) @ np.linalg.inv(v)
    elif kind == "nearly_marginal":
        a = _stable(rng, n, margin=1e-6)
    else:  # oscillators with damping ratio 1e-3, mixed by a well-conditioned similarity
        a = np.zeros((n, n))
        for i in range(0, n - 1, 2):
            w = rng.uniform(1.0, 20.0)
            a[i : i + 2, i : i + 2] = [[0.0, 1.0], [-w * w, -2e-3 * w]]
        if n % 2:
            a[-1, -1] = -1.0
        v = np.eye(n) + 0.3 * rng.standard_normal((n, n))
        a = v @ a @ np.linalg.inv(v)
    g = rng.standard_normal((n, n))
    x_true = g @ g.T
    q = a @ x_true + x_true @ a.T
    eps = np.finfo(np.float64).eps
    eye = np.eye(n)
    ours = _rel(cont(a, q), x_true)
    ref = _rel(scipy.linalg.solve_continuous_lyapunov(a, q), x_true)
    # The promise is backward stability: a relative residual within the module's
    # acceptance (_ACCEPT_FACTOR · n · eps; below it the iteration refines, above it
    # the Kronecker solve takes over). Its size within that bound moves with the
    # hardware's rounding (n = 8 stiff: 1.9e-15 on one CPU, 1.2e-14 to 2.1e-14 on an
    # AMD EPYC with AVX-512, 2.9e-14 on an H100). A backward-stable solver's forward error is
    # then at most about cond · eps (cond of the Lyapunov operator, from its Kronecker
    # form); two such solvers agree only up to that, and scipy's can be far below it
    # by luck (n = 3 stiff, discrete: 1.2e-14 against cond · eps = 1.5e-10). So the
    # forward check is: within 100x (10x discrete) of scipy's, or within cond · eps.
    cond = np.linalg.cond(np.kron(a, eye) + np.kron(eye, a))
    assert ours <= max(100 * ref, 1e-12, cond * eps)
    assert _cont_residual(a, q, np.asarray(cont(a, q))) <= lyap._ACCEPT_FACTOR * n * eps

    ad = scipy.linalg.expm(0.1 * a)  # spectral radius just below one
    qd = x_true - ad @ x_true @ ad.T
    x_d = np.asarray(disc(ad, qd))
    ours_d = _rel(x_d, x_true)
    ref_d = _rel(scipy.linalg.solve_discrete_lyapunov(ad, qd), x_true)
    cond_d = np.linalg.cond(np.eye(n * n) - np.kron(ad, ad))
    assert ours_d <= max(10 * ref_d, 1e-12, cond_d * eps)
    assert _disc_residual(ad, qd, x_d) <= lyap._ACCEPT_FACTOR * n * eps


@pytest.mark.parametrize("n", [SMALL_DISC, SMALL_CONT, LARGE_CONT])
def test_float32(n):
    rng = np.random.default_rng(5)
    a, ad = _stable(rng, n), _contractive(rng, n, rho=0.8)
    g = rng.standard_normal((n, n))
    q = g @ g.T + np.eye(n)
    x = cont(a.astype(np.float32), q.astype(np.float32))
    xd = disc(ad.astype(np.float32), q.astype(np.float32))
    assert x.dtype == xd.dtype == jnp.float32
    assert _rel(x, scipy.linalg.solve_continuous_lyapunov(a, q)) <= 1e-4
    assert _rel(xd, scipy.linalg.solve_discrete_lyapunov(ad, q)) <= 1e-4


# ------------------------------------------------------------------ derivatives


# Derivative tests use moderately conditioned matrices, so that finite differences
# (which check_grads compares against) are accurate to its tolerances.
def _mild_stable(rng, n):
    return _stable(rng, n, margin=1.0, nonnormal=0.5)


def _mild_contractive(rng, n):
    return _contractive(rng, n, rho=0.6, nonnormal=0.5)


@pytest.mark.parametrize(
    ("solver", "make_a", "n"),
    [
        (solve_continuous_lyapunov, _mild_stable, SMALL_CONT),
        (solve_continuous_lyapunov, _mild_stable, 5),
        (solve_discrete_lyapunov, _mild_contractive, SMALL_DISC),
        (solve_discrete_lyapunov, _mild_contractive, 5),
    ],
)
def test_check_grads(solver, make_a, n):
    rng = np.random.default_rng(n)
    a = make_a(rng, n)
    q = rng.standard_normal((n, n))
    check_grads(jax.jit(solver), (a, q), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("n", [SMALL_CONT, LARGE_CONT])
def test_adjoint_formula_continuous(n):
    """∂/∂q ⟨W, X⟩ = Λ with aᵀ Λ + Λ a = W, and ∂/∂a = −(Λ Xᵀ + Λᵀ X) (scipy solves)."""
    rng = np.random.default_rng(n)
    a, q, w = _stable(rng, n), rng.standard_normal((n, n)), rng.standard_normal((n, n))
    grad_a, grad_q = jax.grad(lambda a, q: jnp.sum(w * solve_continuous_lyapunov(a, q)), (0, 1))(
        a, q
    )
    x = scipy.linalg.solve_continuous_lyapunov(a, q)
    lam = scipy.linalg.solve_continuous_lyapunov(a.T, w)
    np.testing.assert_allclose(grad_q, lam, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_a, -(lam @ x.T + lam.T @ x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [SMALL_DISC, LARGE_DISC])
def test_adjoint_formula_discrete(n):
    """∂/∂q ⟨W, X⟩ = Λ with Λ − aᵀ Λ a = W, and ∂/∂a = Λ a Xᵀ + Λᵀ a X (scipy solves)."""
    rng = np.random.default_rng(n)
    a, q, w = _contractive(rng, n), rng.standard_normal((n, n)), rng.standard_normal((n, n))
    grad_a, grad_q = jax.grad(lambda a, q: jnp.sum(w * solve_discrete_lyapunov(a, q)), (0, 1))(a, q)
    x = scipy.linalg.solve_discrete_lyapunov(a, q)
    lam = scipy.linalg.solve_discrete_lyapunov(a.T, w)
    np.testing.assert_allclose(grad_q, lam, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_a, lam @ a @ x.T + lam.T @ a @ x, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("solver", "make_a", "n"),
    [
        (solve_continuous_lyapunov, _mild_stable, 2),
        (solve_continuous_lyapunov, _mild_stable, 4),
        (solve_discrete_lyapunov, _mild_contractive, 2),
        (solve_discrete_lyapunov, _mild_contractive, 4),
    ],
)
def test_jacobians_and_hessian(solver, make_a, n):
    rng = np.random.default_rng(3)
    a, q = make_a(rng, n), rng.standard_normal((n, n))
    jf = jax.jit(jax.jacfwd(solver, argnums=(0, 1)))(a, q)
    jr = jax.jit(jax.jacrev(solver, argnums=(0, 1)))(a, q)
    for f, r in zip(jf, jr, strict=True):
        np.testing.assert_allclose(f, r, rtol=1e-10, atol=1e-12)

    def loss(a):
        return jnp.sum(jnp.sin(solver(a, q)))

    h = jax.jit(jax.hessian(loss))(a).reshape(n * n, n * n)
    np.testing.assert_allclose(h, h.T, rtol=1e-8, atol=1e-10)
    # Central difference of the gradient along one direction.
    d = rng.standard_normal((n, n))
    eps = 1e-5
    g = jax.jit(jax.grad(loss))
    fd = (g(a + eps * d) - g(a - eps * d)) / (2 * eps)
    np.testing.assert_allclose((h @ d.reshape(-1)).reshape(n, n), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("n", [SMALL_DISC, LARGE_CONT])
def test_vmap_matches_native_batching(n):
    rng = np.random.default_rng(9)
    # Iterative route: one matrix of each batch needs the Kronecker fallback.
    a = np.stack([_stable(rng, n), _stable(rng, n) + 2.0 * np.eye(n), _stable(rng, n)])
    ad = np.stack([_contractive(rng, n), _contractive(rng, n, rho=1.3), _contractive(rng, n)])
    q = rng.standard_normal((3, n, n))
    for solver, aa in [(solve_continuous_lyapunov, a), (solve_discrete_lyapunov, ad)]:
        native = jax.jit(solver)(aa, q)
        np.testing.assert_allclose(jax.jit(jax.vmap(solver))(aa, q), native, rtol=1e-12)
        np.testing.assert_allclose(
            jax.jit(jax.vmap(solver, in_axes=(0, None)))(aa, q[0]),
            jax.jit(solver)(aa, q[0]),
            rtol=1e-12,
        )
        nested = jax.jit(jax.vmap(jax.vmap(solver)))(aa[None], q[None])[0]
        np.testing.assert_allclose(nested, native, rtol=1e-12)

        def loss(a, q, solver=solver):
            return jnp.sum(jnp.cos(solver(a, q)))

        per_matrix = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(aa, q)
        batched = jax.jit(jax.grad(loss, argnums=(0, 1)))(aa, q)
        for p, b in zip(per_matrix, batched, strict=True):
            np.testing.assert_allclose(p, b, rtol=1e-10, atol=1e-12)


# -------------------------------------------------------------------- properties


def _square(n):
    return hnp.arrays(np.float64, (n, n), elements=st.floats(-2.0, 2.0))


@st.composite
def _problem(draw):
    n = draw(st.sampled_from([1, 2, 3, 5]))
    a, q1, q2 = draw(_square(n)), draw(_square(n)), draw(_square(n))
    alpha, beta = draw(st.floats(-3.0, 3.0)), draw(st.floats(-3.0, 3.0))
    return a, q1, q2, alpha, beta


def _make_stable(a):
    return a - (np.linalg.eigvals(a).real.max() + 0.5) * np.eye(len(a))


def _make_contractive(a):
    rho = np.abs(np.linalg.eigvals(a)).max()
    return 0.9 * a / rho if rho > 0.9 else a


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True)
@given(_problem())
def test_property_residual_symmetry_linearity(problem):
    a, q1, q2, alpha, beta = problem
    a_c, a_d = _make_stable(a), _make_contractive(a)
    q_sym = q1 + q1.T
    for solver, aa, residual in [(cont, a_c, _cont_residual), (disc, a_d, _disc_residual)]:
        x1, x2 = np.asarray(solver(aa, q1)), np.asarray(solver(aa, q2))
        assert residual(aa, q1, x1) <= 1e-13
        # Linear in q.
        x12 = np.asarray(solver(aa, alpha * q1 + beta * q2))
        scale = abs(alpha) * np.linalg.norm(x1) + abs(beta) * np.linalg.norm(x2) + 1e-300
        assert np.linalg.norm(x12 - alpha * x1 - beta * x2) <= 1e-10 * scale
        # Symmetric q: exactly symmetric X.
        xs = np.asarray(solver(aa, q_sym))
        np.testing.assert_array_equal(xs, xs.T)


@pytest.mark.slow
def test_symmetric_q_exact_symmetry_both_routes():
    rng = np.random.default_rng(2)
    for n in [SMALL_DISC, SMALL_CONT, LARGE_CONT, 16]:
        g = rng.standard_normal((n, n))
        q = g + g.T
        x, xd = np.asarray(cont(_stable(rng, n), q)), np.asarray(disc(_contractive(rng, n), q))
        np.testing.assert_array_equal(x, x.T)
        np.testing.assert_array_equal(xd, xd.T)


# ------------------------------------------------------------ bad and edge input


@pytest.mark.parametrize("solver", [solve_continuous_lyapunov, solve_discrete_lyapunov])
def test_bad_shapes_raise(solver):
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        solver(np.ones((3, 4)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        solver(np.eye(3), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"a.shape=\(3, 3\).*q.shape=\(2, 2\)"):
        solver(np.eye(3), np.eye(2))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        solver(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match=r"a.shape=\(2, 3, 3\) and q.shape=\(4, 3, 3\)"):
        solver(np.ones((2, 3, 3)), np.ones((4, 3, 3)))
    with pytest.raises(TypeError):
        solver(np.eye(2) * 1j, np.eye(2))


@pytest.mark.parametrize("solver", [solve_continuous_lyapunov, solve_discrete_lyapunov])
def test_shape_checks_are_static_under_jit(solver):
    with pytest.raises(ValueError, match=r"q\.shape"):
        jax.jit(solver)(np.eye(3), np.eye(2))


def test_integer_and_mixed_dtypes_promote():
    a = np.array([[-3, 1], [0, -2]])
    q = np.array([[2, 1], [1, 4]])
    x = solve_continuous_lyapunov(a, q)
    assert x.dtype == jnp.float64
    np.testing.assert_allclose(x, scipy.linalg.solve_continuous_lyapunov(a, q), rtol=1e-13)
    ad = np.zeros((2, 2), dtype=np.int32)
    xd = solve_discrete_lyapunov(ad, q)  # X = q for a = 0
    assert xd.dtype == jnp.float64
    np.testing.assert_array_equal(xd, q)
    mixed = solve_continuous_lyapunov(a.astype(np.float32), q.astype(np.float64))
    assert mixed.dtype == jnp.float64


@pytest.mark.slow
@pytest.mark.parametrize("n", [SMALL_DISC, SMALL_CONT, LARGE_CONT])
def test_nan_in_nan_out(n):
    rng = np.random.default_rng(4)
    a_c, a_d = _stable(rng, n), _contractive(rng, n)
    q = rng.standard_normal((n, n))
    for solver, a in [(cont, a_c), (disc, a_d)]:
        bad_a = a.copy()
        bad_a[0, -1] = np.nan
        bad_q = q.copy()
        bad_q[-1, 0] = np.nan
        assert np.all(np.isnan(solver(bad_a, q)))
        assert np.all(np.isnan(solver(a, bad_q)))
        # Only the NaN matrix of a batch is affected.
        x = solver(np.stack([bad_a, a]), q)
        assert np.all(np.isnan(x[0]))
        assert np.all(np.isfinite(x[1]))
        g = jax.grad(lambda a, solve=solver: jnp.sum(solve(a, q)))(bad_a)
        assert np.all(np.isnan(g))


@pytest.mark.parametrize("n", [SMALL_DISC, SMALL_CONT, LARGE_CONT])
def test_continuous_without_unique_solution_gives_nan(n):
    """λᵢ + λⱼ = 0 for some pair (a = 0; eigenvalues 1 and −1): NaN, no exception."""
    rng = np.random.default_rng(8)
    q = rng.standard_normal((n, n))
    pair = _with_eigenvalues(rng, np.r_[1.0, -1.0, -np.arange(1.0, n - 1.0)])
    regular = _stable(rng, n)
    for a in [np.zeros((n, n)), pair]:
        assert np.all(np.isnan(cont(a, q)))
        x = cont(np.stack([a, regular]), q)
        assert np.all(np.isnan(x[0]))
        np.testing.assert_allclose(
            x[1], scipy.linalg.solve_continuous_lyapunov(regular, q), rtol=1e-10
        )


@pytest.mark.parametrize("n", [SMALL_DISC, SMALL_CONT, LARGE_CONT])
def test_discrete_without_unique_solution_gives_nan(n):
    """λᵢ λⱼ = 1 for some pair (a = I; a rotation): NaN, no exception."""
    rng = np.random.default_rng(8)
    q = rng.standard_normal((n, n))
    rotation = 0.5 * np.eye(n)
    c, s = np.cos(0.7), np.sin(0.7)
    rotation[:2, :2] = [[c, -s], [s, c]]
    regular = _contractive(rng, n)
    for a in [np.eye(n), rotation]:
        assert np.all(np.isnan(disc(a, q)))
        x = disc(np.stack([a, regular]), q)
        assert np.all(np.isnan(x[0]))
        np.testing.assert_allclose(
            x[1], scipy.linalg.solve_discrete_lyapunov(regular, q), rtol=1e-10
        )


def test_scalar_case():
    np.testing.assert_allclose(cont(np.array([[-2.0]]), np.array([[3.0]])), [[-0.75]])
    np.testing.assert_allclose(disc(np.array([[0.5]]), np.array([[3.0]])), [[4.0]])


# ------------------------------------------------------------ internal helpers


@pytest.mark.parametrize("inverse", [lyap._gauss_jordan_inverse, lyap._lu_inverse])
def test_inverse_helpers(inverse):
    """Both inverse back-ends (CPU Gauss–Jordan, native LU for GPU) agree with numpy."""
    rng = np.random.default_rng(0)
    m = rng.standard_normal((4, 7, 7))
    m[0, 0, 0] = 0.0  # needs a row exchange at the first step
    m[1] = np.triu(m[1])[::-1]  # anti-triangular: exchanges at every step
    inv, log_det = jax.jit(inverse)(m)
    np.testing.assert_allclose(inv, np.linalg.inv(m), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(log_det, np.linalg.slogdet(m)[1], rtol=1e-12)
    singular, _ = jax.jit(inverse)(np.zeros((3, 3)))
    assert not np.all(np.isfinite(singular))


def test_replayed_sign_iteration_equals_repeated(monkeypatch):
    """The continuous iterative route keeps the sign iteration's inverses and replays
    them for refinements and the adjoint solve; above a memory limit it repeats the
    iteration instead. Both give the same values and gradients (and the adjoint equals
    scipy's), also for a batch with a matrix that needs the Kronecker fallback."""
    n = LARGE_CONT
    rng = np.random.default_rng(21)
    a = np.stack([_stable(rng, n), _stable(rng, n) + 2.0 * np.eye(n), _stable(rng, n)])
    q = rng.standard_normal((3, n, n))
    w = rng.standard_normal((3, n, n))

    def value_and_grads(a, q):
        f = lambda a, q: jnp.sum(w * solve_continuous_lyapunov(a, q))  # noqa: E731
        return jax.jit(jax.value_and_grad(f, (0, 1)))(a, q)

    assert lyap._replay_fits(jnp.asarray(a))
    replayed = value_and_grads(a, q)
    monkeypatch.setattr(lyap, "_REPLAY_MAX_BYTES", 0)
    repeated = value_and_grads(a, q)
    for r, p in zip(jax.tree.leaves(replayed), jax.tree.leaves(repeated), strict=True):
        np.testing.assert_allclose(r, p, rtol=1e-11, atol=1e-13)
    i = 0  # a stable matrix: the adjoint against scipy
    lam = scipy.linalg.solve_continuous_lyapunov(a[i].T, w[i])
    np.testing.assert_allclose(replayed[1][1][i], lam, rtol=1e-9, atol=1e-12)
