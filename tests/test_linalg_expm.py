"""Tests for kalmanad.linalg.expm / expm_frechet.

Accuracy metric throughout: the relative 1-norm error ‖X - X_ref‖₁ / ‖X_ref‖₁ against
scipy.linalg (float64 reference), or an exact closed form where one exists.
"""

import importlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from kalmanad.linalg import expm, expm_frechet

expm_module = importlib.import_module("kalmanad.linalg.expm")


def rel1(x, ref):
    x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return np.linalg.norm(x - ref, 1) / np.linalg.norm(ref, 1)


def rng_for(*key):
    return np.random.default_rng(list(key))


def scipy_frechet(a, e):
    return sl.expm_frechet(a, e, compute_expm=False)


# --------------------------------------------------------------------------------------
# Accuracy against scipy
# --------------------------------------------------------------------------------------
def _case(name):
    rng = rng_for(sum(map(ord, name)))
    if name == "random":
        return rng.standard_normal((5, 5))
    if name == "random_small_norm":  # low Padé degrees (3, 5, 7)
        return 0.05 * rng.standard_normal((5, 5))
    if name == "nonnormal":  # large strictly upper triangle
        return np.triu(rng.standard_normal((5, 5))) + np.triu(50 * rng.standard_normal((5, 5)), 1)
    if name == "nonnormal_stable":
        return -np.eye(5) + np.triu(20 * rng.standard_normal((5, 5)), 1)
    if name == "tiny":
        return 1e-8 * rng.standard_normal((5, 5))
    if name == "zero":
        return np.zeros((5, 5))
    if name == "one_by_one":
        return np.array([[0.7]])
    if name == "one_by_one_neg":
        return np.array([[-12.5]])
    if name == "norm_10":
        a = rng.standard_normal((5, 5))
        return 10 * a / np.linalg.norm(a, 1)
    if name == "norm_50":
        a = rng.standard_normal((5, 5))
        return 50 * a / np.linalg.norm(a, 1)
    if name == "norm_50_stable":
        a = rng.standard_normal((5, 5))
        return -20 * np.eye(5) + 30 * a / np.linalg.norm(a, 1)
    raise KeyError(name)


WELL_BEHAVED = [
    "random",
    "random_small_norm",
    "nonnormal",
    "nonnormal_stable",
    "tiny",
    "zero",
    "one_by_one",
    "one_by_one_neg",
    "norm_10",
    "norm_50",
    "norm_50_stable",
]


@pytest.mark.parametrize("name", WELL_BEHAVED)
def test_expm_matches_scipy(name):
    a = _case(name)
    x = expm(a)
    assert x.dtype == jnp.float64 and x.shape == a.shape
    ref = sl.expm(a)
    if not np.any(a):
        np.testing.assert_array_equal(np.asarray(x), np.eye(a.shape[0]))
    else:
        assert rel1(x, ref) <= 1e-12


def test_expm_tiny_is_identity_plus_a():
    a = _case("tiny")
    # e^a = I + a + a²/2 + O(1e-24): the first-order term must be resolved, not lost.
    x = np.asarray(expm(a))
    np.testing.assert_allclose(x - np.eye(5), a + a @ a / 2, rtol=1e-7, atol=1e-22)


def test_expm_norm_1e3():
    # -I + S with S skew-symmetric: e^A = e^-1 Q, Q orthogonal, a finite result at ‖A‖₁ ≈ 1e3.
    rng = rng_for(1000)
    s = rng.standard_normal((5, 5))
    s = s - s.T
    a = -np.eye(5) + 1e3 * s / np.linalg.norm(s, 1)
    x = np.asarray(expm(a))
    np.testing.assert_allclose(x @ x.T, np.exp(-2.0) * np.eye(5), atol=1e-11)
    # The condition number of e^A grows like ‖A‖, so the bound is looser than above.
    assert rel1(x, sl.expm(a)) <= 1e-10
    rot = np.array([[0.0, 1e3], [-1e3, 0.0]])
    exact = np.array([[np.cos(1e3), np.sin(1e3)], [-np.sin(1e3), np.cos(1e3)]])
    assert rel1(expm(rot), exact) <= 1e-10


