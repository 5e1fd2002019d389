"""Tests of kalmanad.model: the LinearSDE pytree, its defaults, checks and transformations."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalmanad.model import INITIAL_STATES, LinearSDE, drift_is_stable


def ou(**kw):
    """A 2-state, 1-observation model with a stable drift."""
    args = dict(
        drift=[[-1.0, 0.3], [0.0, -0.5]],
        diffusion=[[1.0, 0.2], [0.2, 0.5]],
        observation=[[1.0, 0.5]],
        observation_noise=[[0.1]],
    )
    args.update(kw)
    return LinearSDE(**args)


# --------------------------------------------------------------------------------------
# construction and defaults
# --------------------------------------------------------------------------------------
def test_defaults_are_zeros_and_stationary():
    m = ou()
    assert (m.n_states, m.n_obs, m.n_inputs) == (2, 1, 0)
    assert m.initial_state == "stationary"
    assert m.initial_mean is None and m.initial_cov is None
    np.testing.assert_array_equal(m.drift_intercept, np.zeros(2))
    np.testing.assert_array_equal(m.observation_intercept, np.zeros(1))
    assert m.input_effect.shape == (2, 0)
    assert m.observation_input_effect.shape == (1, 0)
    assert m.impulse_effect.shape == (2, 0)
    assert m.dtype == jnp.float64
    assert m.diffuse_scale == 1e6


def test_known_initial_state_from_initial_cov():
    m = ou(initial_cov=np.eye(2))
    assert m.initial_state == "known"
    np.testing.assert_array_equal(m.initial_mean, np.zeros(2))
    m = ou(initial_mean=[1.0, 2.0], initial_cov=np.eye(2), initial_state="known")
    np.testing.assert_array_equal(m.initial_mean, [1.0, 2.0])


def test_diffuse_initial_state():
    m = ou(initial_state="diffuse", diffuse_scale=1e7)
    assert m.initial_state == "diffuse"
    assert m.diffuse_scale == 1e7
    assert m.initial_cov is None
    np.testing.assert_array_equal(m.initial_mean, np.zeros(2))
    # an unstable drift is fine with a diffuse start
    m = ou(drift=[[0.5, 0.0], [0.0, 0.0]], initial_state="diffuse")
    assert not bool(m.is_stable())
    assert bool(m.is_valid())


def test_stationary_with_given_mean():
    m = ou(initial_mean=[3.0, 4.0])
    assert m.initial_state == "stationary"
    np.testing.assert_array_equal(m.initial_mean, [3.0, 4.0])


def test_input_columns_inferred_from_any_input_effect():
    m = ou(observation_input_effect=[[1.0, 2.0, 3.0]])
    assert m.n_inputs == 3
    assert m.input_effect.shape == (2, 3)
    assert m.impulse_effect.shape == (2, 3)
    np.testing.assert_array_equal(m.input_effect, np.zeros((2, 3)))
    m = ou(impulse_effect=[[1.0], [0.0]])
    assert m.n_inputs == 1
    assert m.observation_input_effect.shape == (1, 1)


def test_integer_input_promoted_and_dtypes_unified():
    m = LinearSDE([[-1]], [[1]], [[1]], [[1]])
    assert jnp.issubdtype(m.drift.dtype, jnp.floating)
    m = LinearSDE(np.array([[-1.0]], np.float32), np.array([[1.0]], np.float64), [[1.0]], [[1.0]])
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(m))
    m = LinearSDE(*(np.array([[v]], np.float32) for v in (-1.0, 1.0, 1.0, 1.0)))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(m))


def test_complex_input_rejected():
    with pytest.raises(TypeError, match="drift must be real"):
        LinearSDE(np.array([[-1 + 1j]]), [[1.0]], [[1.0]], [[1.0]])


def test_immutable_repr_and_replace():
    m = ou()
    with pytest.raises(AttributeError, match="immutable"):
        m.drift = jnp.zeros((2, 2))
    assert "LinearSDE(" in repr(m) and "initial_state='stationary'" in repr(m)
    with pytest.raises(AttributeError):
        m.no_such_field
    m2 = m.replace(observation_noise=[[0.2]])
    np.testing.assert_array_equal(m2.observation_noise, [[0.2]])
    np.testing.assert_array_equal(m2.drift, m.drift)
    assert m2.initial_state == "stationary"
    known = m.replace(initial_cov=np.eye(2))
    assert known.initial_state == "known"
    assert known.replace(initial_state="diffuse").initial_cov is None
    with pytest.raises(ValueError, match="observation_noise must be positive semi-definite"):
        m.replace(observation_noise=[[-1.0]])


# --------------------------------------------------------------------------------------
# pytree and transformations
# --------------------------------------------------------------------------------------
def test_pytree_round_trip():
    m = ou(initial_cov=np.eye(2), input_effect=[[1.0], [2.0]], diffuse_scale=5.0)
    leaves, treedef = jax.tree.flatten(m)
    assert len(leaves) == 11
    m2 = jax.tree.unflatten(treedef, leaves)
    assert isinstance(m2, LinearSDE)
    assert m2.initial_state == "known" and m2.diffuse_scale == 5.0
    for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(m2), strict=True):
        np.testing.assert_array_equal(a, b)
    # None fields stay None, aux data survives tree_map
    s = ou()
    assert len(jax.tree.leaves(s)) == 9
    doubled = jax.tree.map(lambda x: 2 * x, s)
    assert doubled.initial_cov is None and doubled.initial_state == "stationary"
    np.testing.assert_array_equal(doubled.drift, 2 * s.drift)
    # key paths name the fields
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(m)[0]]
    assert paths[0] == ".drift" and paths[-1] == ".initial_cov"
    # different static choices give different tree structures
    assert jax.tree.structure(ou()) != jax.tree.structure(ou(initial_state="diffuse"))


def test_jit_vmap_grad_through_a_model():
    m = ou()

    @jax.jit
    def f(model):
        return jnp.sum(model.drift**2) + jnp.sum(model.diffusion)

    assert np.isclose(f(m), np.sum(np.asarray(m.drift) ** 2) + np.sum(m.diffusion))
    out = jax.jit(lambda model: model.replace(drift=2 * model.drift))(m)
    np.testing.assert_array_equal(out.drift, 2 * m.drift)

    drifts = -jnp.arange(1.0, 4.0)[:, None, None] * jnp.eye(2)
    batched = jax.vmap(lambda a: LinearSDE(a, jnp.eye(2), jnp.ones((1, 2)), jnp.eye(1)))(drifts)
    assert batched.drift.shape == (3, 2, 2)
    assert batched.drift_intercept.shape == (3, 2)
    assert batched.n_states == 2 and batched.n_obs == 1 and batched.n_inputs == 0
    np.testing.assert_array_equal(jax.vmap(LinearSDE.is_valid)(batched), [True] * 3)

    def loss(theta):
        model = LinearSDE(
            drift=-jnp.exp(theta) * jnp.eye(2),
            diffusion=jnp.eye(2),
            observation=jnp.ones((1, 2)),
            observation_noise=jnp.eye(1),
        )
        return jnp.sum(model.drift**2)

    np.testing.assert_allclose(jax.grad(loss)(0.3), 4 * np.exp(0.6))


def test_traced_construction_never_raises():
    @jax.jit
    def build(a, q):
        m = LinearSDE(a, q, jnp.ones((1, 2)), jnp.eye(1))
        return m.is_valid(), m.is_stable()

    ok, stable = build(jnp.eye(2), jnp.eye(2))  # unstable drift, stationary start
    assert not bool(ok) and not bool(stable)
    ok, _ = build(-jnp.eye(2), jnp.array([[1.0, 0.0], [0.0, -1.0]]))  # indefinite
    assert not bool(ok)
    ok, _ = build(-jnp.eye(2), jnp.array([[jnp.nan, 0.0], [0.0, 1.0]]))
    assert not bool(ok)
    ok, _ = build(-jnp.eye(2), jnp.array([[1.0, 0.5], [0.0, 1.0]]))  # asymmetric
    assert not bool(ok)
    ok, stable = build(-jnp.eye(2), jnp.eye(2))
    assert bool(ok) and bool(stable)


# --------------------------------------------------------------------------------------
# stability
# --------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_stability_concrete_and_traced_agree(seed, n):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n)) + rng.uniform(-2, 1) * np.eye(n)
    expected = np.max(np.linalg.eigvals(a).real) < 0
    lam = np.max(np.linalg.eigvals(a).real)
    if abs(lam) < 1e-3:  # too close to the boundary for a tolerance-free comparison
        return
    assert bool(drift_is_stable(a)) == expected
    assert bool(jax.jit(drift_is_stable)(a)) == expected


def test_singular_drift_is_not_stable():
    for a in ([[0.0]], [[0.0, 1.0], [0.0, 0.0]], [[-1.0, 0.0], [0.0, 0.0]]):
        assert not bool(drift_is_stable(a))
        assert not bool(jax.jit(drift_is_stable)(jnp.asarray(a)))
    assert not bool(drift_is_stable([[np.nan]]))


def test_check_stable():
    ou().check_stable()
    m = ou(drift=[[0.1, 0.0], [0.0, -1.0]], initial_cov=np.eye(2))
    with pytest.raises(ValueError, match=r"drift is not stable: .* 0\.1"):
        m.check_stable()
    jax.jit(lambda model: model.check_stable().drift)(m)  # traced: nothing to check


# --------------------------------------------------------------------------------------
# every validation error
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        (
            dict(drift=[[-1.0, 0.0]]),
            "drift must be a square (n, n) matrix with n >= 1, got shape (1, 2)",
        ),
        (dict(drift=np.zeros((0, 0))), "drift must be a square (n, n) matrix"),
        (
            dict(observation=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
            "observation has shape (2, 3) but drift is (2, 2): expected (m, 2)",
        ),
        (dict(observation=[1.0, 0.0]), "observation has shape (2,) but drift is (2, 2)"),
        (dict(diffusion=np.eye(3)), "diffusion has shape (3, 3) but expected (2, 2)"),
        (
            dict(observation_noise=np.eye(2)),
            "observation_noise has shape (2, 2) but expected (1, 1)",
        ),
        (dict(drift_intercept=[1.0]), "drift_intercept has shape (1,) but expected (2,)"),
        (
            dict(observation_intercept=[1.0, 2.0]),
            "observation_intercept has shape (2,) but expected (1,)",
        ),
        (
            dict(input_effect=[[1.0, 2.0]]),
            "input_effect has shape (1, 2) but expected (n, p) with n=2",
        ),
        (
            dict(observation_input_effect=[[1.0], [2.0]]),
            "observation_input_effect has shape (2, 1) but expected (m, p) with m=1",
        ),
        (
            dict(input_effect=np.ones((2, 2)), impulse_effect=np.ones((2, 3))),
            "impulse_effect has shape (2, 3) but input_effect has 2 input columns",
        ),
        (dict(initial_mean=[0.0, 0.0, 0.0]), "initial_mean has shape (3,) but expected (2,)"),
        (dict(initial_cov=np.eye(3)), "initial_cov has shape (3, 3) but expected (2, 2)"),
    ],
)
def test_shape_errors(kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        ou(**kw)


def test_shape_errors_also_under_jit():
    with pytest.raises(ValueError, match=re.escape("observation has shape (1, 3)")):
        jax.jit(lambda a: LinearSDE(a, jnp.eye(2), jnp.ones((1, 3)), jnp.eye(1)))(-jnp.eye(2))


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        (dict(drift=[[np.nan, 0.0], [0.0, -1.0]]), "drift must be finite, got nan at index (0, 0)"),
        (dict(observation=[[1.0, np.inf]]), "observation must be finite"),
        (dict(drift_intercept=[0.0, np.nan]), "drift_intercept must be finite"),
        (
            dict(diffusion=[[1.0, 0.5], [0.0, 1.0]]),
            "diffusion must be symmetric, but diffusion[0, 1]=0.5",
        ),
        (
            dict(diffusion=[[1.0, 2.0], [2.0, 1.0]]),
            "diffusion must be positive semi-definite, but its smallest eigenvalue is -1",
        ),
        (dict(observation_noise=[[-0.1]]), "observation_noise must be positive semi-definite"),
        (dict(initial_cov=[[1.0, 0.0], [0.0, -1.0]]), "initial_cov must be positive semi-definite"),
        (dict(initial_cov=[[1.0, 0.1], [0.0, 1.0]]), "initial_cov must be symmetric"),
        (
            dict(drift=[[0.5, 0.0], [0.0, -1.0]]),
            "a stationary initial state needs a stable drift, but the largest real part of the "
            "eigenvalues of drift is 0.5",
        ),
        (dict(drift=[[0.0, 1.0], [0.0, 0.0]]), "a stationary initial state needs a stable drift"),
        (
            dict(initial_state="bogus"),
            "initial_state must be one of ('known', 'stationary', 'diffuse')",
        ),
        (dict(initial_state="known"), "initial_state='known' needs initial_cov"),
        (
            dict(initial_state="diffuse", initial_cov=np.eye(2)),
            "initial_state='diffuse' takes no initial_cov",
        ),
        (
            dict(initial_state="stationary", initial_cov=np.eye(2)),
            "initial_state='stationary' takes no",
        ),
        (
            dict(initial_state="diffuse", diffuse_scale=-1.0),
            "diffuse_scale must be a positive finite",
        ),
        (
            dict(initial_state="diffuse", diffuse_scale=np.inf),
            "diffuse_scale must be a positive finite",
        ),
    ],
)
def test_value_errors(kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        ou(**kw)


def test_psd_singular_covariances_are_fine():
    m = ou(
        diffusion=[[0.0, 0.0], [0.0, 1.0]], observation_noise=[[0.0]], initial_cov=np.zeros((2, 2))
    )
    assert bool(m.is_valid())
    assert INITIAL_STATES == ("known", "stationary", "diffuse")
