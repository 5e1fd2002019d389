"""The discretisation routes: ``(Ad, Qd, Fd)`` for a drift, a diffusion and steps (private).

:func:`route` evaluates Van Loan's integrals (see :mod:`kalmanad.discretize` for the
maths, accuracy and cost of each route): the default ``"van_loan"`` route composes a
Taylor-series base evaluator with shared tables of composed steps, ``"van_loan_expm"``
the same tables from ``kalmanad.linalg.expm``, ``"stationary"`` a Lyapunov solve and
one exponential per step, and one state a closed form.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kalmanad._tuning import TABLE_BASE, TABLE_DIGITS
from kalmanad.linalg import expm, solve_continuous_lyapunov, taylor_coefficients
from kalmanad.linalg._small import small_matmul
from kalmanad.linalg._util import mT, symmetrize

__all__ = ["longest_van_loan_step", "route"]

# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
# Full precision for every product: on GPUs a float32 product at JAX's default precision
# may run in TF32 (about 3 digits), which cost the float32 discretisation 4e-4 relative
# error on an H100 (the test_float32 bound is 2e-6); no effect on CPU or in float64.
_HI = lax.Precision.HIGHEST


def _matmul(x, y):
    return jnp.matmul(x, y, precision=_HI)


def norm1(x):
    """Matrix 1-norm (largest absolute column sum) over the last two axes."""
    return jnp.max(jnp.sum(jnp.abs(x), axis=-2), axis=-1, initial=0.0)


def balance_scale(off_norm, nu):
    """Power of two α with ‖off/α‖ ≲ max(ν, 1·[ν = 0]); exact to scale and unscale."""
    ref = jnp.where(nu > 0, nu, 1.0)
    ratio = jnp.where(off_norm > ref, off_norm / ref, 1.0)
    return lax.stop_gradient(jnp.exp2(jnp.ceil(jnp.log2(ratio))))


# ---------------------------------------------------------------------------------------
# the Van Loan route: a base evaluator for short steps, composed with shared tables
# ---------------------------------------------------------------------------------------
_TABLE_LOG2B = int(np.log2(TABLE_BASE))


def _theta(dtype) -> float:
    """Base length, as ‖A‖-scaled step: σh ≤ θ (σ ≥ ‖A‖ a power of two)."""
    return 2.0 if jnp.finfo(dtype).eps < 1e-10 else 1.0


def longest_van_loan_step(drift_norm: float, dtype) -> float:
    """The longest step Δ the Van Loan routes cover for a drift of norm ``drift_norm``.

    A step is covered when it is at most ``TABLE_BASE ** TABLE_DIGITS`` base lengths
    θ/σ, with σ ≥ ‖A‖ the next power of two (the base evaluator's scaling); longer
    steps of a stiff drift overflow there.
    """
    sigma = 2.0 ** np.ceil(np.log2(max(float(drift_norm), np.finfo(np.float64).tiny)))
    return float(TABLE_BASE**TABLE_DIGITS * _theta(dtype) / sigma)


def _series_degree(dtype) -> int:
    # At σh ≤ θ the series terms are bounded by (2θ)^j / j! (‖L‖ ≤ 2‖A‖ for the Qd series):
    # below 1e-17 from j = 33 for θ = 2 (double); below 3e-9 from j = 17 for θ = 1 (single).
    return 32 if jnp.finfo(dtype).eps < 1e-10 else 16


class _Triple(NamedTuple):
    """(Ad, Qd, Fd) of one step length or a stack of them."""

    ad: jax.Array
    qd: jax.Array
    fd: jax.Array


def _compose(x: _Triple, y: _Triple) -> _Triple:
    """The triple of the sum of two step lengths (the flow is a commutative semigroup).

    Ad(a+b) = Ad(b) Ad(a), Qd(a+b) = Qd(b) + Ad(b) Qd(a) Ad(b)ᵀ, Fd(a+b) = Fd(b) + Ad(b) Fd(a):
    sums of positive semi-definite terms, so no cancellation and nothing overflows that the
    exact result does not.
    """
    return _Triple(
        small_matmul(y.ad, x.ad),
        symmetrize(y.qd + small_matmul(small_matmul(y.ad, x.qd), mT(y.ad))),
        y.fd + small_matmul(y.ad, x.fd),
    )


def _series_evaluator(a, q, w):
    """Van Loan's integrals as power series whose matrix powers are shared by all steps.

    With Ã = A/σ (σ a power of two ≥ ‖A‖, so no power overflows) and z = σh ≤ θ::

        Ad(h) = Σ_j z^j/j! Ãʲ
        Qd(h) = σ⁻¹ Σ_j z^(j+1)/(j+1)! C̃_j,   C̃_0 = GGᵀ, C̃_(j+1) = Ã C̃_j + C̃_j Ãᵀ
        Fd(h) = σ⁻¹ Σ_j z^(j+1)/(j+1)! Ãʲ W

    — the Taylor series of e^{Ah}, of the solution of Q̇ = A Q + Q Aᵀ + GGᵀ with Q(0) = 0,
    and of ∫₀ʰ e^{As} ds W, i.e. of the blocks of the Van Loan exponential. The powers are
    formed once (3p small matmuls); a stack of K steps then costs one
    (K × (p+1)) @ ((p+1) × n(2n + r)) matmul.
    """
    n, r = a.shape[-1], w.shape[-1]
    dtype = a.dtype
    deg = _series_degree(dtype)
    sigma = _pow2_bound(a)
    at = a / sigma

    def power(carry, _):
        p_j, c_j, e_j = carry
        # One product per term: Ã [Ãʲ, C̃_j, ÃʲW]. C̃_j is exactly symmetric (C̃_0 = sym(GGᵀ)
        # and X + Xᵀ is), so C̃_j Ãᵀ = (Ã C̃_j)ᵀ.
        prod = _matmul(at, jnp.concatenate([p_j, c_j, e_j], axis=1))
        ac = prod[:, n : 2 * n]
        return (prod[:, :n], ac + ac.T, prod[:, 2 * n :]), carry

    eye = jnp.eye(n, dtype=dtype)
    _, (pw, cw, ew) = lax.scan(power, (eye, symmetrize(q), w), None, length=deg + 1)
    pw_t = pw.reshape(deg + 1, n * n).T
    qe_t = jnp.concatenate([cw.reshape(deg + 1, n * n), ew.reshape(deg + 1, n * r)], axis=1).T

    def evaluate(h):
        k = h.shape[0]
        coef = taylor_coefficients(h * sigma, deg + 1)  # (deg + 2, K): z^j/j!
        ad = _matmul(pw_t, coef[:-1]).reshape(n, n, k).transpose(2, 0, 1)
        qf = _matmul(qe_t, coef[1:]) / sigma  # (n² + nr, K)
        qd = symmetrize(qf[: n * n].reshape(n, n, k).transpose(2, 0, 1))
        fd = qf[n * n :].reshape(n, r, k).transpose(2, 0, 1)
        return _Triple(ad, qd, fd)

    return evaluate


def _block_evaluator(a, q, w):
    """Van Loan's block exponential by ``kalmanad.linalg.expm`` (one per step)::

        expm([[A, GGᵀ, W], [0, -Aᵀ, 0], [0, 0, 0]] h) = [[Ad, Qd e^{-Aᵀh}, Fd], ...]

    The off-diagonal blocks are scaled by exact powers of two (Qd is linear in GGᵀ, Fd in
    W) so that a large diffusion or forcing does not drive the degree of the exponential.
    """
    n, r = a.shape[-1], w.shape[-1]
    dtype = a.dtype
    nu = lax.stop_gradient(jnp.maximum(norm1(a), norm1(a.T)))
    alpha = balance_scale(norm1(lax.stop_gradient(q)), nu)
    beta = balance_scale(norm1(lax.stop_gradient(w)), nu)
    rows = [jnp.concatenate([a, q / alpha, w / beta], axis=1)]
    rows.append(jnp.concatenate([jnp.zeros((n, n), dtype), -a.T, jnp.zeros((n, r), dtype)], 1))
    if r:
        rows.append(jnp.zeros((r, 2 * n + r), dtype))
    block = jnp.concatenate(rows, axis=0)

    def evaluate(h):
        f = expm(h[:, None, None] * block)
        ad = f[:, :n, :n]
        qd = symmetrize(_matmul(f[:, :n, n : 2 * n] * alpha, mT(ad)))
        return _Triple(ad, qd, f[:, :n, 2 * n :] * beta)

    return evaluate


def _pow2_bound(a):
    """σ: the smallest power of two ≥ max(‖A‖₁, ‖A‖∞) (1 for A = 0); carries no gradient."""
    nu = lax.stop_gradient(jnp.maximum(norm1(a), norm1(a.T)))
    nu = jnp.where(jnp.isfinite(nu) & (nu > 0), nu, 1.0)
    return jnp.exp2(jnp.ceil(jnp.log2(nu)))


def _safe_compose(x: _Triple, y: _Triple):
    """``_compose`` that cannot overflow, and a flag of the entries where it would have.

    Long table entries and long steps of an unstable drift overflow. Where the entrywise
    bounds |Ad_y Ad_x| ≤ n·max|Ad_y|·max|Ad_x| (and likewise for the Qd and Fd terms) reach
    the largest float, both inputs are replaced by the identity step *before* multiplying
    (the result is then flagged and later replaced by NaN): no intermediate is ever
    infinite, so the zero cotangents of those entries never meet an inf in reverse mode
    (0·inf = NaN would spoil every gradient of the batch).
    """
    n = x.ad.shape[-1]
    dtype = x.ad.dtype

    def logmax(v):
        v = lax.stop_gradient(v)
        return jnp.log(jnp.max(jnp.abs(v), axis=(-2, -1), initial=0.0))

    lim = float(np.log(jnp.finfo(dtype).max)) - 2.0 * float(np.log(n)) - 3.0
    ay, ax = logmax(y.ad), logmax(x.ad)
    ok = (ay + ax < lim) & (2.0 * ay + logmax(x.qd) < lim) & (ay + logmax(x.fd) < lim)
    ok = ok & (logmax(y.qd) < lim) & (logmax(y.fd) < lim)
    keep = ok[..., None, None]
    eye = jnp.eye(n, dtype=dtype)

    def safe(t):
        return _Triple(
            jnp.where(keep, t.ad, eye), jnp.where(keep, t.qd, 0.0), jnp.where(keep, t.fd, 0.0)
        )

    return safe(_compose(safe(x), safe(y))), ok


def _prefix_tables(units: _Triple, units_ok, doubled: _Triple, doubled_ok):
    """T[d] = E(d u) for d < B, for one unit u or a stack of them, and their flags.

    ``doubled`` = E(2ᵏ u) stacked over k < log₂B (``doubled_ok`` their flags). Prefix
    doubling: from T[d], d < 2ᵏ, the entries T[d + 2ᵏ] = T[d] ∘ E(2ᵏ u) all at once, so
    log₂B - 1 batched compositions instead of B - 1 sequential ones (the flow is a
    commutative semigroup). One scan of fixed-size tables, so the composition's code is
    compiled once.
    """
    n = units.ad.shape[-1]
    dtype = units.ad.dtype
    lead = units.ad.shape[:-2]
    first = jnp.arange(TABLE_BASE).reshape((-1,) + (1,) * len(lead)) == 1
    eye = jnp.eye(n, dtype=dtype)

    def fill(ident, unit):  # [ident, unit, ident, …]: the entries d < 2 filled
        return jnp.where(first[..., None, None], unit[None], ident)

    table = _Triple(fill(eye, units.ad), fill(0.0, units.qd), fill(0.0, units.fd))
    table = _Triple(*(jnp.broadcast_to(x, (TABLE_BASE, *lead, *x.shape[-2:])) for x in table))
    ok = jnp.broadcast_to(~first | units_ok, (TABLE_BASE, *lead))
    entry = jnp.arange(TABLE_BASE)

    def grow(carry, level):
        table, ok = carry
        k, step, step_ok = level
        half = 2**k
        src = jnp.clip(entry - half, 0, TABLE_BASE - 1)
        new = (entry >= half) & (entry < 2 * half)
        more, more_ok = _safe_compose(
            _Triple(*(x[src] for x in table)), _Triple(*(x[None] for x in step))
        )
        keep = new.reshape((-1,) + (1,) * len(lead))
        table = _Triple(
            *(jnp.where(keep[..., None, None], y, x) for x, y in zip(table, more, strict=True))
        )
        ok = jnp.where(keep, more_ok & ok[src] & step_ok, ok)
        return (table, ok), None

    levels = (
        jnp.arange(1, _TABLE_LOG2B),
        _Triple(*(x[1:_TABLE_LOG2B] for x in doubled)),
        doubled_ok[1:_TABLE_LOG2B],
    )
    return lax.scan(grow, (table, ok), levels)[0]


def _doublings(unit: _Triple, ok, count: int):
    """E(2ᵏ u) for k < count, stacked, and their flags: count - 1 self-compositions."""

    def double(carry, _):
        x, ok = carry
        y, ok_y = _safe_compose(x, x)
        return (y, ok & ok_y), (y, ok & ok_y)

    _, (chain, chain_ok) = lax.scan(double, (unit, ok), None, length=count - 1)
    chain = _Triple(*(jnp.concatenate([x[None], y]) for x, y in zip(unit, chain, strict=True)))
    return chain, jnp.concatenate([jnp.broadcast_to(ok, (1,)), chain_ok])


def _high_tables(unit: _Triple, ok):
    """Tables of the levels i = 1 … D-1, T_i[d] = E(d Bⁱ H): (B, D-1, ...) and flags.

    ``unit`` = E(B H), the unit of level 1. The doublings E(2ʲ H) for j ≥ log₂B are one
    flat scan; every log₂B-th is a level unit.
    """
    chain, chain_ok = _doublings(unit, ok, (TABLE_DIGITS - 1) * _TABLE_LOG2B)
    # chain[j] = E(2^(log₂B + j) H): the units of levels 1 … D-1 and their doublings
    shape = (TABLE_DIGITS - 1, _TABLE_LOG2B)
    chain = _Triple(*(jnp.swapaxes(x.reshape(shape + x.shape[1:]), 0, 1) for x in chain))
    chain_ok = chain_ok.reshape(shape).T
    return _prefix_tables(_Triple(*(x[0] for x in chain)), chain_ok[0], chain, chain_ok)


def _van_loan(a, q, w, dt, base: str):
    """Van Loan's (Ad, Qd, Fd) for flat steps dt (K,), for any drift and any step length.

    Each step is split as Δ = m H + ρ with the base length H = θ/σ (‖A‖H ≤ θ) and
    0 ≤ ρ < H. E(ρ) comes from the base evaluator (shared power series, or the block
    exponential), E(mH) from shared tables T_i[d] = E(d B^i H) (d < B) indexed by the
    base-B digits of m: E(Δ) = E(ρ) ∘ T_0[d_0] ∘ … ∘ T_{D-1}[d_{D-1}]. The tables depend
    on A, not on the steps, and are built once: level 0 from log₂B doublings of E(H) and
    log₂B - 1 batched prefix compositions (:func:`_prefix_tables`); the levels above,
    and the D-1 compositions per step with them, only when some step has ‖A‖Δ ≥ Bθ — a
    ``cond`` on the whole batch, so under ``vmap`` over drifts both branches run
    (doublings and prefix compositions are shorter chains than B - 1 sequential
    compositions per level). Per step the cost is one base evaluation and one
    composition. No loop
    depends on the data, so reverse mode stores no padded levels. Steps with m ≥ B^D
    (‖A‖Δ ≥ 2^20 θ) are not covered and come out NaN.
    """
    dtype = a.dtype
    evaluate = _series_evaluator(a, q, w) if base == "series" else _block_evaluator(a, q, w)
    h_base = _theta(dtype) / _pow2_bound(a)
    ratio = lax.stop_gradient(dt / h_base)
    covered = ratio < float(TABLE_BASE**TABLE_DIGITS)
    m = jnp.where(covered, jnp.floor(ratio), 0.0)
    # uncovered steps are evaluated at ρ = 0 (finite, so reverse mode stays NaN-free)
    rho = jnp.where(covered, dt - m * h_base, 0.0)

    def digit(i):
        return (jnp.floor(m / float(TABLE_BASE**i)) % TABLE_BASE).astype(jnp.int32)

    # The base length and the remainders in one evaluation (one copy of its code).
    both = evaluate(jnp.concatenate([jnp.reshape(h_base, (1,)).astype(dtype), rho]))
    unit = _Triple(*(x[0] for x in both))
    # E(2ᵏ H) for k ≤ log₂B: level 0's doublings, and level 1's unit E(B H)
    doubled, doubled_ok = _doublings(unit, jnp.asarray(True), _TABLE_LOG2B + 1)
    table0, table0_ok = _prefix_tables(unit, jnp.asarray(True), doubled, doubled_ok)
    # Digit 0 alone cannot overflow (‖E(Δ)‖ ≤ e^{‖A‖Δ} with ‖A‖Δ < Bθ ≤ 64).
    d0 = digit(0)
    out = _compose(_Triple(*(x[1:] for x in both)), _Triple(*(x[d0] for x in table0)))
    valid = covered & table0_ok[d0]

    def high_digits(args):
        out, valid = args
        tables, tables_ok = _high_tables(_Triple(*(x[-1] for x in doubled)), doubled_ok[-1])

        def step(carry, level):
            out, valid = carry
            table, table_ok, d = level
            out, ok = _safe_compose(out, _Triple(*(x[d] for x in table)))
            return (out, valid & ok & table_ok[d]), None

        # A scan over the D-1 higher levels: one copy of the composition's code.
        levels = _Triple(*(jnp.moveaxis(x, 1, 0) for x in tables))
        digits = jnp.stack([digit(i) for i in range(1, TABLE_DIGITS)])

        def compose_levels(out, valid, levels, levels_ok, digits):
            return lax.scan(step, (out, valid), (levels, levels_ok, digits))[0]

        return jax.checkpoint(compose_levels)(out, valid, levels, tables_ok.T, digits)

    # Higher digits are nonzero only for steps with ‖A‖Δ ≥ Bθ: the tables of those
    # levels are built, and composed, only when some step needs them.
    out, valid = lax.cond(jnp.any(m >= TABLE_BASE), high_digits, lambda args: args, (out, valid))
    bad = ~valid[:, None, None]
    return tuple(jnp.where(bad, jnp.nan, x) for x in out)


def _stationary(a, q, w, dt):
    n, r = a.shape[-1], w.shape[-1]
    p_inf = symmetrize(solve_continuous_lyapunov(a, -q))
    if r:
        nu = lax.stop_gradient(norm1(a))
        beta = balance_scale(norm1(lax.stop_gradient(w)), nu)
        top = jnp.concatenate([a, w / beta], axis=1)
        block = jnp.concatenate([top, jnp.zeros((r, n + r), a.dtype)], axis=0)
        f = expm(dt[..., None, None] * block)
        ad = f[..., :n, :n]
        fd = f[..., :n, n:] * beta
    else:
        ad = expm(dt[..., None, None] * a)
        fd = jnp.zeros((*dt.shape, n, 0), a.dtype)
    qd = symmetrize(p_inf - _matmul(_matmul(ad, p_inf), mT(ad)))
    return ad, qd, fd


def _exprel(x):
    """φ(x) = (eˣ − 1)/x (φ(0) = 1), accurate for every x and with finite derivatives."""
    small = jnp.abs(x) < 1e-3
    x_safe = jnp.where(small, 1.0, x)  # double where: no 0/0 in either branch's derivative
    series = 1.0 + x * (1.0 / 2 + x * (1.0 / 6 + x * (1.0 / 24 + x / 120)))  # error < x⁵/720
    return jnp.where(small, series, jnp.expm1(x_safe) / x_safe)


def _scalar(a, q, w, dt):
    """Closed form for one state (n = 1), for any sign of the drift a::

        Ad = e^{aΔ},   Qd = q Δ φ(2aΔ),   Fd = Δ φ(aΔ) W,   φ(x) = (eˣ − 1)/x

    (``expm1``-based, so no cancellation for short steps, and no a⁻¹: a = 0 gives
    Qd = qΔ, Fd = ΔW). Where 2aΔ would overflow (an unstable drift over a long step) the
    result is NaN, as the general route's uncovered steps, with finite derivatives.
    """
    lim = float(np.log(jnp.finfo(a.dtype).max)) - 2.0
    x = a[0, 0] * dt
    ok = 2.0 * x < lim
    x = jnp.where(ok, x, 0.0)
    ad = jnp.exp(x)[:, None, None]
    qd = (q[0, 0] * dt * _exprel(2.0 * x))[:, None, None]
    fd = (dt * _exprel(x))[:, None, None] * w[None]
    bad = ~ok[:, None, None]
    return tuple(jnp.where(bad, jnp.nan, v) for v in (ad, qd, fd))


@functools.partial(jax.jit, static_argnames="method")
def route(a, q, w, dt, method: str):
    """(Ad, Qd, Fd) for steps dt of any shape (...).

    Jitted so that eager calls compile once per shape (inside an outer ``jit`` it is
    simply inlined).
    """
    shape = dt.shape
    dt = dt.reshape(-1)
    if method == "van_loan" and a.shape[-1] == 1:
        ad, qd, fd = _scalar(a, q, w, dt)
    elif method == "van_loan":
        ad, qd, fd = _van_loan(a, q, w, dt, "series")
    elif method == "van_loan_expm":
        ad, qd, fd = _van_loan(a, q, w, dt, "expm")
    else:
        ad, qd, fd = _stationary(a, q, w, dt)
    # Δ = 0 gives exactly (I, 0, 0), whatever rounding the batched exponential leaves.
    zero = (dt == 0)[:, None, None]
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    ad, qd, fd = jnp.where(zero, eye, ad), jnp.where(zero, 0.0, qd), jnp.where(zero, 0.0, fd)
    n, r = a.shape[-1], w.shape[-1]
    return ad.reshape(*shape, n, n), qd.reshape(*shape, n, n), fd.reshape(*shape, n, r)