def test_expm_huge_norm_beyond_16_squarings():
    # ‖A‖₁ = 1e6 needs 18 squarings: jax.scipy.linalg.expm (capped at 16) returns NaN here.
    a = np.array([[-1.0, 1e6], [0.0, -2.0]])
    exact = np.array([[np.exp(-1.0), 1e6 * (np.exp(-1.0) - np.exp(-2.0))], [0.0, np.exp(-2.0)]])
    assert rel1(expm(a), exact) <= 1e-9
    # 18 squarings amplify the rounding of the Padé step by up to 2**18 u ≈ 3e-11 (the
    # 1-norm-based scaling of Higham 2005 overscales nilpotent/highly non-normal input).
    nilpotent = np.array([[0.0, 1e6], [0.0, 0.0]])
    assert rel1(expm(nilpotent), np.array([[1.0, 1e6], [0.0, 1.0]])) <= 1e-10


def test_expm_batched_equals_per_matrix():
    rng = rng_for(7)
    norms = np.array([1e-6, 0.01, 0.2, 0.9, 2.0, 5.0, 30.0, 400.0]).reshape(2, 4)
    a = rng.standard_normal((2, 4, 5, 5))
    a = a / np.linalg.norm(a, 1, axis=(-2, -1))[..., None, None] * norms[..., None, None]
    x = np.asarray(expm(a))
    for i in range(2):
        for j in range(4):
            tol = 1e-12 if norms[i, j] <= 50 else 1e-10
            assert rel1(x[i, j], sl.expm(a[i, j])) <= tol
            assert rel1(x[i, j], expm(a[i, j])) <= tol


def test_vmap_mixed_norms_per_matrix_accuracy():
    rng = rng_for(8)
    norms = np.array([1e-8, 1e-3, 0.1, 0.5, 1.5, 8.0, 50.0, 300.0])
    a = rng.standard_normal((len(norms), 5, 5))
    a = a / np.linalg.norm(a, 1, axis=(-2, -1))[:, None, None] * norms[:, None, None]
    x = jax.vmap(expm)(a)
    for k in range(len(norms)):
        assert rel1(x[k], sl.expm(a[k])) <= (1e-12 if norms[k] <= 50 else 1e-10)


def test_vmap_pays_for_one_pade_branch():
    """Under vmap the degree choice stays one scalar-indexed switch (not a select over all).

    A StableHLO ``case`` op only exists with a scalar index, and JAX lowers a switch whose
    index is batched to ``select`` over every branch instead. So the lowered module must
    contain exactly one ``case`` for the forward pass, and the gradient must keep every
    ``case`` of the unbatched gradient (forward switch, reverse switch, the reverse pass's
    squaring guard), while jax.scipy.linalg.expm under vmap contains none.
    """
    a = jnp.asarray(rng_for(9).standard_normal((16, 4, 4)))
    ours = jax.jit(jax.vmap(expm)).lower(a).as_text()
    assert ours.count('"stablehlo.case"') == 1
    grad1 = jax.grad(lambda m: jnp.sum(jnp.sin(expm(m))))
    n_cases = jax.jit(grad1).lower(a[0]).as_text().count('"stablehlo.case"')
    assert n_cases >= 2
    assert jax.jit(jax.vmap(grad1)).lower(a).as_text().count('"stablehlo.case"') == n_cases
    reference = jax.jit(jax.vmap(jax.scipy.linalg.expm)).lower(a).as_text()
    assert reference.count('"stablehlo.case"') == 0
    # The batching rule binds the forward primitive once on the whole batch.
    eqns = jax.make_jaxpr(jax.vmap(expm))(a).jaxpr.eqns
    fwd = [q for q in eqns if q.primitive.name == "kalmanad_expm_fwd"]
    assert len(fwd) == 1 and fwd[0].invars[0].aval.shape == (16, 4, 4)


