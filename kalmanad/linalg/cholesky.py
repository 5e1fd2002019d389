"""Cholesky solve, log-determinant and the Gaussian log-density, with closed-form rules.

These are the Kalman update's hot path. Every public function accepts any leading
batch dimensions (broadcast between arguments, numpy style), works in float32 and
float64, and promotes integer input to JAX's default float type.

Derivatives are closed-form rules written with ``jax.custom_jvp``.
Each forward (tangent) rule is linear in the input tangents and built only from
transposable operations -- triangular solves, matrix products, element-wise
products with stored residuals -- so JAX's reverse mode is exactly the closed-form
reverse rule, and ``jax.jvp``, ``jax.grad``, ``jax.vmap``, ``jax.jacfwd`` and
``jax.hessian`` all work. Higher derivatives differentiate the rules themselves.

Conventions
-----------
* A symmetric-matrix argument ``s`` is read as its symmetric part ``(s + sᵀ)/2``:
  the functions are genuinely functions of that symmetric part, so the derivative
  with respect to ``s`` is the symmetric one (``∂f/∂s`` is a symmetric matrix) and it
  is exact for every perturbation, symmetric or not.
* A factor argument ``l`` is read as its lower triangle ``tril(l)`` (the upper
  triangle is ignored, as by LAPACK and ``scipy.linalg.cho_solve``), so the
  derivative with respect to ``l`` is lower-triangular.
* Not positive-definite: ``gaussian_logpdf`` returns ``-inf`` with zero (finite)
  gradients, so a sampler simply rejects the point; ``logdet_spd`` returns ``nan``
  with zero gradients; non-finite input gives ``nan`` (see each function).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from kalmanad.linalg._checks import as_float_array, check_square, common_dtype
from kalmanad.linalg._util import mT, symmetrize

__all__ = ["cho_solve", "gaussian_logpdf", "gaussian_logpdf_chol", "logdet_spd"]

_LOG_2PI = math.log(2.0 * math.pi)
# Full-precision products: on GPUs the default float32 matmul may use TF32 (~1e-3).
_HI = lax.Precision.HIGHEST


# --------------------------------------------------------------------------- helpers


def _mm(x, y):
    return jnp.matmul(x, y, precision=_HI)


def _quad_form(x, a, y):
    """``xᵀ a y`` over the trailing axes, batch dimensions broadcast."""
    return jnp.einsum("...i,...ij,...j->...", x, a, y, precision=_HI)


def _eye_like(x):
    return jnp.eye(x.shape[-1], dtype=x.dtype)


def _diag(x):
    return jnp.diagonal(x, axis1=-2, axis2=-1)


def _tri_solve(l, b, *, transpose: bool = False):
    """``l⁻¹ b`` (or ``l⁻ᵀ b``) for lower-triangular ``l`` (..., n, n), ``b`` (..., n, k).

    Batch dimensions are broadcast (``lax.linalg.triangular_solve`` needs them equal).
    Linear in ``b``, so it transposes under reverse mode.
    """
    batch = jnp.broadcast_shapes(l.shape[:-2], b.shape[:-2])
    l = jnp.broadcast_to(l, batch + l.shape[-2:])
    b = jnp.broadcast_to(b, batch + b.shape[-2:])
    return lax.linalg.triangular_solve(l, b, left_side=True, lower=True, transpose_a=transpose)


def _all_finite(x):
    """Whether every entry of each matrix in the batch is finite, shape (...,)."""
    return jnp.all(jnp.isfinite(x), axis=(-2, -1))


def _factored(l):
    """Whether the Cholesky factorisation succeeded, shape (...,).

    ``lax.linalg.cholesky`` fills the whole factor with NaN when it fails (not PD, or
    NaN input), so the diagonal tells: n checks instead of n².
    """
    return jnp.all(jnp.isfinite(_diag(l)), axis=-1)


def _safe_factor(l, ok):
    """``l`` where ``ok``, the identity elsewhere: a NaN-free stand-in for the rules."""
    return jnp.where(ok[..., None, None], l, _eye_like(l))


def _batch_shape(name_a, a_batch, name_b, b_batch, a_shape, b_shape):
    try:
        return jnp.broadcast_shapes(a_batch, b_batch)
    except ValueError:
        raise ValueError(
            f"batch dimensions of {name_a} and {name_b} do not broadcast, got "
            f"{name_a}.shape={a_shape} and {name_b}.shape={b_shape}"
        ) from None


# ----------------------------------------------------------- Cholesky with a safe rule


@jax.custom_jvp
def cholesky_lower(s):
    """Lower Cholesky factor of a symmetric ``s`` (..., n, n); all-NaN where not PD.

    Reads the lower triangle of ``s``. Its tangent rule (Murray 2016)
    ``L̇ = L Φ(L⁻¹ Ṡ L⁻ᵀ)``, with Φ the lower triangle with halved diagonal, reads the
    tangent as its symmetric part. Where ``s`` is not positive-definite the tangent is
    zero rather than NaN, so that a masked (``jnp.where``) failed factorisation leaks no
    NaN into higher derivatives. Shared with the filters (not part of the public API).
    """
    return lax.linalg.cholesky(s, symmetrize_input=False)


@cholesky_lower.defjvp
def _cholesky_jvp(primals, tangents):
    (s,), (ds,) = primals, tangents
    ds = symmetrize(ds)  # exact no-op for this module's callers, which pass symmetric s
    l = cholesky_lower(s)  # the custom function itself, so every order uses this safe rule
    ok = _factored(l)
    l_safe = _safe_factor(l, ok)
    x = _tri_solve(l_safe, ds)  # L⁻¹ Ṡ
    x = mT(_tri_solve(l_safe, mT(x)))  # L⁻¹ Ṡ L⁻ᵀ
    phi = jnp.tril(x) - 0.5 * jnp.eye(x.shape[-1], dtype=x.dtype) * x
    dl = jnp.where(ok[..., None, None], _mm(l_safe, phi), jnp.zeros_like(phi))
    return l, dl


def _spd_inverse(l):
    """``S⁻¹ = L⁻ᵀ L⁻¹`` from the lower factor ``l`` (..., n, n)."""
    linv = _tri_solve(l, jnp.broadcast_to(_eye_like(l), l.shape))
    return _mm(mT(linv), linv)


# ------------------------------------------------------------------------ cho_solve


@jax.custom_jvp
def _cho_solve(l, b):
    # l (..., n, n) lower-triangular, b (..., n, k); batch dims broadcast.
    return _tri_solve(l, _tri_solve(l, b), transpose=True)


@_cho_solve.defjvp
def _cho_solve_jvp(primals, tangents):
    # W = L⁻¹B, Z = L⁻ᵀW.  Ẇ = L⁻¹(Ḃ − L̇W),  Ż = L⁻ᵀ(Ẇ − L̇ᵀZ), i.e. Ż = S⁻¹(Ḃ − ṠZ)
    # with Ṡ = L̇Lᵀ + LL̇ᵀ. Transposed by JAX this is B̄ = S⁻¹Z̄ and
    # L̄ = −tril((B̄Zᵀ + ZB̄ᵀ)L): the closed-form reverse rule.
    (l, b), (dl, db) = primals, tangents
    w = _tri_solve(l, b)
    z = _tri_solve(l, w, transpose=True)
    dw = _tri_solve(l, db - _mm(dl, w))
    dz = _tri_solve(l, dw - _mm(mT(dl), z), transpose=True)
    return z, dz


def cho_solve(l, b):
    """Solve ``S z = b`` for ``S = l lᵀ``, given the lower Cholesky factor ``l``.

    Implements ``z = l⁻ᵀ (l⁻¹ b)`` with two triangular solves, like
    ``scipy.linalg.cho_solve((l, True), b)``.

    Args:
      l: (..., n, n) lower-triangular factor. Only its lower triangle is read; its
        diagonal must be non-zero (any sign: ``l lᵀ`` is then positive-definite).
      b: right-hand side, either a single vector of shape ``(n,)`` or a stack of
        matrices of shape ``(..., n, k)``.

    Returns:
      ``(..., n)`` if ``b.ndim == 1`` and ``(..., n, k)`` otherwise, where ``...`` is
      the broadcast of the batch dimensions of ``l`` and ``b``.

    Vector or matrix right-hand side: ``b`` is a vector exactly when ``b.ndim == 1``;
    every ``b`` with two or more dimensions is a stack of ``(n, k)`` matrices. This is
    the rule of ``numpy.linalg.solve`` (NumPy ≥ 2), ``jax.numpy.linalg.solve`` and
    SciPy's batched ``cho_solve``; it never depends on ``l.ndim``, so it cannot flip
    under broadcasting. For a batch of vectors pass ``b[..., None]`` (and take
    ``[..., 0]`` of the result) or use ``jax.vmap``.

    Derivatives (closed form): with ``Z = S⁻¹ B``, the tangent is
    ``Ż = S⁻¹(Ḃ − Ṡ Z)`` with ``Ṡ = L̇ lᵀ + l L̇ᵀ``; the reverse rule is
    ``B̄ = S⁻¹ Z̄`` and ``L̄ = −tril((B̄ Zᵀ + Z B̄ᵀ) l)``.

    A singular ``l`` (a zero on the diagonal) gives ``inf``/``nan``; it is not masked.

    Raises:
      ValueError: if ``l`` is not square, ``b`` has the wrong length, or the batch
        dimensions do not broadcast (checked on static shapes, so also under ``jit``).
    """
    l = as_float_array(l, "l")
    b = as_float_array(b, "b")
    check_square(l, "l")
    n = l.shape[-1]
    if b.ndim == 0:
        raise ValueError(f"b must be (n,) or (..., n, k), got a scalar with l.shape={l.shape}")
    vector = b.ndim == 1
    rows = b.shape[0] if vector else b.shape[-2]
    if rows != n:
        want = f"({n},) or (..., {n}, k)"
        raise ValueError(
            f"b must have shape {want} to match l.shape={l.shape}, got b.shape={b.shape}"
        )
    if not vector:
        _batch_shape("l", l.shape[:-2], "b", b.shape[:-2], l.shape, b.shape)
    dtype = common_dtype(l, b)
    l = jnp.tril(l.astype(dtype))
    b = b.astype(dtype)
    if vector:
        return _cho_solve(l, b[:, None])[..., 0]
    return _cho_solve(l, b)


# ----------------------------------------------------------------------- logdet_spd


@jax.custom_jvp
def _logdet_spd(s):
    return 2.0 * jnp.sum(jnp.log(_diag(cholesky_lower(s))), axis=-1)  # nan where not PD


@_logdet_spd.defjvp
def _logdet_spd_jvp(primals, tangents):
    # d log det S = tr(S⁻¹ Ṡ); reverse: S̄ = S⁻¹. One factorisation, reused.
    (s,), (ds,) = primals, tangents
    l = cholesky_lower(s)
    ok = _factored(l)
    l_safe = _safe_factor(l, ok)
    # From the safe factor, so that differentiating this rule again leaks no NaN.
    value = jnp.where(ok, 2.0 * jnp.sum(jnp.log(_diag(l_safe)), axis=-1), jnp.nan)
    # Zero coefficient where s is finite but not PD (the value is nan there, and a caller
    # masking it with jnp.where must not get nan gradients); nan where s is not finite.
    coef = jnp.where(ok, 1.0, jnp.where(_all_finite(s), 0.0, jnp.nan)).astype(s.dtype)
    sinv = coef[..., None, None] * _spd_inverse(l_safe)
    return value, jnp.sum(sinv * ds, axis=(-2, -1))


def logdet_spd(s):
    """``log det s`` of a symmetric positive-definite ``s`` (..., n, n), via Cholesky.

    Implements ``log det S = 2 Σᵢ log Lᵢᵢ`` with ``S = L Lᵀ``, ``S = (s + sᵀ)/2``.

    Returns:
      (...,) array.

    Derivatives (closed form): ``d log det S = tr(S⁻¹ Ṡ)``, reverse ``S̄ = S⁻¹`` (the
    symmetric gradient, as for a function of a symmetric matrix; see module notes).

    Not positive-definite: where ``s`` is finite but ``(s + sᵀ)/2`` is not
    positive-definite (its Cholesky factorisation fails), the result is ``nan`` -- the
    log-determinant of an SPD matrix is undefined there even when ``det s > 0``, unlike
    ``numpy.linalg.slogdet``, which would report a sign -- and the gradient is zero, so
    ``jnp.where(ok, logdet_spd(s), fallback)`` has finite gradients. Non-finite ``s``
    gives ``nan`` value and gradient. For the Gaussian log-density, which returns
    ``-inf`` in that case, use :func:`gaussian_logpdf`.

    Raises:
      ValueError: if ``s`` is not a (..., n, n) square matrix.
    """
    s = as_float_array(s, "s")
    check_square(s, "s")
    return _logdet_spd(symmetrize(s))


# ------------------------------------------------------------------ gaussian_logpdf


def _gaussian_parts(v, s, *, safe):
    """One factorisation of ``s`` and everything both the value and the rule need.

    ``safe``: replace a failed factor by the identity before using it. The rule needs
    this (JAX differentiates the rule itself at higher order, and a NaN anywhere there
    would leak into gradients); the plain evaluation does not, as its NaN is masked.
    """
    m = s.shape[-1]
    l = cholesky_lower(s)
    pd = _factored(l)
    if safe:
        l = _safe_factor(l, pd)
    w = _tri_solve(l, v[..., None])  # L⁻¹ v, (..., m, 1)
    quad = jnp.sum(w[..., 0] ** 2, axis=-1)
    half_logdet = jnp.sum(jnp.log(_diag(l)), axis=-1)
    value = -0.5 * (m * _LOG_2PI + quad) - half_logdet
    finite = _all_finite(s)
    value = jnp.where(pd, value, jnp.where(finite, -jnp.inf, jnp.nan))
    return value, l, w, pd, finite


@jax.custom_jvp
def _gaussian_logpdf(v, s):
    return _gaussian_parts(v, s, safe=False)[0]


@_gaussian_logpdf.defjvp
def _gaussian_logpdf_jvp(primals, tangents):
    # ḟ = −½ tr((S⁻¹ − z zᵀ) Ṡ) − zᵀ v̇ with z = S⁻¹ v; reverse (by transposition):
    # S̄ = −½(S⁻¹ − z zᵀ), v̄ = −z. The residuals come from the single factorisation.
    (v, s), (dv, ds) = primals, tangents
    value, l_safe, w, pd, finite = _gaussian_parts(v, s, safe=True)
    z = _tri_solve(l_safe, w, transpose=True)[..., 0]  # S⁻¹ v
    # Zero coefficients where s is finite but not PD (value −inf, zero gradient), nan
    # where s is not finite (value nan).
    coef = jnp.where(pd, 1.0, jnp.where(finite, 0.0, jnp.nan)).astype(s.dtype)
    sinv = coef[..., None, None] * _spd_inverse(l_safe)
    zc = coef[..., None] * z
    dvalue = (
        -0.5 * jnp.sum(sinv * ds, axis=(-2, -1))
        + 0.5 * _quad_form(zc, ds, z)
        - jnp.sum(zc * dv, axis=-1)
    )
    return value, dvalue


def _check_gaussian_args(v, x, xname):
    check_square(x, xname)
    m = x.shape[-1]
    if v.ndim == 0 or v.shape[-1] != m:
        raise ValueError(
            f"v must have shape (..., {m}) to match {xname}.shape={x.shape}, got v.shape={v.shape}"
        )
    _batch_shape("v", v.shape[:-1], xname, x.shape[:-2], v.shape, x.shape)


def gaussian_logpdf(v, s):
    """Log-density of a zero-mean Gaussian, ``log N(v; 0, s)``, fused.

    Implements, with one Cholesky factorisation ``S = L Lᵀ`` of ``S = (s + sᵀ)/2``::

        log N(v; 0, S) = −½ (m log 2π + log det S + vᵀ S⁻¹ v)
                       = −½ (m log 2π + |L⁻¹ v|²) − Σᵢ log Lᵢᵢ.

    In the Kalman update ``v`` is the innovation and ``s`` its covariance.

    Args:
      v: (..., m) vector(s).
      s: (..., m, m) symmetric positive-definite matrix (matrices). Batch dimensions of
        ``v`` and ``s`` broadcast; ``s`` is factorised at its own batch shape, so a
        shared ``s`` is factorised once however many ``v`` it is paired with.

    Returns:
      (...,) array: the broadcast batch shape.

    Derivatives (closed form): ``S̄ = −½ (S⁻¹ − S⁻¹ v vᵀ S⁻¹)`` (the
    symmetric gradient) and ``v̄ = −S⁻¹ v``. The forward rule is
    ``−½ tr((S⁻¹ − z zᵀ) Ṡ) − zᵀ v̇`` with ``z = S⁻¹ v``; its residuals come from the
    same single factorisation, so ``jax.value_and_grad`` factorises once and its
    backward pass needs no further solves.

    Not positive-definite: where ``s`` is finite but ``(s + sᵀ)/2`` is not
    positive-definite (including singular), the result is ``-inf`` and every gradient
    is exactly zero -- no NaN reaches the gradients, also under ``jit`` and at higher
    order -- so a sampler just rejects the point. Non-finite ``s`` gives ``nan``, as
    does non-finite ``v``.

    Raises:
      ValueError: on a non-square ``s``, a ``v`` whose last axis is not ``m``, or batch
        dimensions that do not broadcast.
    """
    v = as_float_array(v, "v")
    s = as_float_array(s, "s")
    _check_gaussian_args(v, s, "s")
    dtype = common_dtype(v, s)
    return _gaussian_logpdf(v.astype(dtype), symmetrize(s.astype(dtype)))


# ------------------------------------------------------------- gaussian_logpdf_chol


def _gaussian_chol_parts(v, l, *, safe):
    """As :func:`_gaussian_parts`, from the factor (``safe``: for the rule)."""
    m = l.shape[-1]
    finite = _all_finite(l)
    good = jnp.all(_diag(l) != 0, axis=-1) & finite
    if safe:
        l = _safe_factor(l, good)
    w = _tri_solve(l, v[..., None])  # L⁻¹ v, (..., m, 1)
    quad = jnp.sum(w[..., 0] ** 2, axis=-1)
    half_logdet = jnp.sum(jnp.log(jnp.abs(_diag(l))), axis=-1)
    value = -0.5 * (m * _LOG_2PI + quad) - half_logdet
    value = jnp.where(good, value, jnp.where(finite, -jnp.inf, jnp.nan))
    return value, l, w, good, finite


@jax.custom_jvp
def _gaussian_logpdf_chol(v, l):
    return _gaussian_chol_parts(v, l, safe=False)[0]


@_gaussian_logpdf_chol.defjvp
def _gaussian_logpdf_chol_jvp(primals, tangents):
    # f = −½|w|² − Σ log|Lᵢᵢ| − const, w = L⁻¹v, z = L⁻ᵀw = S⁻¹v.
    # ḟ = −Σ L̇ᵢᵢ/Lᵢᵢ − zᵀv̇ + zᵀ L̇ w ; reverse: L̄ = tril(z wᵀ) − diag(1/Lᵢᵢ), v̄ = −z.
    # Only vector solves: the backward pass costs O(m²).
    (v, l), (dv, dl) = primals, tangents
    value, l_safe, w, good, finite = _gaussian_chol_parts(v, l, safe=True)
    z = _tri_solve(l_safe, w, transpose=True)[..., 0]
    coef = jnp.where(good, 1.0, jnp.where(finite, 0.0, jnp.nan)).astype(l.dtype)
    zc = coef[..., None] * z
    inv_diag = coef[..., None] / _diag(l_safe)
    dvalue = (
        -jnp.sum(inv_diag * _diag(dl), axis=-1)
        - jnp.sum(zc * dv, axis=-1)
        + _quad_form(zc, dl, w[..., 0])
    )
    return value, dvalue


def gaussian_logpdf_chol(v, l):
    """``log N(v; 0, l lᵀ)`` from a lower-triangular factor ``l`` (square-root form).

    Implements ``−½ (m log 2π + |l⁻¹ v|²) − Σᵢ log |lᵢᵢ|`` -- no factorisation; this is
    the square-root filter's update, whose factors (e.g. from QR) may have negative
    diagonal entries, hence ``|lᵢᵢ|``.

    Args:
      v: (..., m) vector(s).
      l: (..., m, m) factor; only its lower triangle is read. Batch dimensions of ``v``
        and ``l`` broadcast.

    Returns:
      (...,) array: the broadcast batch shape.

    Derivatives (closed form): with ``w = l⁻¹ v`` and ``z = l⁻ᵀ w = S⁻¹ v``,
    ``L̄ = tril(z wᵀ) − diag(1/lᵢᵢ)`` (equal to ``−tril((S⁻¹ − z zᵀ) l)``, the chain rule
    through ``S = l lᵀ``) and ``v̄ = −z``. The backward pass needs no matrix solve.

    Singular factor (a zero on the diagonal): ``-inf`` with zero gradients, as for a
    non-positive-definite ``s`` in :func:`gaussian_logpdf`; non-finite ``l`` gives
    ``nan``.

    Raises:
      ValueError: on a non-square ``l``, a ``v`` whose last axis is not ``m``, or batch
        dimensions that do not broadcast.
    """
    v = as_float_array(v, "v")
    l = as_float_array(l, "l")
    _check_gaussian_args(v, l, "l")
    dtype = common_dtype(v, l)
    return _gaussian_logpdf_chol(v.astype(dtype), jnp.tril(l.astype(dtype)))
