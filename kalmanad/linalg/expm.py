"""Matrix exponential and its Fréchet derivative, with explicit differentiation rules.

``expm(a)`` is scaling and squaring with a diagonal Padé approximant (Higham 2005):

    e^A ≈ r_m(2^-s A)^(2^s),   r_m = q_m^-1 p_m,   m ∈ {3, 5, 7, 9, 13},

with m and s chosen from ‖A‖₁ so that the backward error is below the unit roundoff.
``expm_frechet(a, e)`` is the Fréchet derivative

    L(A, E) = d/dt e^(A + tE) |_(t=0) = ∫₀¹ e^(τA) E e^((1-τ)A) dτ,

computed by differentiating the same algorithm (Al-Mohy & Higham 2009, Algorithm 6.4)
with the same m and s, so derivatives are those of the very function that was evaluated.

Differentiation rules are attached to two JAX primitives:

* ``kalmanad_expm_fwd``: a ↦ (e^a, residuals). The residuals are the degree index, the
  number of squarings s, the scaled powers of A the Padé branch formed, the LU factors of
  q_m(2^-s A) and the unsquared approximant R. Its JVP is ``L(a, ȧ)`` evaluated from the
  residuals, so ``jax.grad`` stores them instead of an autodiff tape.
* ``kalmanad_expm_frechet``: (a, residuals, e) ↦ L(a, e), linear in e. Its transpose is
  L(aᵀ, ·), the same routine on the transposed residuals. Its JVP uses the block identity
  expm([[A, E], [0, A]]) = [[e^A, L(A, E)], [0, e^A]]: differentiating both sides,
  dL(A, E)[Ȧ, Ė] is the upper-right block of L([[A, E], [0, A]], [[Ȧ, Ė], [0, Ȧ]]).

Batching: both primitives take a flat stack (B, n, n). Under ``jax.vmap`` their batching
rules merge the mapped axis into B and bind once, so the Padé degree is chosen once, from
the largest norm in the whole batch, with a single ``lax.switch`` on a scalar (a batch pays
for one branch, not all five), and the squaring loop runs max(s) times with finished
matrices masked (the cost of the largest matrix, not the sum). s is not capped: any finite
norm is scaled down to the Padé region. Non-finite input gives non-finite output without
raising or looping: its norm is ignored for the degree choice and its s is set to 0.

References:
    N. J. Higham, "The scaling and squaring method for the matrix exponential revisited",
    SIAM J. Matrix Anal. Appl. 26(4), 2005.
    A. H. Al-Mohy and N. J. Higham, "Computing the Fréchet derivative of the matrix
    exponential, with an application to condition number estimation", SIAM J. Matrix
    Anal. Appl. 30(4), 2009.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from kalmanad._tuning import EXPM_UNROLL_N
from kalmanad.linalg._checks import as_float_array, check_same_shape, check_square
from kalmanad.linalg._util import mT

__all__ = ["expm", "expm_frechet"]

# --------------------------------------------------------------------------------------
# Padé coefficients b_k of p_m(x) = Σ b_k x^k (q_m(x) = p_m(-x)) and the largest ‖2^-s A‖₁
# for which degree m meets unit roundoff (Higham 2005, Table 2.3; the single-precision
# values are those of jax.scipy.linalg.expm, degrees 3, 5, 7).
# --------------------------------------------------------------------------------------
_B3 = (120.0, 60.0, 12.0, 1.0)
_B5 = (30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0)
_B7 = (17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0)
_B9 = (
    17643225600.0,
    8821612800.0,
    2075673600.0,
    302702400.0,
    30270240.0,
    2162160.0,
    110880.0,
    3960.0,
    90.0,
    1.0,
)
_B13 = (
    64764752532480000.0,
    32382376266240000.0,
    7771770303897600.0,
    1187353796428800.0,
    129060195264000.0,
    10559470521600.0,
    670442572800.0,
    33522128640.0,
    1323241920.0,
    40840800.0,
    960960.0,
    16380.0,
    182.0,
    1.0,
)

_THETA_F64 = (
    1.495585217958292e-2,
    2.539398330063230e-1,
    9.504178996162932e-1,
    2.097847961257068e0,
    5.371920351148152e0,
)
_THETA_F32 = (4.258730016922831e-1, 1.880152677804762e0, 3.925724783138660e0)

_HI = lax.Precision.HIGHEST


def _mm(x, y):
    """x @ y over the leading batch axis."""
    n = x.shape[-1]
    if n <= EXPM_UNROLL_N:
        acc = x[..., :, 0:1] * y[..., 0:1, :]
        for k in range(1, n):
            acc = acc + x[..., :, k : k + 1] * y[..., k : k + 1, :]
        return acc
    # HIGHEST: no TF32/bf16 passes on accelerators; the rounding analysis assumes full precision.
    return jnp.matmul(x, y, precision=_HI)


def _sym2(x, y, z, w):
    """x @ y + z @ w; for larger n as one (n, 2n) x (2n, n) product."""
    if x.shape[-1] <= EXPM_UNROLL_N:
        return _mm(x, y) + _mm(z, w)
    return _mm(jnp.concatenate([x, z], axis=-1), jnp.concatenate([y, w], axis=-2))


def _eye_like(x):
    return jnp.eye(x.shape[-1], dtype=x.dtype)


def _thetas(dtype):
    return _THETA_F64 if dtype == jnp.float64 else _THETA_F32


def _pow2(k, dtype):
    """Exact 2**k (k an int32 array, |k| < 2**(exponent bits - 1)) built from its bits."""
    if dtype == jnp.float64:
        bits = (k.astype(jnp.int64) + 1023) << 52
        return lax.bitcast_convert_type(bits, jnp.float64)
    bits = (k.astype(jnp.int32) + 127) << 23
    return lax.bitcast_convert_type(bits, jnp.float32)


def _scale(x, s):
    """x * 2**-s per matrix, exactly. Two factors keep each one a normal number."""
    h = s // 2
    f1 = _pow2(-h, x.dtype)[:, None, None]
    f2 = _pow2(h - s, x.dtype)[:, None, None]
    return (x * f1) * f2


# --------------------------------------------------------------------------------------
# Padé branches. Each returns U, V (p_m = V + U, q_m = V - U) and four slots of residual
# powers: (A², A⁴, A⁶, A⁸) for m ≤ 9 (zeros where unused) and (A², A⁴, A⁶, W) for m = 13,
# W being the inner polynomial that U = A W.
# --------------------------------------------------------------------------------------
def _pade3(a):
    b, i = _B3, _eye_like(a)
    a2 = _mm(a, a)
    u = _mm(a, b[3] * a2 + b[1] * i)
    v = b[2] * a2 + b[0] * i
    z = jnp.zeros_like(a)
    return u, v, a2, z, z, z


def _pade5(a):
    b, i = _B5, _eye_like(a)
    a2 = _mm(a, a)
    a4 = _mm(a2, a2)
    u = _mm(a, b[5] * a4 + b[3] * a2 + b[1] * i)
    v = b[4] * a4 + b[2] * a2 + b[0] * i
    z = jnp.zeros_like(a)
    return u, v, a2, a4, z, z


def _pade7(a):
    b, i = _B7, _eye_like(a)
    a2 = _mm(a, a)
    a4 = _mm(a2, a2)
    a6 = _mm(a4, a2)
    u = _mm(a, b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * i)
    v = b[6] * a6 + b[4] * a4 + b[2] * a2 + b[0] * i
    return u, v, a2, a4, a6, jnp.zeros_like(a)


def _pade9(a):
    b, i = _B9, _eye_like(a)
    a2 = _mm(a, a)
    a4 = _mm(a2, a2)
    a6 = _mm(a4, a2)
    a8 = _mm(a4, a4)
    u = _mm(a, b[9] * a8 + b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * i)
    v = b[8] * a8 + b[6] * a6 + b[4] * a4 + b[2] * a2 + b[0] * i
    return u, v, a2, a4, a6, a8


def _pade13_inner(a2, a4, a6):
    b = _B13
    w1 = b[13] * a6 + b[11] * a4 + b[9] * a2
    z1 = b[12] * a6 + b[10] * a4 + b[8] * a2
    return w1, z1


def _pade13(a):
    b, i = _B13, _eye_like(a)
    n = a.shape[-1]
    a2 = _mm(a, a)
    a4 = _mm(a2, a2)
    a6 = _mm(a4, a2)
    w1, z1 = _pade13_inner(a2, a4, a6)
    # One product A⁶ [W₁ Z₁] instead of two.
    t = _mm(a6, jnp.concatenate([w1, z1], axis=-1))
    w = t[..., :n] + b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * i
    v = t[..., n:] + b[6] * a6 + b[4] * a4 + b[2] * a2 + b[0] * i
    u = _mm(a, w)
    return u, v, a2, a4, a6, w


# --------------------------------------------------------------------------------------
# E-parts of the Padé branches (Al-Mohy & Higham 2009, (6.11)-(6.13)): with M_2k the
# derivative of A^2k in direction E, returns L_u = dU and L_v = dV. Pairs of products
# X Y + Z W are formed as one product [X Z] [Y; W].
# --------------------------------------------------------------------------------------
def _dpade3(a, e, a2, a4, a6, a8):
    b, i = _B3, _eye_like(a)
    m2 = _sym2(a, e, e, a)
    lu = _sym2(a, b[3] * m2, e, b[3] * a2 + b[1] * i)
    lv = b[2] * m2
    return lu, lv


def _dpade5(a, e, a2, a4, a6, a8):
    b, i = _B5, _eye_like(a)
    m2 = _sym2(a, e, e, a)
    m4 = _sym2(a2, m2, m2, a2)
    lu = _sym2(a, b[5] * m4 + b[3] * m2, e, b[5] * a4 + b[3] * a2 + b[1] * i)
    lv = b[4] * m4 + b[2] * m2
    return lu, lv


def _dpade7(a, e, a2, a4, a6, a8):
    b, i = _B7, _eye_like(a)
    m2 = _sym2(a, e, e, a)
    m4 = _sym2(a2, m2, m2, a2)
    m6 = _sym2(a4, m2, m4, a2)
    lu = _sym2(
        a, b[7] * m6 + b[5] * m4 + b[3] * m2, e, b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * i
    )
    lv = b[6] * m6 + b[4] * m4 + b[2] * m2
    return lu, lv


def _dpade9(a, e, a2, a4, a6, a8):
    b, i = _B9, _eye_like(a)
    m2 = _sym2(a, e, e, a)
    m4 = _sym2(a2, m2, m2, a2)
    m6 = _sym2(a4, m2, m4, a2)
    m8 = _sym2(a4, m4, m4, a4)
    lu = _sym2(
        a,
        b[9] * m8 + b[7] * m6 + b[5] * m4 + b[3] * m2,
        e,
        b[9] * a8 + b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * i,
    )
    lv = b[8] * m8 + b[6] * m6 + b[4] * m4 + b[2] * m2
    return lu, lv


def _dpade13(a, e, a2, a4, a6, w):
    b = _B13
    n = a.shape[-1]
    m2 = _sym2(a, e, e, a)
    m4 = _sym2(a2, m2, m2, a2)
    m6 = _sym2(a4, m2, m4, a2)
    w1, z1 = _pade13_inner(a2, a4, a6)
    lw1 = b[13] * m6 + b[11] * m4 + b[9] * m2
    lz1 = b[12] * m6 + b[10] * m4 + b[8] * m2
    # [L_w - L_w2, L_v - L_z2] = [A⁶ M₆] [[L_w1, L_z1], [W₁, Z₁]] in one product.
    t = _mm(
        jnp.concatenate([a6, m6], axis=-1),
        jnp.concatenate(
            [jnp.concatenate([lw1, lz1], axis=-1), jnp.concatenate([w1, z1], axis=-1)], axis=-2
        ),
    )
    lw = t[..., :n] + b[7] * m6 + b[5] * m4 + b[3] * m2
    lv = t[..., n:] + b[6] * m6 + b[4] * m4 + b[2] * m2
    lu = _sym2(a, lw, e, w)
    return lu, lv


_PADE = {
    jnp.float64: (_pade3, _pade5, _pade7, _pade9, _pade13),
    jnp.float32: (_pade3, _pade5, _pade7),
}
_DPADE = {
    jnp.float64: (_dpade3, _dpade5, _dpade7, _dpade9, _dpade13),
    jnp.float32: (_dpade3, _dpade5, _dpade7),
}


def _branches(table, dtype):
    return table[jnp.float64 if dtype == jnp.float64 else jnp.float32]


# --------------------------------------------------------------------------------------
# LU factorisation with partial pivoting, in lax.linalg.lu's format: Q[perm] = L U with L
# unit lower and U upper triangular, both stored in one array.
# --------------------------------------------------------------------------------------
def _use_unrolled_lu(q):
    n, bsz = q.shape[-1], q.shape[0]
    return n <= 2 or (n <= EXPM_UNROLL_N and bsz > 1)


def _lu_unrolled(q):
    bsz, n, _ = q.shape
    idx = jnp.arange(n)
    perm = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (bsz, n))
    for k in range(n - 1):
        p = k + jnp.argmax(jnp.abs(q[:, k:, k]), axis=-1)  # (B,)
        row_k = q[:, k, :]
        row_p = jnp.take_along_axis(q, p[:, None, None], axis=1)[:, 0, :]
        at_k, at_p = (idx == k)[None, :], idx[None, :] == p[:, None]
        q = jnp.where(
            at_k[..., None], row_p[:, None, :], jnp.where(at_p[..., None], row_k[:, None, :], q)
        )
        perm_k = perm[:, k]
        perm_p = jnp.take_along_axis(perm, p[:, None], axis=1)[:, 0]
        perm = jnp.where(at_k, perm_p[:, None], jnp.where(at_p, perm_k[:, None], perm))
        ell = q[:, k + 1 :, k] / q[:, k, k][:, None]
        pivot_row = jnp.where(idx > k, q[:, k, :], 0.0)
        below = q[:, k + 1 :, :] - ell[:, :, None] * pivot_row[:, None, :]
        below = jnp.where((idx == k)[None, None, :], ell[:, :, None], below)
        q = jnp.concatenate([q[:, : k + 1, :], below], axis=1)
    return q, perm


def _tri_unrolled(t, b, lower, unit):
    """Solve t x = b, t triangular (only its lower/upper part is read), by substitution."""
    n = t.shape[-1]
    xs = [None] * n
    for k in range(n) if lower else range(n - 1, -1, -1):
        acc = b[:, k, :]
        for j in range(k) if lower else range(k + 1, n):
            acc = acc - t[:, k, j, None] * xs[j]
        xs[k] = acc if unit else acc / t[:, k, k, None]
    return jnp.stack(xs, axis=1)


def _lu_factor(q):
    if _use_unrolled_lu(q):
        return _lu_unrolled(q)
    lu, _, perm = lax.linalg.lu(q)
    return lu, perm.astype(jnp.int32)


def _lu_solve(lu, perm, rhs, transpose):
    """Q⁻¹ rhs (transpose=False) or Q⁻ᵀ rhs (transpose=True) for Q[perm] = L U."""
    if _use_unrolled_lu(lu):

        def tri(t, b, lower, unit, transpose_a=False):
            return _tri_unrolled(mT(t) if transpose_a else t, b, lower != transpose_a, unit)

    else:

        def tri(t, b, lower, unit, transpose_a=False):
            return lax.linalg.triangular_solve(
                t, b, left_side=True, lower=lower, unit_diagonal=unit, transpose_a=transpose_a
            )

    if not transpose:
        pb = jnp.take_along_axis(rhs, perm[:, :, None], axis=1)
        return tri(lu, tri(lu, pb, True, True), False, False)
    # Qᵀ = Uᵀ Lᵀ P, so Uᵀ Lᵀ (P x) = rhs and x[perm] = Lᵀ⁻¹ Uᵀ⁻¹ rhs.
    z = tri(lu, tri(lu, rhs, False, False, True), True, True, True)
    return jax.vmap(lambda zz, p: jnp.zeros_like(zz).at[p].set(zz))(z, perm)


# --------------------------------------------------------------------------------------
# Implementations on a flat stack (B, n, n); lowered inline via mlir.lower_fun.
# --------------------------------------------------------------------------------------
def _choose(a):
    """Degree index (scalar, from the largest finite norm in the batch) and s (B,)."""
    dtype = a.dtype
    thetas = _thetas(dtype)
    norms = jnp.max(jnp.sum(jnp.abs(a), axis=-2), axis=-1)
    finite = jnp.isfinite(norms)
    norms = jnp.where(finite, norms, 0.0)
    deg = jnp.sum(jnp.max(norms) > jnp.asarray(thetas[:-1], dtype)).astype(jnp.int32)
    # Only the top degree scales; below it every norm is already under its theta.
    # A finite norm needs s <= max exponent + a few, so the clip only guards the loop.
    s = jnp.ceil(jnp.log2(jnp.maximum(norms, thetas[-1]) / thetas[-1]))
    s_cap = jnp.finfo(dtype).maxexp + 8
    s = jnp.clip(jnp.where(finite, s, 0.0), 0, s_cap).astype(jnp.int32)
    return deg, s


def _masked(j, s, new, old):
    """new where matrix i is still squaring (j < s_i), else old; a no-op for one matrix."""
    if new.shape[0] == 1:  # the loop runs exactly s times
        return new
    return jnp.where((j < s)[:, None, None], new, old)


def _squarings(r, s):
    """X ← X² for each matrix while its counter is below s (max(s) iterations)."""

    def body(j, x):
        return _masked(j, s, _mm(x, x), x)

    return lax.fori_loop(0, jnp.max(s), body, r)


def _forward_impl(a):
    deg, s = _choose(a)
    u, v, p2, p4, p6, p8 = lax.switch(deg, _branches(_PADE, a.dtype), _scale(a, s))
    lu, perm = _lu_factor(v - u)
    r = _lu_solve(lu, perm, u + v, False)
    x = _squarings(r, s)
    return x, deg, s, p2, p4, p6, p8, lu, perm, r


def _frechet_impl(a, deg, s, p2, p4, p6, p8, lu, perm, r, e, *, transpose):
    if transpose:
        # L(Aᵀ, ·): every residual is a polynomial in A (or R), so transposes are residuals
        # of Aᵀ; only the LU factors need a transposed solve.
        a, p2, p4, p6, p8, r = (mT(t) for t in (a, p2, p4, p6, p8, r))
    lu_part, lv_part = lax.switch(
        deg, _branches(_DPADE, a.dtype), _scale(a, s), _scale(e, s), p2, p4, p6, p8
    )
    rhs = lu_part + lv_part + _mm(lu_part - lv_part, r)
    ell = _lu_solve(lu, perm, rhs, transpose)

    # Differentiated squaring: L ← X L + L X, X ← X², recomputing X from R (O(n²) memory).
    # The last step needs no X², so it is taken outside the loop.
    smax = jnp.max(s)

    def body(j, carry):
        x, ell = carry
        return _masked(j, s, _mm(x, x), x), _masked(j, s, _sym2(x, ell, ell, x), ell)

    x, ell = lax.fori_loop(0, smax - 1, body, (r, ell))

    def last(x, ell):
        return _masked(smax - 1, s, _sym2(x, ell, ell, x), ell)

    return lax.cond(smax > 0, last, lambda x, ell: ell, x, ell)


# --------------------------------------------------------------------------------------
# Primitives.
# --------------------------------------------------------------------------------------
_fwd_p = Primitive("kalmanad_expm_fwd")
_fwd_p.multiple_results = True
_frechet_p = Primitive("kalmanad_expm_frechet")

_fwd_p.def_impl(jax.jit(_forward_impl))
_frechet_p.def_impl(jax.jit(_frechet_impl, static_argnames=("transpose",)))
mlir.register_lowering(_fwd_p, mlir.lower_fun(_forward_impl, multiple_results=True))
mlir.register_lowering(_frechet_p, mlir.lower_fun(_frechet_impl, multiple_results=False))

_N_RES = 9  # deg, s, p2, p4, p6, p8, lu, perm, r


def _fwd_abstract(a):
    bsz, n, _ = a.shape
    mat = ShapedArray(a.shape, a.dtype)
    return (
        mat,
        ShapedArray((), jnp.int32),
        ShapedArray((bsz,), jnp.int32),
        mat,
        mat,
        mat,
        mat,
        mat,
        ShapedArray((bsz, n), jnp.int32),
        mat,
    )


def _frechet_abstract(a, *res_and_e, transpose):
    e = res_and_e[-1]
    return ShapedArray(e.shape, e.dtype)


_fwd_p.def_abstract_eval(_fwd_abstract)
_frechet_p.def_abstract_eval(_frechet_abstract)


def _forward(a3):
    """(B, n, n) -> (X, residuals)."""
    out = _fwd_p.bind(a3)
    return out[0], tuple(out[1:])


def _frechet(a3, res, e3, transpose=False):
    return _frechet_p.bind(a3, *res, e3, transpose=transpose)


def _zero_tangent(x):
    return ad.Zero(jax.typeof(x).to_tangent_aval())


def _fwd_jvp(primals, tangents):
    (a,), (adot,) = primals, tangents
    x, res = _forward(a)
    res_dots = [_zero_tangent(r) for r in res]
    if type(adot) is ad.Zero:
        return (x, *res), [_zero_tangent(x), *res_dots]
    # The residuals are piecewise constant in a (degree, s) or only feed the rule itself.
    res = tuple(lax.stop_gradient(r) for r in res)
    return (x, *res), [_frechet(a, res, adot), *res_dots]


def _frechet_jvp(primals, tangents, *, transpose):
    a, *res, e = primals
    adot, *_, edot = tangents  # residual tangents are zero by construction (stop_gradient)
    ell = _frechet_p.bind(a, *res, e, transpose=transpose)
    if type(adot) is ad.Zero:
        if type(edot) is ad.Zero:
            return ell, _zero_tangent(ell)
        return ell, _frechet_p.bind(a, *res, edot, transpose=transpose)
    # d L(A, E)[Ȧ, Ė] = upper-right block of L([[A, E], [0, A]], [[Ȧ, Ė], [0, Ȧ]]).
    if transpose:
        a, adot = mT(a), mT(adot)
    edot = ad.instantiate_zeros(edot)
    n = a.shape[-1]
    z = jnp.zeros_like(a)
    big = jnp.block([[a, e], [z, a]])
    big_dot = jnp.block([[adot, edot], [z, adot]])
    return ell, expm_frechet(big, big_dot)[..., :n, n:]


ad.primitive_jvps[_fwd_p] = _fwd_jvp
ad.primitive_jvps[_frechet_p] = _frechet_jvp


def _frechet_transpose(ct, a, *res_and_e, transpose):
    *res, e = res_and_e
    if ad.is_undefined_primal(a) or any(ad.is_undefined_primal(r) for r in res):
        raise NotImplementedError("expm_frechet is linear only in its direction argument e")
    assert ad.is_undefined_primal(e)
    nones = [None] * (1 + len(res))
    if type(ct) is ad.Zero:
        return [*nones, ad.Zero(e.aval)]
    # The adjoint of L(A, ·) under <X, Y> = tr(XᵀY) is L(Aᵀ, ·).
    return [*nones, _frechet_p.bind(a, *res, ct, transpose=not transpose)]


ad.primitive_transposes[_frechet_p] = _frechet_transpose


def _merge(x, d, size):
    """Move mapped axis d to the front (broadcasting if unmapped) and merge it into B."""
    x = jnp.broadcast_to(x, (size, *x.shape)) if d is None else jnp.moveaxis(x, d, 0)
    return x.reshape((size * x.shape[1], *x.shape[2:]))


def _split(x, size):
    return x.reshape((size, x.shape[0] // size, *x.shape[1:]))


def _fwd_batch(args, dims):
    (a,), (d,) = args, dims
    size = a.shape[d]
    out = _fwd_p.bind(_merge(a, d, size))
    # One degree for the merged batch: the index is shared (unmapped).
    outs = [_split(o, size) if i != 1 else o for i, o in enumerate(out)]
    out_dims = [0 if i != 1 else None for i in range(len(out))]
    return outs, out_dims


@partial(jax.jit, static_argnums=(1, 2))
def _frechet_mapped_degree(args, dims, transpose):
    return jax.vmap(partial(_frechet_impl, transpose=transpose), in_axes=dims)(*args)


def _frechet_batch(args, dims, *, transpose):
    deg_dim = dims[1]
    size = next(x.shape[d] for x, d in zip(args, dims, strict=True) if d is not None)
    if deg_dim is not None:
        # Residuals of separate forward passes with different degrees: correct, but every
        # branch is evaluated (only reachable by vmapping over stored residuals).
        return _frechet_mapped_degree(tuple(args), tuple(dims), transpose), 0
    merged = [
        x if i == 1 else _merge(x, d, size) for i, (x, d) in enumerate(zip(args, dims, strict=True))
    ]
    return _split(_frechet_p.bind(*merged, transpose=transpose), size), 0


batching.primitive_batchers[_fwd_p] = _fwd_batch
batching.primitive_batchers[_frechet_p] = _frechet_batch


# --------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------
def _compute_dtype(dtype):
    # Half precisions are computed in float32 (no Padé thetas exist for them here).
    return dtype if dtype in (jnp.float32, jnp.float64) else jnp.float32


def expm(a):
    """Matrix exponential e^a by scaling and squaring with Padé approximants.

    Args:
        a: (..., n, n) real array; integer input is promoted to the default float dtype.

    Returns:
        (..., n, n) array e^a = Σ_k a^k / k!, in a's floating dtype.

    Differentiable to any order in forward and reverse mode: the tangent is the Fréchet
    derivative L(a, ȧ) computed from the forward pass's residuals with the same Padé
    degree and number of squarings; the cotangent is L(aᵀ, ā).
    """
    a = as_float_array(a, "a")
    check_square(a, "a")
    out_dtype = a.dtype
    a = a.astype(_compute_dtype(out_dtype))
    if a.size == 0:
        return a.astype(out_dtype)
    n = a.shape[-1]
    x, _ = _forward(a.reshape((-1, n, n)))
    return x.reshape(a.shape).astype(out_dtype)


def expm_frechet(a, e):
    """Fréchet derivative of the matrix exponential at a in the direction e.

    L(a, e) = d/dt e^(a + t e)|_(t=0) = ∫₀¹ e^(τ a) e e^((1-τ) a) dτ, computed with the
    differentiated scaling-and-squaring algorithm (Al-Mohy & Higham 2009, Algorithm 6.4)
    at about twice the cost of ``expm(a)``.

    Args:
        a: (..., n, n) real array.
        e: (..., n, n) real array; the leading (batch) dimensions of a and e broadcast
            against each other with NumPy rules (e.g. one a and a stack of directions).

    Returns:
        (..., n, n) array L(a, e) over the broadcast batch shape. Unlike
        ``scipy.linalg.expm_frechet`` this returns L alone; use ``expm(a)`` for e^a.

    Differentiable to any order in both arguments (it is linear in e; the derivative in a
    uses the block identity ``expm([[a, e], [0, a]]) = [[e^a, L(a, e)], [0, e^a]]``).
    """
    a = as_float_array(a, "a")
    e = as_float_array(e, "e")
    check_square(a, "a")
    check_square(e, "e")
    check_same_shape(a, e, "a", "e")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], e.shape[:-2])
    except ValueError:
        raise ValueError(
            f"the batch dimensions of a and e must broadcast, "
            f"got a.shape={a.shape} and e.shape={e.shape}"
        ) from None
    out_dtype = jnp.result_type(a, e)
    dtype = _compute_dtype(out_dtype)
    a, e = a.astype(dtype), e.astype(dtype)
    n = a.shape[-1]
    shape = (*batch, n, n)
    if int(np.prod(shape)) == 0:
        return jnp.zeros(shape, out_dtype)
    _, res = _forward(a.reshape((-1, n, n)))
    res = tuple(lax.stop_gradient(r) for r in res)
    a3 = a.reshape((-1, n, n))
    if a.shape[:-2] != batch:
        # Residuals of each distinct a are computed once and broadcast to the directions.
        a_batch = a.shape[:-2]

        def bcast(x):
            x = x.reshape((*a_batch, *x.shape[1:]))
            x = jnp.broadcast_to(x, (*batch, *x.shape[len(a_batch) :]))
            return x.reshape((-1, *x.shape[len(batch) :]))

        a3 = bcast(a3)
        res = (res[0], *(bcast(r) for r in res[1:]))
    e3 = jnp.broadcast_to(e, shape).reshape((-1, n, n))
    return _frechet(a3, res, e3).reshape(shape).astype(out_dtype)