def test_expm_float32():
    rng = rng_for(32)
    n = 5
    for scale in [0.1, 1.0, 4.0]:  # degrees 3, 5 and 7 with squarings
        a = rng.standard_normal((n, n)) * scale / np.sqrt(n)
        x = expm(jnp.asarray(a, jnp.float32))
        assert x.dtype == jnp.float32
        assert rel1(x, sl.expm(a)) <= 1e-5
        e = rng.standard_normal((n, n))
        ell = expm_frechet(jnp.asarray(a, jnp.float32), jnp.asarray(e, jnp.float32))
        assert ell.dtype == jnp.float32
        assert rel1(ell, scipy_frechet(a, e)) <= 1e-5
    g = jax.grad(lambda m: jnp.sum(expm(m)))(jnp.asarray(a, jnp.float32))
    assert g.dtype == jnp.float32
    assert rel1(g, scipy_frechet(a.T, np.ones((n, n)))) <= 1e-5


def test_expm_half_precision_computed_in_float32():
    a = np.asarray(_case("random") / 5, np.float16)
    x = expm(a)
    assert x.dtype == jnp.float16
    assert rel1(x, sl.expm(a.astype(np.float64))) <= 2e-3


# --------------------------------------------------------------------------------------
# Fréchet derivative
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["random", "random_small_norm", "nonnormal_stable", "tiny", "norm_10", "norm_50"]
)
def test_expm_frechet_matches_scipy_and_block_identity(name):
    a = _case(name)
    n = a.shape[0]
    e = rng_for(n, 11).standard_normal((n, n))
    ell = expm_frechet(a, e)
    assert rel1(ell, scipy_frechet(a, e)) <= 1e-12
    block = sl.expm(np.block([[a, e], [np.zeros((n, n)), a]]))[:n, n:]
    assert rel1(ell, block) <= 1e-12


def test_expm_frechet_broadcasts_batch_dims():
    rng = rng_for(12)
    a = rng.standard_normal((5, 5))
    e = rng.standard_normal((2, 4, 5, 5))
    ell = np.asarray(expm_frechet(a, e))  # one forward pass, eight directions
    assert ell.shape == (2, 4, 5, 5)
    for idx in np.ndindex(2, 4):
        assert rel1(ell[idx], scipy_frechet(a, e[idx])) <= 1e-12
    a_batch = rng.standard_normal((2, 4, 5, 5))
    ell = np.asarray(expm_frechet(a_batch, e[0, 0]))
    assert ell.shape == (2, 4, 5, 5)
    for idx in np.ndindex(2, 4):
        assert rel1(ell[idx], scipy_frechet(a_batch[idx], e[0, 0])) <= 1e-12


def test_frechet_with_residuals_of_different_degrees_under_vmap():
    """vmap over stored residuals of separate forward passes (mapped degree index)."""
    rng = rng_for(13)
    norms = [0.01, 0.5, 1.5, 20.0]
    mats = [s * rng.standard_normal((1, 3, 3)) / 3 for s in norms]
    residuals = [expm_module._forward(jnp.asarray(m))[1] for m in mats]
    assert len({int(r[0]) for r in residuals}) == len(norms)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *residuals)
    e = rng.standard_normal((len(norms), 1, 3, 3))
    out = jax.vmap(expm_module._frechet)(jnp.stack(mats), stacked, e)
    out_t = jax.vmap(lambda a, r, c: expm_module._frechet(a, r, c, True))(
        jnp.stack(mats), stacked, e
    )
    for k, m in enumerate(mats):
        assert rel1(out[k, 0], scipy_frechet(m[0], e[k, 0])) <= 1e-12
        assert rel1(out_t[k, 0], scipy_frechet(m[0].T, e[k, 0])) <= 1e-12


