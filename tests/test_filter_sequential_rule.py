"""The sequential filter's derived tangent rule against JAX's own derivative of a plain filter.

``filter_sequential`` differentiates through a hand-derived tangent recursion
(``kalman_scan_tangent``; reverse mode transposes it into the adjoint filter), with and
without ``checkpoint``. The reference is an independent textbook filter (``lax.scan``,
``jnp.linalg``) differentiated by JAX. Both must agree for every output, in both modes
and at second order, with missing values, zero steps and invalid steps.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import random_ssm, to_jax
from jax.test_util import check_grads

from kalmanad.filter.sequential import filter_sequential
from kalmanad.ssm import DiscreteSSM

OUTPUTS = slice(0, 6)  # total, pointwise, predicted/filtered means and covariances


def _rule(ssm, y, checkpoint=None):
    return filter_sequential(ssm, y, checkpoint=checkpoint)[OUTPUTS]


def _reference(ssm, y):
    """A plain covariance-form filter (valid models only): gain by a Cholesky solve,
    missing entries by zero rows and unit variances, covariances read as their
    symmetric parts (kalmanad's convention), JAX's derivative of every step."""
    sym = lambda c: 0.5 * (c + jnp.swapaxes(c, -1, -2))  # noqa: E731
    ssm = ssm._replace(
        transition_cov=sym(ssm.transition_cov),
        observation_cov=sym(ssm.observation_cov),
        initial_cov=sym(ssm.initial_cov),
    )

    def step(carry, inp):
        m, P = carry
        A, b, Q, H, d, R, yk = inp
        obs = ~jnp.isnan(yk)
        H = jnp.where(obs[:, None], H, 0.0)
        d = jnp.where(obs, d, 0.0)
        R = jnp.where(obs[:, None] & obs[None], R, 0.0) + jnp.diag(jnp.where(obs, 0.0, 1.0))
        m_p = A @ m + b
        P_p = A @ P @ A.T + Q
        P_p = 0.5 * (P_p + P_p.T)
        S = H @ P_p @ H.T + R
        L = jnp.linalg.cholesky(S)
        v = jnp.where(obs, yk, 0.0) - H @ m_p - d
        w = jax.scipy.linalg.solve_triangular(L, v, lower=True)
        n_obs = jnp.sum(obs)
        ll = -0.5 * (n_obs * math.log(2 * math.pi) + w @ w) - jnp.sum(jnp.log(jnp.diag(L)))
        K = jax.scipy.linalg.cho_solve((L, True), H @ P_p).T
        m_f = m_p + K @ v
        P_f = P_p - K @ S @ K.T
        return (m_f, P_f), (ll, m_p, P_p, m_f, P_f)

    xs = (*ssm[:6], y)
    _, (ll, m_p, P_p, m_f, P_f) = jax.lax.scan(step, (ssm.initial_mean, ssm.initial_cov), xs)
    return jnp.sum(ll), ll, m_p, P_p, m_f, P_f


def _problem(seed, T=7, n=3, m=2, zero_steps=(3,)):
    rng = np.random.default_rng(seed)
    ssm = to_jax(random_ssm(rng, T, n, m, zero_steps=zero_steps))
    y = rng.normal(size=(T, m))
    y[2, 0] = np.nan  # partially missing
    y[4] = np.nan  # fully missing
    return rng, ssm, jnp.asarray(y)


def _sym_tangent(rng, ssm):
    t = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), ssm)
    sym = lambda c: c + jnp.swapaxes(c, -1, -2)  # noqa: E731
    return t._replace(
        transition_cov=sym(t.transition_cov),
        observation_cov=sym(t.observation_cov),
        initial_cov=sym(t.initial_cov),
    )


@pytest.mark.parametrize(("n", "m", "checkpoint"), [(1, 1, None), (3, 2, None), (3, 2, 3)])
def test_reverse_mode_equals_plain_autodiff_for_every_output(n, m, checkpoint):
    rng, ssm, y = _problem(1, n=n, m=m)
    got_v, want_v = _rule(ssm, y, checkpoint), _reference(ssm, y)
    for g, w in zip(got_v, want_v, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    weights = [jnp.asarray(rng.normal(size=np.shape(x))) for x in got_v]

    def scalar(f):
        return lambda s, yy: sum(jnp.sum(w * x) for w, x in zip(weights, f(s, yy), strict=True))

    # y's gradient is taken where it is observed (NaN marks the missing entries)
    got = jax.grad(scalar(lambda s, yy: _rule(s, yy, checkpoint)), argnums=(0, 1))(ssm, y)
    want = jax.grad(scalar(_reference), argnums=(0, 1))(ssm, y)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        w = jnp.where(jnp.isnan(w), 0.0, w)
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-10)


def test_forward_mode_equals_autodiff_for_every_output():
    rng, ssm, y = _problem(2)
    tangent = _sym_tangent(rng, ssm)
    _, got = jax.jvp(lambda s: _rule(s, y), (ssm,), (tangent,))
    _, want = jax.jvp(lambda s: _reference(s, y), (ssm,), (tangent,))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-10)


def test_second_order_and_finite_differences():
    # no zero step: finite differences along a random Q direction would leave the PSD cone
    _, ssm, y = _problem(3, T=5, n=2, m=2, zero_steps=())

    def f(s):
        return filter_sequential(s, y).log_likelihood

    def f_ad(s):
        return _reference(s, y)[0]

    check_grads(f, (ssm,), order=1, modes=("fwd", "rev"))
    h = jax.hessian(lambda a: f(ssm._replace(transition=a)))(ssm.transition)
    h_ad = jax.hessian(lambda a: f_ad(ssm._replace(transition=a)))(ssm.transition)
    np.testing.assert_allclose(h, h_ad, rtol=1e-9, atol=1e-10)


def test_invalid_step_gives_minus_inf_and_finite_gradient():
    _, ssm, y = _problem(4)
    bad = ssm._replace(observation_cov=ssm.observation_cov.at[3].set(-50.0 * jnp.eye(2)))
    value, grad = jax.value_and_grad(lambda s: filter_sequential(s, y).log_likelihood)(bad)
    assert value == -jnp.inf
    for name, g in zip(DiscreteSSM._fields, grad, strict=True):
        assert bool(jnp.all(jnp.isfinite(g))), name


def test_vmap_over_subjects_equals_one_by_one():
    rng = np.random.default_rng(5)
    subjects = [_problem(s, T=6, n=2, m=1)[1:] for s in range(3)]
    ssms = jax.tree.map(lambda *xs: jnp.stack(xs), *[s for s, _ in subjects])
    ys = jnp.stack([y for _, y in subjects])
    w = jnp.asarray(rng.normal(size=3))

    def total(s, yy):
        return jnp.sum(w * jax.vmap(lambda a, b: filter_sequential(a, b).log_likelihood)(s, yy))

    got = jax.grad(total)(ssms, ys)
    for i, (s, yy) in enumerate(subjects):
        want = jax.grad(lambda a, wi=w[i], yi=yy: wi * filter_sequential(a, yi).log_likelihood)(s)
        for g, x in zip(got, want, strict=True):
            np.testing.assert_allclose(g[i], x, rtol=1e-10, atol=1e-12)


# ------------------------------------------ panels: one recursion, subjects trailing


def _panel(seed, subjects=9, T=7, n=3, m=2):
    """A panel with missing values, a zero step,
    ragged padding and one invalid subject (a negative observation variance)."""
    rng = np.random.default_rng(seed)
    problems = [_problem(seed * 100 + s, T=T, n=n, m=m) for s in range(subjects)]
    ssm = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[1] for p in problems])
    y = np.stack([np.asarray(p[2]) for p in problems])
    y[1, 5:] = np.nan  # a shorter subject, padded
    bad_R = ssm.observation_cov.at[4, 3].set(-50.0 * jnp.eye(m))
    return rng, ssm._replace(observation_cov=bad_R), jnp.asarray(y)


def _one_by_one(ssm, y, **kw):
    return jax.vmap(lambda s, yy: filter_sequential(s, yy, **kw)[OUTPUTS])(ssm, y)


def _panel_path(ssm, y, **kw):
    from kalmanad.filter.api import filter_ssm

    return filter_ssm(ssm, y, "sequential", validate=False, **kw)[OUTPUTS]


@pytest.mark.parametrize("checkpoint", [None, pytest.param(3, marks=pytest.mark.slow)])
def test_panel_equals_vmap_for_every_output_and_derivative(checkpoint):
    rng, ssm, y = _panel(6)
    got, want = _panel_path(ssm, y, checkpoint=checkpoint), _one_by_one(ssm, y)
    assert float(got[0][4]) == -np.inf  # the invalid subject
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    finite = lambda x: jnp.where(jnp.isfinite(x), x, 0.0)  # noqa: E731
    weights = [jnp.asarray(rng.normal(size=np.shape(x))) for x in want]

    def scalar(f):
        return lambda s, yy: sum(
            jnp.sum(w * finite(x)) for w, x in zip(weights, f(s, yy), strict=True)
        )

    grads = jax.grad(scalar(lambda s, yy: _panel_path(s, yy, checkpoint=checkpoint)), (0, 1))
    got_g = grads(ssm, y)
    one = lambda s, yy: _one_by_one(s, yy, checkpoint=checkpoint)  # noqa: E731
    want_g = jax.grad(scalar(one), (0, 1))(ssm, y)
    for g, w in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
        assert bool(jnp.all(jnp.isfinite(g)))
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-11)
    tangent = _sym_tangent(rng, ssm)
    _, got_t = jax.jvp(lambda s: _panel_path(s, y, checkpoint=checkpoint), (ssm,), (tangent,))
    _, want_t = jax.jvp(lambda s: one(s, y), (ssm,), (tangent,))
    for g, w in zip(got_t, want_t, strict=True):
        np.testing.assert_allclose(finite(g), finite(w), rtol=1e-10, atol=1e-11)


def test_panel_shared_fields_and_two_batch_dims():
    from kalmanad.filter.api import filter_ssm

    _, ssm, y = _panel(7, subjects=12)
    shared = ssm._replace(
        observation=ssm.observation[0],
        observation_offset=ssm.observation_offset[0],
        observation_cov=ssm.observation_cov[0],
        initial_mean=ssm.initial_mean[0],
    )
    want = _one_by_one(jax.tree.map(lambda x, s: jnp.broadcast_to(x, s.shape), shared, ssm), y)
    got = filter_ssm(shared, y, validate=False)[OUTPUTS]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    # (3, 4) subjects: the same numbers, reshaped
    two = jax.tree.map(lambda x: x.reshape(3, 4, *x.shape[1:]), ssm)
    got2 = filter_ssm(two, y.reshape(3, 4, *y.shape[1:]), validate=False)[OUTPUTS]
    for g, w in zip(got2, _one_by_one(ssm, y), strict=True):
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="observation"):
        filter_ssm(shared._replace(observation=shared.observation[:, :1]), y)


@pytest.mark.slow
def test_large_dimensions_use_dots_and_lapack_with_the_same_results():
    # n, m above the unrolled sizes (kalmanad._tuning.SMALL_MM, FILTER_UNROLL_MAX): the
    # kernels switch to dots and LAPACK; one subject and a 2-subject panel
    rng = np.random.default_rng(11)
    n, m, T = 10, 9, 5
    problems = [to_jax(random_ssm(rng, T, n, m, zero_steps=())) for _ in range(2)]
    ys = jnp.asarray(rng.normal(size=(2, T, m)))
    for ssm, y in zip(problems, ys, strict=True):
        for g, w in zip(_rule(ssm, y), _reference(ssm, y), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)
        got = jax.grad(lambda s, yy=y: filter_sequential(s, yy).log_likelihood)(ssm)
        want = jax.grad(lambda s, yy=y: _reference(s, yy)[0])(ssm)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-10)
    panel = jax.tree.map(lambda *xs: jnp.stack(xs), *problems)
    got = filter_sequential(panel, ys, checkpoint=2).log_likelihood
    want = jnp.stack([_reference(s, y)[0] for s, y in zip(problems, ys, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-10)
