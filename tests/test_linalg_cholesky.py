"""Tests for kalmanad.linalg.cholesky: cho_solve, logdet_spd, gaussian_logpdf(_chol)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from kalmanad.linalg.cholesky import (
    cho_solve,
    gaussian_logpdf,
    gaussian_logpdf_chol,
    logdet_spd,
)

RTOL = 1e-12

# Jitted aliases: one compilation per shape instead of op-by-op dispatch keeps the file
# fast. The eager path is exercised by the reference and bad-input tests.
j_cho_solve = jax.jit(cho_solve)
j_logdet_spd = jax.jit(logdet_spd)
j_gaussian_logpdf = jax.jit(gaussian_logpdf)
j_gaussian_logpdf_chol = jax.jit(gaussian_logpdf_chol)


def spd(rng, n, batch=()):
    """Random well-conditioned SPD matrices, shape batch + (n, n)."""
    a = rng.normal(size=(*batch, n, n))
    return a @ np.swapaxes(a, -1, -2) / n + 0.5 * np.eye(n)


def mvn_logpdf(v, s):
    """scipy reference, looping over leading batch dims (already broadcast)."""
    v, s = np.broadcast_arrays(v[..., None, :], s)
    v = v[..., 0, :]
    out = np.empty(v.shape[:-1])
    for idx in np.ndindex(out.shape):
        out[idx] = scipy.stats.multivariate_normal(np.zeros(v.shape[-1]), s[idx]).logpdf(v[idx])
    return out


# ------------------------------------------------------------------ values vs references


@pytest.mark.parametrize("n", [1, 2, 5])
def test_cho_solve_matches_scipy(n):
    rng = np.random.default_rng(0)
    s = spd(rng, n)
    l = np.linalg.cholesky(s)
    for b in (rng.normal(size=n), rng.normal(size=(n, 3)), rng.normal(size=(n, 1))):
        got = cho_solve(l, b)
        want = scipy.linalg.cho_solve((l, True), b)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-13)


def test_cho_solve_ignores_upper_triangle_and_accepts_negative_diagonal():
    rng = np.random.default_rng(1)
    s = spd(rng, 4)
    l = np.linalg.cholesky(s)
    b = rng.normal(size=(4, 2))
    junk = l + np.triu(rng.normal(size=(4, 4)), 1)
    np.testing.assert_allclose(j_cho_solve(junk, b), j_cho_solve(l, b), rtol=0, atol=0)
    # Flipping the sign of columns keeps l lᵀ = s.
    flipped = l * np.array([1.0, -1.0, 1.0, -1.0])
    np.testing.assert_allclose(j_cho_solve(flipped, b), np.linalg.solve(s, b), rtol=1e-11)


def test_cho_solve_batching_and_broadcasting():
    rng = np.random.default_rng(2)
    s = spd(rng, 3, (4, 2))
    l = np.linalg.cholesky(s)
    # Batched factor, single vector: broadcast.
    b = rng.normal(size=3)
    got = j_cho_solve(l, b)
    assert got.shape == (4, 2, 3)
    np.testing.assert_allclose(got, np.linalg.solve(s, b[:, None])[..., 0], rtol=1e-11)
    # Batched factor, single matrix: broadcast.
    b = rng.normal(size=(3, 5))
    got = j_cho_solve(l, b)
    assert got.shape == (4, 2, 3, 5)
    np.testing.assert_allclose(got, np.linalg.solve(s, b), rtol=1e-11)
    # Broadcasting batch dims on both sides.
    b = rng.normal(size=(7, 1, 1, 3, 2))
    got = j_cho_solve(l, b)
    assert got.shape == (7, 4, 2, 3, 2)
    np.testing.assert_allclose(got, np.linalg.solve(s, b), rtol=1e-11)
    # Unbatched factor, batched matrices; a batch of vectors is passed as (..., n, 1).
    v = rng.normal(size=(6, 3))
    got = j_cho_solve(l[0, 0], v[..., None])[..., 0]
    np.testing.assert_allclose(got, np.linalg.solve(s[0, 0], v.T).T, rtol=1e-11)
    # Same under vmap (inside, b is a vector).
    got_vmap = jax.vmap(cho_solve, in_axes=(None, 0))(l[0, 0], v)
    np.testing.assert_allclose(got_vmap, got, rtol=1e-13)
    # And vmapped over both.
    got_vmap = jax.vmap(cho_solve)(l[:, 0], v[:4])
    want = np.stack([scipy.linalg.cho_solve((l[i, 0], True), v[i]) for i in range(4)])
    np.testing.assert_allclose(got_vmap, want, rtol=1e-11)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_logdet_spd_matches_numpy(n):
    rng = np.random.default_rng(3)
    s = spd(rng, n, (5,))
    sign, want = np.linalg.slogdet(s)
    assert np.all(sign == 1)
    got = j_logdet_spd(s)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(j_logdet_spd(s[0]), want[0], rtol=1e-12, atol=1e-12)


def test_symmetric_argument_is_read_as_its_symmetric_part():
    rng = np.random.default_rng(4)
    s = spd(rng, 4)
    skew = rng.normal(size=(4, 4))
    skew = skew - skew.T
    v = rng.normal(size=4)
    np.testing.assert_allclose(j_logdet_spd(s + 0.1 * skew), j_logdet_spd(s), rtol=1e-13)
    np.testing.assert_allclose(
        j_gaussian_logpdf(v, s + 0.1 * skew), j_gaussian_logpdf(v, s), rtol=1e-13
    )
    g = jax.jit(jax.grad(logdet_spd))(s + 0.1 * skew)
    np.testing.assert_allclose(g, g.T, rtol=0, atol=1e-14)
    g = jax.jit(jax.grad(gaussian_logpdf, argnums=1))(v, s + 0.1 * skew)
    np.testing.assert_allclose(g, g.T, rtol=0, atol=1e-14)


@pytest.mark.parametrize("m", [1, 2, 5])
def test_gaussian_logpdf_matches_scipy(m):
    rng = np.random.default_rng(5)
    s = spd(rng, m, (3,))
    v = rng.normal(size=(3, m))
    want = mvn_logpdf(v, s)
    np.testing.assert_allclose(j_gaussian_logpdf(v, s), want, rtol=1e-12)
    np.testing.assert_allclose(j_gaussian_logpdf_chol(v, np.linalg.cholesky(s)), want, rtol=1e-12)


def test_gaussian_logpdf_broadcasting():
    rng = np.random.default_rng(6)
    s = spd(rng, 3, (4,))
    v = rng.normal(size=(5, 1, 3))
    got = j_gaussian_logpdf(v, s)
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, mvn_logpdf(v, s), rtol=1e-12)
    # Shared s, batch of v; batch of s, single v.
    np.testing.assert_allclose(j_gaussian_logpdf(v[:, 0], s[0]), mvn_logpdf(v[:, 0], s[0]))
    np.testing.assert_allclose(j_gaussian_logpdf(v[0, 0], s), mvn_logpdf(v[0, 0], s))
    l = np.linalg.cholesky(s)
    np.testing.assert_allclose(j_gaussian_logpdf_chol(v, l), got, rtol=1e-12)
    # vmap agrees with the batched call.
    np.testing.assert_allclose(
        jax.vmap(gaussian_logpdf)(v[:4, 0], s), got[np.arange(4), np.arange(4)]
    )


def test_gaussian_logpdf_chol_negative_diagonal():
    rng = np.random.default_rng(7)
    s = spd(rng, 4)
    v = rng.normal(size=4)
    l = np.linalg.cholesky(s) * np.array([-1.0, 1.0, -1.0, -1.0])
    np.testing.assert_allclose(j_gaussian_logpdf_chol(v, l), mvn_logpdf(v, s), rtol=1e-12)


# --------------------------------------------------------------------------- gradients


def _check(f, args, order):
    # jit keeps check_grads fast: each transformation compiles once instead of
    # dispatching op by op.
    check_grads(jax.jit(f), args, order=order, modes=("fwd", "rev"))


def test_check_grads_cho_solve():
    rng = np.random.default_rng(8)
    l = np.linalg.cholesky(spd(rng, 3))
    _check(cho_solve, (l, rng.normal(size=(3, 2))), order=2)
    _check(cho_solve, (l, rng.normal(size=3)), order=1)
    # Broadcast batch: a batched factor against a shared right-hand side, and vice versa.
    lb = np.linalg.cholesky(spd(rng, 3, (2,)))
    _check(cho_solve, (lb, rng.normal(size=(3, 2))), order=1)
    _check(cho_solve, (l, rng.normal(size=(2, 3, 1))), order=1)


def test_check_grads_logdet_spd():
    rng = np.random.default_rng(9)
    _check(logdet_spd, (spd(rng, 3),), order=2)
    _check(logdet_spd, (spd(rng, 2, (3,)),), order=1)


def test_check_grads_gaussian_logpdf():
    rng = np.random.default_rng(10)
    s = spd(rng, 3)
    _check(gaussian_logpdf, (rng.normal(size=3), s), order=2)
    # Broadcast: shared s, batch of v (the s cotangent is summed over the batch).
    _check(gaussian_logpdf, (rng.normal(size=(2, 3)), s), order=1)


def test_check_grads_gaussian_logpdf_chol():
    rng = np.random.default_rng(11)
    # A factor with negative diagonal entries is as good as the Cholesky factor.
    l = np.linalg.cholesky(spd(rng, 3)) * np.array([-1.0, 1.0, -1.0])
    _check(gaussian_logpdf_chol, (rng.normal(size=3), l), order=2)
    lb = np.linalg.cholesky(spd(rng, 3, (2,)))
    _check(gaussian_logpdf_chol, (rng.normal(size=3), lb), order=1)


def test_reverse_rules_are_the_closed_forms():
    rng = np.random.default_rng(11)
    n = 4
    s = spd(rng, n)
    l = np.linalg.cholesky(s)
    sinv = np.linalg.inv(s)
    # cho_solve: B̄ = S⁻¹ Z̄, L̄ = −tril((B̄ Zᵀ + Z B̄ᵀ) L).
    b = rng.normal(size=(n, 2))
    zbar = rng.normal(size=(n, 2))
    z = j_cho_solve(l, b)
    lbar, bbar = jax.jit(lambda l, b, zbar: jax.vjp(cho_solve, l, b)[1](zbar))(l, b, zbar)
    want_bbar = sinv @ zbar
    np.testing.assert_allclose(bbar, want_bbar, rtol=1e-11)
    want_lbar = -np.tril((want_bbar @ z.T + z @ want_bbar.T) @ l)
    np.testing.assert_allclose(lbar, want_lbar, rtol=1e-10, atol=1e-13)
    # logdet: S̄ = S⁻¹.
    np.testing.assert_allclose(jax.jit(jax.grad(logdet_spd))(s), sinv, rtol=1e-11)
    # Gaussian: S̄ = −½(S⁻¹ − z zᵀ), v̄ = −z.
    v = rng.normal(size=n)
    z = sinv @ v
    gv, gs = jax.jit(jax.grad(gaussian_logpdf, argnums=(0, 1)))(v, s)
    np.testing.assert_allclose(gv, -z, rtol=1e-11)
    np.testing.assert_allclose(gs, -0.5 * (sinv - np.outer(z, z)), rtol=1e-10, atol=1e-14)
    # Factor form: L̄ = −tril((S⁻¹ − z zᵀ) L), v̄ = −z.
    gv, gl = jax.jit(jax.grad(gaussian_logpdf_chol, argnums=(0, 1)))(v, l)
    np.testing.assert_allclose(gv, -z, rtol=1e-11)
    np.testing.assert_allclose(gl, -np.tril((sinv - np.outer(z, z)) @ l), rtol=1e-10, atol=1e-14)


def test_one_factorisation_per_call_including_the_gradient():
    rng = np.random.default_rng(12)
    s = spd(rng, 3)
    v = rng.normal(size=3)

    def count(f, *args):
        return str(jax.make_jaxpr(f)(*args)).count("cholesky ")

    vg = jax.value_and_grad(gaussian_logpdf, argnums=(0, 1))
    assert count(vg, v, s) == 1
    assert count(jax.value_and_grad(logdet_spd), s) == 1
    l = np.linalg.cholesky(s)
    assert count(jax.value_and_grad(gaussian_logpdf_chol, argnums=(0, 1)), v, l) == 0


def test_jvp_jacfwd_hessian_vmap_agree():
    rng = np.random.default_rng(13)
    s = spd(rng, 3)
    v = rng.normal(size=3)
    f = gaussian_logpdf
    # Forward-over-forward against hessian (forward-over-reverse); reverse-over-reverse
    # is covered by check_grads.
    h_fwd = jax.jit(jax.jacfwd(jax.jacfwd(f, argnums=1), argnums=1))(v, s)
    h = jax.jit(jax.hessian(f, argnums=(0, 1)))(v, s)
    np.testing.assert_allclose(h[1][1], h_fwd, rtol=1e-10, atol=1e-13)
    # The s-Hessian is the symmetric one: invariant under transposing either slot.
    np.testing.assert_allclose(h_fwd, np.swapaxes(h_fwd, 0, 1), rtol=1e-10, atol=1e-13)
    # Hessian w.r.t. v is −S⁻¹.
    np.testing.assert_allclose(h[0][0], -np.linalg.inv(s), rtol=1e-11)
    # jacfwd == jacrev for cho_solve and logdet.
    l = np.linalg.cholesky(s)
    b = rng.normal(size=(3, 2))
    np.testing.assert_allclose(
        jax.jit(jax.jacfwd(cho_solve))(l, b),
        jax.jit(jax.jacrev(cho_solve))(l, b),
        rtol=1e-10,
        atol=1e-13,
    )
    # vmap of the gradient == gradient of the batched sum.
    sb = spd(rng, 3, (4,))
    vb = rng.normal(size=(4, 3))
    g_vmap = jax.jit(jax.vmap(jax.grad(f, argnums=1)))(vb, sb)
    g_sum = jax.jit(jax.grad(lambda v, s: f(v, s).sum(), argnums=1))(vb, sb)
    np.testing.assert_allclose(g_vmap, g_sum, rtol=1e-12)


# ---------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(1, 6), k=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_property_cho_solve_solves(n, k, seed):
    rng = np.random.default_rng(seed)
    s = spd(rng, n)
    b = rng.normal(size=(n, k))
    z = j_cho_solve(np.linalg.cholesky(s), b)
    np.testing.assert_allclose(s @ z, b, rtol=1e-9, atol=1e-10)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n1=st.integers(1, 4), n2=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_property_logdet_block_diagonal_additive(n1, n2, seed):
    rng = np.random.default_rng(seed)
    a, b = spd(rng, n1), spd(rng, n2)
    np.testing.assert_allclose(
        j_logdet_spd(scipy.linalg.block_diag(a, b)), j_logdet_spd(a) + j_logdet_spd(b), atol=1e-12
    )


@settings(max_examples=25, deadline=None, derandomize=True)
@given(m=st.integers(1, 5), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31 - 1))
def test_property_gaussian_mode_at_zero(m, scale, seed):
    rng = np.random.default_rng(seed)
    s = scale * spd(rng, m)
    v = rng.normal(size=m)
    at_v, at_0 = j_gaussian_logpdf(v, s), j_gaussian_logpdf(np.zeros(m), s)
    assert at_v <= at_0
    np.testing.assert_allclose(at_0, -0.5 * (m * np.log(2 * np.pi) + j_logdet_spd(s)), rtol=1e-12)
    np.testing.assert_allclose(j_gaussian_logpdf_chol(v, np.linalg.cholesky(s)), at_v, rtol=1e-11)


# --------------------------------------------------------------------------- bad input


def test_bad_shapes_raise_value_error_naming_shapes():
    l = np.eye(3)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        cho_solve(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match=r"b.shape=\(4,\)"):
        cho_solve(l, np.ones(4))
    with pytest.raises(ValueError, match=r"b.shape=\(2, 4, 3\)"):
        cho_solve(l, np.ones((2, 4, 3)))
    with pytest.raises(ValueError, match="scalar"):
        cho_solve(l, 1.0)
    with pytest.raises(ValueError, match=r"l.shape=\(2, 3, 3\).*b.shape=\(4, 3, 1\)"):
        cho_solve(np.broadcast_to(l, (2, 3, 3)), np.ones((4, 3, 1)))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        logdet_spd(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(0, 0\)"):
        logdet_spd(np.ones((0, 0)))
    with pytest.raises(ValueError, match=r"v.shape=\(2,\).*s.shape=\(3, 3\)|s.shape=\(3, 3\)"):
        gaussian_logpdf(np.ones(2), l)
    with pytest.raises(ValueError, match=r"v.shape=\(\)"):
        gaussian_logpdf(1.0, np.eye(1))
    with pytest.raises(ValueError, match=r"v.shape=\(4, 3\).*s.shape=\(2, 3, 3\)"):
        gaussian_logpdf(np.ones((4, 3)), np.broadcast_to(l, (2, 3, 3)))
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        gaussian_logpdf_chol(np.ones(3), np.ones((3, 2)))
    # Checks are static: they also fire while tracing under jit.
    with pytest.raises(ValueError, match=r"b.shape=\(4,\)"):
        jax.jit(cho_solve)(l, np.ones(4))


def test_integer_input_promoted_and_dtypes():
    assert logdet_spd(np.eye(3, dtype=np.int32)).dtype == jnp.float64
    np.testing.assert_allclose(logdet_spd(2 * np.eye(3, dtype=np.int64)), 3 * np.log(2.0))
    z = cho_solve(np.eye(2, dtype=np.int32), np.array([1, 2]))
    assert z.dtype == jnp.float64
    np.testing.assert_allclose(z, [1.0, 2.0])
    out = gaussian_logpdf(np.zeros(2, dtype=np.float32), np.eye(2))
    assert out.dtype == jnp.float64
    with pytest.raises(TypeError, match="real"):
        logdet_spd(np.eye(2, dtype=np.complex128))


def test_not_positive_definite_gives_minus_inf_with_zero_gradients_under_jit():
    rng = np.random.default_rng(14)
    good = spd(rng, 3)
    indefinite = np.diag([1.0, -1.0, 2.0])
    singular = np.diag([1.0, 0.0, 2.0])
    s = np.stack([good, indefinite, singular])
    v = rng.normal(size=(3, 3))
    total = jax.jit(jax.value_and_grad(lambda v, s: gaussian_logpdf(v, s).sum(), argnums=(0, 1)))
    value, (gv, gs) = total(v[:1], s[:1])
    assert np.isfinite(value)
    per = jax.jit(gaussian_logpdf)(v, s)
    # The sum over a batch with bad elements is −inf, and its gradient is finite.
    value_all, (gv_all, gs_all) = total(v, s)
    assert value_all == -np.inf
    np.testing.assert_allclose(per[0], mvn_logpdf(v[0], good), rtol=1e-12)
    assert per[1] == -np.inf and per[2] == -np.inf
    assert np.all(np.isfinite(gv_all)) and np.all(np.isfinite(gs_all))
    np.testing.assert_array_equal(gv_all[1:], 0.0)
    np.testing.assert_array_equal(gs_all[1:], 0.0)
    # The good element's gradient is untouched by its bad neighbours.
    np.testing.assert_allclose(gv_all[0], gv[0], rtol=1e-12)
    np.testing.assert_allclose(gs_all[0], gs[0], rtol=1e-12)
    # Direct gradient of the −inf value: zero, not nan; so is the Hessian.
    value, (gv, gs) = jax.jit(jax.value_and_grad(gaussian_logpdf, argnums=(0, 1)))(v[1], indefinite)
    assert value == -np.inf
    np.testing.assert_array_equal(gv, 0.0)
    np.testing.assert_array_equal(gs, 0.0)
    h = jax.jit(jax.hessian(gaussian_logpdf, argnums=(0, 1)))(v[1], indefinite)
    for block in jax.tree_util.tree_leaves(h):
        np.testing.assert_array_equal(block, 0.0)
    # The factor form: a singular factor is "not positive-definite" too.
    l = np.tril(rng.normal(size=(3, 3)))
    l[1, 1] = 0.0
    value, (gv, gl) = jax.jit(jax.value_and_grad(gaussian_logpdf_chol, argnums=(0, 1)))(v[0], l)
    assert value == -np.inf
    np.testing.assert_array_equal(gv, 0.0)
    np.testing.assert_array_equal(gl, 0.0)


def test_logdet_spd_not_positive_definite_is_nan_with_zero_gradient():
    # det = 2 > 0, but the matrix is indefinite: no SPD log-determinant exists.
    s = np.diag([-1.0, -2.0, 1.0])
    value, g = jax.jit(jax.value_and_grad(logdet_spd))(s)
    assert np.isnan(value)
    np.testing.assert_array_equal(g, 0.0)

    # So masking the value with jnp.where leaves finite gradients, also at second order.
    def masked(s):
        return jnp.where(jnp.isnan(logdet_spd(s)), -1.0, logdet_spd(s))

    np.testing.assert_array_equal(jax.jit(jax.grad(masked))(s), 0.0)
    np.testing.assert_array_equal(jax.jit(jax.hessian(masked))(s), 0.0)


def test_nan_in_gives_nan_out_without_exception():
    s = np.eye(2)
    s_nan = np.array([[1.0, np.nan], [np.nan, 1.0]])
    v = np.ones(2)
    f = jax.jit(jax.value_and_grad(gaussian_logpdf, argnums=(0, 1)))
    value, (gv, gs) = f(v, s_nan)
    assert np.isnan(value) and np.all(np.isnan(gs))
    value, (gv, gs) = f(np.array([np.nan, 0.0]), s)
    assert np.isnan(value) and np.isnan(gv[0])
    assert np.isnan(jax.jit(logdet_spd)(s_nan))
    assert np.isnan(jax.grad(logdet_spd)(s_nan)).all()
    assert np.all(np.isnan(jax.jit(cho_solve)(np.eye(2), np.array([np.nan, 1.0]))[0]))
    assert np.isnan(jax.jit(gaussian_logpdf_chol)(v, np.diag([1.0, np.nan])))


# ----------------------------------------------------------------------------- float32


def _all_outputs(v, s, l, b):
    """Every public function and the gradients of its sum, in one jitted program."""

    def total(v, s, l, b):
        return (
            gaussian_logpdf(v, s).sum()
            + gaussian_logpdf_chol(v, l).sum()
            + logdet_spd(s).sum()
            + cho_solve(l, b).sum()
        )

    values = (cho_solve(l, b), logdet_spd(s), gaussian_logpdf(v, s), gaussian_logpdf_chol(v, l))
    return values, jax.grad(total, argnums=(0, 1, 2, 3))(v, s, l, b)


def test_float32():
    rng = np.random.default_rng(15)
    s64 = spd(rng, 4, (3,))
    v64 = rng.normal(size=(3, 4))
    b64 = rng.normal(size=(3, 4, 2))
    l64 = np.linalg.cholesky(s64)
    args64 = (v64, s64, l64, b64)
    args32 = tuple(x.astype(np.float32) for x in args64)
    f = jax.jit(_all_outputs)
    values32, grads32 = f(*args32)
    _, grads64 = f(*args64)
    for x in jax.tree_util.tree_leaves((values32, grads32)):
        assert x.dtype == jnp.float32
    # Against the references and against the same computation in float64.
    z, ld, lp, lpc = values32
    np.testing.assert_allclose(z, np.linalg.solve(s64, b64), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ld, np.linalg.slogdet(s64)[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lp, mvn_logpdf(v64, s64), rtol=1e-5)
    np.testing.assert_allclose(lpc, mvn_logpdf(v64, s64), rtol=1e-5)
    for g32, g64 in zip(grads32, grads64, strict=True):
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4)
    # Not positive-definite in float32: −inf with zero gradients.
    bad = np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32)
    value, (gv, gs) = jax.jit(jax.value_and_grad(gaussian_logpdf, argnums=(0, 1)))(
        args32[0][0], bad
    )
    assert value == -np.inf and value.dtype == jnp.float32
    np.testing.assert_array_equal(gv, 0.0)
    np.testing.assert_array_equal(gs, 0.0)