# --------------------------------------------------------------------------------------
# Differentiation rules
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "a",
    [
        np.array([[0.3, -0.2, 0.1], [0.5, -0.4, 0.2], [0.0, 0.3, 0.1]]),  # low degree, s = 0
        rng_for(21).standard_normal((3, 3)) * 3.0,  # degree 13 with squarings
    ],
    ids=["low_degree", "squarings"],
)
def test_check_grads_expm(a):
    check_grads(expm, (a,), order=2, modes=["fwd", "rev"])


def test_check_grads_expm_frechet():
    rng = rng_for(23)
    a = rng.standard_normal((2, 2)) * 1.5
    e = rng.standard_normal((2, 2))
    check_grads(expm_frechet, (a, e), order=2, modes=["fwd", "rev"])


@pytest.mark.parametrize("n,scale", [(2, 1.0), (3, 0.3), (3, 4.0), (5, 2.0)])
def test_reverse_rule_is_frechet_at_transpose(n, scale):
    rng = rng_for(n, 24)
    a = rng.standard_normal((n, n)) * scale
    w = rng.standard_normal((n, n))
    g = jax.grad(lambda m: jnp.sum(w * expm(m)))(a)
    np.testing.assert_allclose(np.asarray(g), scipy_frechet(a.T, w), rtol=1e-10, atol=1e-10)
    # forward rule: the tangent is L(a, ȧ)
    _, t = jax.jvp(expm, (a,), (w,))
    np.testing.assert_allclose(np.asarray(t), scipy_frechet(a, w), rtol=1e-10, atol=1e-10)


def test_transformations_agree():
    rng = rng_for(25)
    a = rng.standard_normal((3, 3)) * 2.0
    w = rng.standard_normal((3, 3))

    def f(m):
        return jnp.sum(w * expm(m))

    jf, jr = jax.jacfwd(expm)(a), jax.jacrev(expm)(a)
    np.testing.assert_allclose(jf, jr, rtol=1e-12, atol=1e-12)
    # column (i, j) of the Jacobian is L(a, e_i e_jᵀ)
    unit = np.zeros((3, 3))
    unit[1, 2] = 1.0
    np.testing.assert_allclose(jf[..., 1, 2], scipy_frechet(a, unit), rtol=1e-11, atol=1e-12)
    h = jax.hessian(f)(a)
    np.testing.assert_allclose(h, jax.jacrev(jax.jacrev(f))(a), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(h, jax.jacfwd(jax.jacfwd(f))(a), rtol=1e-10, atol=1e-11)
    # second derivative against a central difference of the exact (scipy) gradient
    d = rng.standard_normal((3, 3))
    eps = 1e-5
    fd = (scipy_frechet(a.T + eps * d.T, w) - scipy_frechet(a.T - eps * d.T, w)) / (2 * eps)
    np.testing.assert_allclose(np.tensordot(h, d, axes=2), fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(a), jax.grad(f)(a), rtol=1e-14)


def test_vmap_of_grad_matches_per_matrix():
    rng = rng_for(26)
    norms = np.array([0.01, 0.1, 0.4, 1.0, 2.0, 7.0, 60.0, 200.0])
    a = rng.standard_normal((8, 5, 5))
    a = a / np.linalg.norm(a, 1, axis=(-2, -1))[:, None, None] * norms[:, None, None]
    w = rng.standard_normal((8, 5, 5))
    g = jax.vmap(jax.grad(lambda m, v: jnp.sum(v * expm(m))))(a, w)
    for k in range(8):
        assert rel1(g[k], scipy_frechet(a[k].T, w[k])) <= 1e-11


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------
def _matrix(n, bound):
    return st.lists(
        st.floats(-bound, bound, allow_nan=False, allow_subnormal=False),
        min_size=n * n,
        max_size=n * n,
    ).map(lambda v: np.array(v).reshape(n, n))


matrices = st.integers(1, 3).flatmap(lambda n: _matrix(n, 3.0))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(matrices)
def test_property_inverse(a):
    x, y = np.asarray(expm(a)), np.asarray(expm(-a))
    n = a.shape[0]
    tol = 1e-13 * np.linalg.norm(x, 1) * np.linalg.norm(y, 1)
    np.testing.assert_allclose(x @ y, np.eye(n), atol=tol, rtol=0)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    st.integers(1, 3).flatmap(
        lambda n: st.tuples(_matrix(n, 3.0), _matrix(n, 1.0), _matrix(n, 1.0))
    ),
    st.floats(-2, 2),
    st.floats(-2, 2),
)
def test_property_frechet_linear_in_e(mats, alpha, beta):
    a, e1, e2 = mats
    lhs = np.asarray(expm_frechet(a, alpha * e1 + beta * e2))
    rhs = alpha * np.asarray(expm_frechet(a, e1)) + beta * np.asarray(expm_frechet(a, e2))
    scale = np.linalg.norm(sl.expm(np.abs(a)), 1) * (1 + abs(alpha) + abs(beta))
    np.testing.assert_allclose(lhs, rhs, atol=1e-13 * scale, rtol=0)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(matrices)
def test_property_symmetric_in_symmetric_out(a):
    s = a + a.T
    x = np.asarray(expm(s))
    np.testing.assert_allclose(x, x.T, atol=1e-13 * np.linalg.norm(x, 1), rtol=0)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------
def test_non_square_raises_with_shape():
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        expm(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        expm(np.zeros(3))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        expm_frechet(np.zeros((2, 2)), np.zeros((2, 3)))


def test_mismatched_shapes_raise_with_shapes():
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        expm_frechet(np.zeros((3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(2, 3, 3\).*\(4, 3, 3\)"):
        expm_frechet(np.zeros((2, 3, 3)), np.zeros((4, 3, 3)))


def test_complex_rejected():
    with pytest.raises(TypeError, match="real"):
        expm(np.eye(2, dtype=complex))


def test_integer_input_promoted():
    x = expm(np.array([[1, 0], [0, 2]]))
    assert jnp.issubdtype(x.dtype, jnp.floating)
    np.testing.assert_allclose(np.asarray(x), np.diag(np.exp([1.0, 2.0])), rtol=1e-14)
    ell = expm_frechet(np.zeros((2, 2), dtype=int), np.eye(2, dtype=int))
    np.testing.assert_allclose(np.asarray(ell), np.eye(2), rtol=1e-15)


def test_empty_batch():
    assert expm(np.zeros((0, 3, 3))).shape == (0, 3, 3)
    assert expm_frechet(np.zeros((3, 3)), np.zeros((0, 3, 3))).shape == (0, 3, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_gives_nonfinite_output_quickly(bad):
    f = jax.jit(expm)
    a = _case("random")
    f(a).block_until_ready()  # compile
    a_bad = a.copy()
    a_bad[0, 1] = bad
    start = time.perf_counter()
    x = np.asarray(f(a_bad))
    assert time.perf_counter() - start < 1.0
    assert not np.all(np.isfinite(x))
    # NaN stays NaN under differentiation too
    g = jax.jit(jax.grad(lambda m: jnp.sum(expm(m))))(a_bad)
    assert not np.all(np.isfinite(np.asarray(g)))


def test_nan_matrix_does_not_spoil_its_batch():
    rng = rng_for(27)
    a = rng.standard_normal((3, 4, 4)) * np.array([0.1, 1.0, 20.0])[:, None, None]
    a[1, 2, 3] = np.nan
    x = np.asarray(jax.jit(expm)(a))
    assert np.all(np.isnan(x[1]))
    for k in (0, 2):
        assert rel1(x[k], sl.expm(a[k])) <= 1e-12
