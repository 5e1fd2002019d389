"""Continuous and discrete Lyapunov equations, batched, GPU-friendly, with adjoint rules.

``solve_continuous_lyapunov(a, q)`` solves ``a X + X aᵀ = q`` and
``solve_discrete_lyapunov(a, q)`` solves ``a X aᵀ − X + q = 0`` (scipy's conventions).

Algorithms (only matmul and LU, which JAX has on every backend; no Schur form):

* ``n <= _KRON_MAX_N``: the Kronecker system. With row-major vec,
  ``vec(a X + X aᵀ) = (a ⊗ I + I ⊗ a) vec X`` and ``vec(X − a X aᵀ) = (I − a ⊗ a) vec X``;
  the n² × n² matrix is LU-factorised once and that factorisation serves the primal
  solve and, transposed, the adjoint solve of the gradient.
* ``n > _KRON_MAX_N``: an iteration that costs O(n³) per step --
  continuous: the scaled Newton iteration for the matrix sign function of
  ``[[a, −q], [0, −aᵀ]]`` (Roberts 1980; Byers 1987), whose (1, 2) block converges to
  ``2X`` when ``a`` is stable; discrete: Smith's doubling ``X ← X + A X Aᵀ, A ← A²``,
  which converges when the spectral radius of ``a`` is below one. Both run in a
  ``while_loop`` bounded by a maximum iteration count and are followed by iterative
  refinement on the residual, which brings ill-conditioned cases (stiff or nearly
  marginal ``a``) from about ``eps·cond(a)`` to the accuracy of the Kronecker LU.
  Matrices for which the iteration does not apply (continuous: ``a`` not stable;
  discrete: spectral radius >= 1) fall back to the Kronecker solve, one matrix at a
  time and only when a batch holds such a matrix.

The route is chosen statically from ``n`` (a Python-level decision, so there is no
branching on values under ``jit``); the fallback is a ``lax.cond`` on whether any
matrix of the batch needs it. Under ``jax.vmap`` the iterative solver batches natively
(``custom_vmap``), so that predicate stays a scalar and ``vmap`` does not turn the
fallback into "always compute the Kronecker solve".

Derivatives (design.md §4) come from ``jax.lax.custom_linear_solve`` with the linear
operator ``X ↦ a X + X aᵀ`` (``X ↦ X − a X aᵀ``): the tangent solves the same
equation with right-hand side ``q̇ − (ȧ X + X ȧᵀ)`` (``q̇ + ȧ X aᵀ + a X ȧᵀ``), and the
cotangent solves the adjoint equation ``aᵀ Λ + Λ a = X̄`` (``Λ − aᵀ Λ a = X̄``), giving
``q̄ = Λ`` and ``ā = −(Λ Xᵀ + Λᵀ X)`` (``ā = Λ a Xᵀ + Λᵀ a X``). The adjoint equation is
the same solver applied to ``aᵀ``. ``jvp``, ``grad``, ``vmap``, ``jacfwd`` and
``hessian`` all work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import custom_batching, lax

from kalmanad.linalg._checks import as_float_array, check_same_shape, check_square, common_dtype

__all__ = ["solve_continuous_lyapunov", "solve_discrete_lyapunov"]

# Largest n solved through the n² × n² Kronecker system. Measured on CPU (float64,
# batch 1 and 512, primal and value_and_grad): the Kronecker LU costs O(n⁶) but shares
# its factorisation with the gradient; the iterations cost O(n³) per step but about
# ten steps, plus the adjoint solve. The Kronecker route is faster up to n = 8 and
# the iterative one from n = 12 on.
_KRON_MAX_N = 3

# Newton sign iteration: with determinant scaling it needs about 10 steps for
# well-separated spectra and about 25 when an eigenvalue lies within 1e-12 of the
# imaginary axis; more than this means the matrix is not (numerically) stable.
_MAX_SIGN_ITER = 50
# Smith doubling after k steps has summed 2^k terms of the series: 64 steps reach
# spectral radii within 1e-17 of one.
_MAX_SMITH_ITER = 64
# Refinement steps on the residual of the iterative routes (each one a full solve,
# taken only by matrices whose relative residual is still above tolerance and still
# decreasing).
_MAX_REFINE = 3


def solve_continuous_lyapunov(a, q):
    """Solve the continuous Lyapunov (Sylvester) equation ``a X + X aᵀ = q``.

    Same convention as :func:`scipy.linalg.solve_continuous_lyapunov`.

    Args:
      a: array of shape ``(..., n, n)``.
      q: array of shape ``(..., n, n)``; the leading batch dimensions of ``a`` and ``q``
        broadcast against each other. ``q`` need not be symmetric.

    Returns:
      ``X`` of shape ``(..., n, n)`` and the common floating dtype of ``a`` and ``q``
      (integer input is promoted). Where ``q`` is exactly symmetric, ``X`` is returned
      exactly symmetric (``(X + Xᵀ)/2``; the exact solution is symmetric then).

    The equation has a unique solution iff ``λᵢ + λⱼ ≠ 0`` for all eigenvalues of
    ``a`` (so any stable ``a`` qualifies; ``a = 0`` or ``a`` with eigenvalues ``±λ``
    does not). Where it has none -- or the Kronecker matrix ``a ⊗ I + I ⊗ a`` is
    singular to working precision (estimated reciprocal 1-norm condition number below
    ``n² · eps``) -- that matrix's result is all NaN, with no exception, also inside
    ``jit``. NaN input gives NaN output. Gradients with respect to ``a`` and ``q`` are
    given by the adjoint equation (module docstring).

    For ``n <= 8`` the Kronecker system is solved by LU; for larger ``n`` the scaled
    Newton sign-function iteration with iterative refinement is used when ``a`` is
    stable, and the Kronecker solve otherwise (O(n⁶) time, O(n⁴) memory).
    """
    a, q = _prepare(a, q, "solve_continuous_lyapunov")
    return _solve(a, q, discrete=False)


def solve_discrete_lyapunov(a, q):
    """Solve the discrete Lyapunov (Stein) equation ``a X aᵀ − X + q = 0``.

    Same convention as :func:`scipy.linalg.solve_discrete_lyapunov`; for ``a`` with
    spectral radius below one, ``X = Σₖ aᵏ q (aᵀ)ᵏ``.

    Args:
      a: array of shape ``(..., n, n)``.
      q: array of shape ``(..., n, n)``; the leading batch dimensions of ``a`` and ``q``
        broadcast against each other. ``q`` need not be symmetric.

    Returns:
      ``X`` of shape ``(..., n, n)`` and the common floating dtype of ``a`` and ``q``
      (integer input is promoted). Where ``q`` is exactly symmetric, ``X`` is returned
      exactly symmetric (``(X + Xᵀ)/2``).

    The equation has a unique solution iff ``λᵢ λⱼ ≠ 1`` for all eigenvalues of ``a``
    (``a = I`` or a rotation does not qualify). Where it has none -- or ``I − a ⊗ a``
    is singular to working precision (estimated reciprocal 1-norm condition number
    below ``n² · eps``) -- that matrix's result is all NaN, with no exception, also
    inside ``jit``. NaN input gives NaN output. Gradients come from the adjoint
    equation ``Λ − aᵀ Λ a = X̄`` (module docstring).

    For ``n <= 8`` the Kronecker system is solved by LU; for larger ``n`` Smith's
    doubling with iterative refinement is used when the spectral radius of ``a`` is
    below one, and the Kronecker solve otherwise (O(n⁶) time, O(n⁴) memory).
    """
    a, q = _prepare(a, q, "solve_discrete_lyapunov")
    return _solve(a, q, discrete=True)


# --------------------------------------------------------------------------- set-up


def _prepare(a, q, fname):
    a = as_float_array(a, "a")
    q = as_float_array(q, "q")
    check_square(a, "a")
    check_square(q, "q")
    check_same_shape(a, q, "a", "q")
    try:
        batch = jnp.broadcast_shapes(a.shape[:-2], q.shape[:-2])
    except ValueError:
        raise ValueError(
            f"{fname}: the batch dimensions of a and q do not broadcast, "
            f"got a.shape={a.shape} and q.shape={q.shape}"
        ) from None
    dtype = common_dtype(a, q)
    shape = (*batch, *a.shape[-2:])
    return jnp.broadcast_to(a.astype(dtype), shape), jnp.broadcast_to(q.astype(dtype), shape)


def _mT(x):
    return jnp.swapaxes(x, -1, -2)


def _norm1(x):
    """Matrix 1-norm (largest absolute column sum) over the last two axes."""
    return jnp.max(jnp.sum(jnp.abs(x), axis=-2), axis=-1)


def _operator(a, x, discrete):
    """The linear map whose inverse is the solver: ``a x + x aᵀ`` or ``x − a x aᵀ``."""
    if discrete:
        return x - a @ x @ _mT(a)
    return a @ x + x @ _mT(a)


def _symmetrise_like(b, x):
    """Make ``x`` exactly symmetric where the right-hand side ``b`` is.

    Both operators commute with transposition, so the exact solution for a symmetric
    right-hand side is symmetric; this only removes rounding asymmetry. It is applied to
    every solve (primal, tangent, cotangent), each of which is the same linear map.
    """
    sym = jnp.all(b == _mT(b), axis=(-2, -1), keepdims=True)
    return jnp.where(sym, 0.5 * (x + _mT(x)), x)


def _solve(a, q, discrete):
    # The solvers see a constant `a`: custom_linear_solve differentiates only through
    # `matvec` (which closes over the differentiable `a`) and treats `solve` as its
    # exact inverse, so no tangent may flow into the factorisation or the iterations.
    a_const = lax.stop_gradient(a)

    def matvec(x):
        return _operator(a, x, discrete)

    if a.shape[-1] <= _KRON_MAX_N:
        fact = _kron_factor(a_const, discrete)

        def solve(_, b):
            return _symmetrise_like(b, _kron_solve(fact, b, trans=False))

        def transpose_solve(_, b):
            return _symmetrise_like(b, _kron_solve(fact, b, trans=True))

    else:
        iterative = _smith_solve if discrete else _sign_solve

        def solve(_, b):
            return _symmetrise_like(b, iterative(a_const, b))

        def transpose_solve(_, b):
            return _symmetrise_like(b, iterative(_mT(a_const), b))

    return lax.custom_linear_solve(matvec, q, solve, transpose_solve)


# ------------------------------------------------------------------ matrix inverse


def _gauss_jordan_inverse(m):
    """Inverse and log|det| of ``m`` (..., N, N) by Gauss–Jordan with partial pivoting.

    Pure ``jax.numpy``, vectorised over the batch: N steps of O(N²) work each. On CPU
    this replaces jaxlib's LAPACK kernels, which (jaxlib 0.10) fan a batch out over
    XLA's intra-op thread pool and block inside it: two independent batched calls in
    flight at once -- e.g. the primal and the adjoint solve of a gradient -- can
    deadlock a machine with two cores. A singular ``m`` gives inf/NaN.
    """
    size = m.shape[-1]
    idx = jnp.arange(size)
    eye = jnp.broadcast_to(jnp.eye(size, dtype=m.dtype), m.shape)
    w = jnp.concatenate([m, eye], axis=-1)  # [m | I] -> [I | m⁻¹]

    def step(k, carry):
        w, log_det = carry
        col = w[..., :, k]
        p = jnp.argmax(jnp.where(idx >= k, jnp.abs(col), -1.0), axis=-1)
        row_p = jnp.take_along_axis(w, p[..., None, None], axis=-2)[..., 0, :]
        row_k = w[..., k, :]
        is_k = (idx == k)[:, None]
        is_p = (idx == p[..., None])[..., :, None]
        w = jnp.where(is_k, row_p[..., None, :], jnp.where(is_p, row_k[..., None, :], w))
        pivot = row_p[..., k]
        new_row = row_p / pivot[..., None]
        factor = jnp.where(idx == k, 0.0, w[..., :, k])
        w = jnp.where(is_k, new_row[..., None, :], w - factor[..., :, None] * new_row[..., None, :])
        return w, log_det + jnp.log(jnp.abs(pivot))

    w, log_det = lax.fori_loop(0, size, step, (w, jnp.zeros(m.shape[:-2], m.dtype)))
    return w[..., size:], log_det


def _lu_inverse(m):
    """Inverse and log|det| through LAPACK/cuSOLVER LU (``lax.linalg.lu``)."""
    lu, piv, _ = lax.linalg.lu(m)
    inv = jsl.lu_solve((lu, piv), jnp.broadcast_to(jnp.eye(m.shape[-1], dtype=m.dtype), m.shape))
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(lu, axis1=-2, axis2=-1))), axis=-1)
    return inv, log_det


def _inverse(m):
    """Batched inverse and log|det|: Gauss–Jordan on CPU, the native LU elsewhere."""
    return lax.platform_dependent(m, cpu=_gauss_jordan_inverse, default=_lu_inverse)


# --------------------------------------------------------------------- Kronecker route


def _kron_matrix(a, discrete):
    """``a ⊗ I + I ⊗ a`` or ``I − a ⊗ a`` (row-major vec), shape ``(..., n², n²)``."""
    n = a.shape[-1]
    eye = jnp.eye(n, dtype=a.dtype)
    if discrete:
        k = -jnp.einsum("...ij,...kl->...ikjl", a, a)
    else:
        k = jnp.einsum("...ij,kl->...ikjl", a, eye) + jnp.einsum("ij,...kl->...ikjl", eye, a)
    k = k.reshape(*a.shape[:-2], n * n, n * n)
    if discrete:
        k = k + jnp.eye(n * n, dtype=a.dtype)
    return k


def _kron_factor(a, discrete, inverse=_inverse):
    """Inverse of the Kronecker matrix K and a flag: K nonsingular to working precision.

    The flag is ``1 / (‖K‖₁ ‖K⁻¹‖₁) >= n² · eps``; it is False for NaN input, since every
    comparison with NaN is. With the inverse in hand, the primal and the adjoint solve
    are each a few matrix-vector products.
    """
    k = _kron_matrix(a, discrete)
    k_inv, _ = inverse(k)
    rcond = 1.0 / (_norm1(k) * _norm1(k_inv))
    ok = rcond >= k.shape[-1] * jnp.finfo(k.dtype).eps
    return a, k_inv, ok, discrete


def _kron_solve(fact, b, trans):
    """``vec X = K⁻¹ vec b`` (``trans=True``: ``K⁻ᵀ``, the adjoint equation), NaN where K is
    singular, plus one step of refinement on the residual: a solve through an explicit
    inverse has a residual up to ``cond(K)`` times larger than an LU solve; one step
    brings it down to the LU level."""
    a, k_inv, ok, discrete = fact
    if trans:
        a, k_inv = _mT(a), _mT(k_inv)
    n = b.shape[-1]

    def apply_inv(r):
        return (k_inv @ r.reshape(*r.shape[:-2], n * n, 1)).reshape(r.shape)

    x = apply_inv(b)
    x = x + apply_inv(b - _operator(a, x, discrete))
    return jnp.where(ok[..., None, None], x, jnp.nan)


# --------------------------------------------------------------------- iterative route


def _natively_batched(fun):
    """Let ``jax.vmap`` of ``fun(a, b)`` call ``fun`` on the stacked arrays.

    ``fun`` already handles leading batch dimensions; doing the batching ourselves keeps
    its ``lax.cond`` on "does any matrix need the fallback" a scalar predicate, where
    ``vmap`` would otherwise evaluate both branches for every matrix.
    """
    wrapped = custom_batching.custom_vmap(fun)

    @wrapped.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = [
            x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))
            for x, batched in zip(args, in_batched, strict=True)
        ]
        return wrapped(*args), True

    return wrapped


def _sign_iteration(a, q):
    """Scaled Newton iteration for ``sign([[a, −q], [0, −aᵀ]]) = [[−I, 2X], [0, I]]``.

    With ``Z = [[A, C], [0, −Aᵀ]]``, ``Z⁻¹ = [[A⁻¹, A⁻¹ C A⁻ᵀ], [0, −A⁻ᵀ]]``, so the step
    ``Z ← (μ Z + (μ Z)⁻¹)/2`` acts on the blocks as ``A ← (μ A + A⁻¹/μ)/2`` and
    ``C ← (μ C + A⁻¹ C A⁻ᵀ/μ)/2``, with determinant scaling ``μ = |det A|^(−1/n)``
    (Byers 1987) while far from convergence. For stable ``a``, ``A → −I``, ``C → 2X``.

    Returns ``(X, converged)``; ``converged`` is False where ``a`` is not stable (the
    iteration settles on a sign other than −I), where it has eigenvalues on the
    imaginary axis, for NaN input, or after ``_MAX_SIGN_ITER`` steps.
    """
    n = a.shape[-1]
    dtype = a.dtype
    tol = 10 * n * jnp.finfo(dtype).eps
    eye = jnp.eye(n, dtype=dtype)
    batch = a.shape[:-2]

    def cond(state):
        k, _, _, _, done = state
        return (k < _MAX_SIGN_ITER) & ~jnp.all(done)

    def body(state):
        k, ak, ck, dist, done = state
        inv, log_det = _inverse(ak)
        # Scaling speeds up the first steps; near −I it would only perturb the
        # quadratic convergence (Higham, Functions of Matrices, §5.5).
        mu = jnp.where(dist > 1e-2, jnp.exp(-log_det / n), 1.0)[..., None, None]
        a_new = 0.5 * (mu * ak + inv / mu)
        c_new = 0.5 * (mu * ck + inv @ ck @ _mT(inv) / mu)
        dist_new = _norm1(a_new + eye)
        change = _norm1(a_new - ak)
        # Stop at −I, at another fixed point (`a` not stable), or on inf/NaN.
        stop = (dist_new <= tol) | (change <= tol * _norm1(a_new)) | ~jnp.isfinite(dist_new)
        keep = done[..., None, None]
        return (
            k + 1,
            jnp.where(keep, ak, a_new),
            jnp.where(keep, ck, c_new),
            jnp.where(done, dist, dist_new),
            done | stop,
        )

    init = (0, a, -q, jnp.full(batch, jnp.inf, dtype), jnp.zeros(batch, bool))
    _, _, c, dist, _ = lax.while_loop(cond, body, init)
    return 0.5 * c, dist <= tol


def _smith_iteration(a, q):
    """Smith's doubling: ``X ← X + A X Aᵀ``, ``A ← A²``, from ``X = q``, ``A = a``.

    After k steps X holds the first 2^k terms of ``Σ aʲ q (aᵀ)ʲ`` and the exact solution
    is ``X + A X* Aᵀ``, so the relative truncation error is at most ``‖A‖₁ ‖A‖∞``; stop
    when that is below eps. Returns ``(X, converged)``; ``converged`` is False when the
    spectral radius is not below one (powers do not decay, or overflow), for NaN input,
    or after ``_MAX_SMITH_ITER`` steps.
    """
    eps = jnp.finfo(a.dtype).eps
    batch = a.shape[:-2]

    def tail(ak):
        return _norm1(ak) * _norm1(_mT(ak))

    def cond(state):
        k, _, _, done = state
        return (k < _MAX_SMITH_ITER) & ~jnp.all(done)

    def body(state):
        k, ak, xk, done = state
        x_new = xk + ak @ xk @ _mT(ak)
        a_new = ak @ ak
        t = tail(a_new)
        stop = (t <= eps) | ~jnp.isfinite(t)
        keep = done[..., None, None]
        return k + 1, jnp.where(keep, ak, a_new), jnp.where(keep, xk, x_new), done | stop

    init = (0, a, q, tail(a) <= eps)
    _, ak, x, _ = lax.while_loop(cond, body, init)
    return x, tail(ak) <= eps


def _refine_and_fall_back(a, q, iteration, discrete):
    """Solve by ``iteration``, refine on the residual, fall back to Kronecker where needed.

    Refinement: ``X ← X + solve(q − L(X))`` while the relative residual
    ``‖q − L(X)‖₁ / (‖L‖ ‖X‖₁ + ‖q‖₁)`` is above ``n · eps`` and decreasing, at most
    ``_MAX_REFINE`` times. Matrices the iteration cannot handle are solved through the
    Kronecker system one at a time (``lax.map``), and only if the batch has any.
    """
    n = a.shape[-1]
    tol = n * jnp.finfo(a.dtype).eps
    if discrete:
        op_norm = 1.0 + _norm1(a) * _norm1(_mT(a))
    else:
        op_norm = _norm1(a) + _norm1(_mT(a))
    q_norm = _norm1(q)

    def residual(x):
        r = q - _operator(a, x, discrete)
        return r, _norm1(r) / (op_norm * _norm1(x) + q_norm)

    # One loop for the solve and its refinements, so `iteration` is traced once:
    # step 0 solves from X = 0 (residual q) and records whether the iteration applies.
    def cond(state):
        k, _, _, _, active, _ = state
        return (k <= _MAX_REFINE) & jnp.any(active)

    def body(state):
        k, x, r, err, active, ok = state
        dx, converged = iteration(a, r)
        ok = jnp.where(k == 0, converged, ok)
        x_new = x + dx
        r_new, err_new = residual(x_new)
        take = active & ((k == 0) | (err_new < err))
        keep = take[..., None, None]
        return (
            k + 1,
            jnp.where(keep, x_new, x),
            jnp.where(keep, r_new, r),
            jnp.where(take, err_new, err),
            take & ok & (err_new > tol),
            ok,
        )

    batch = a.shape[:-2]
    init = (
        0,
        jnp.zeros_like(q),
        q,
        jnp.full(batch, jnp.inf, a.dtype),
        jnp.ones(batch, bool),
        jnp.ones(batch, bool),
    )
    _, x, _, _, _, ok = lax.while_loop(cond, body, init)

    def fall_back(x):
        flat = (a.reshape(-1, n, n), q.reshape(-1, n, n), x.reshape(-1, n, n), ok.reshape(-1))

        def one(args):
            a_i, q_i, x_i, ok_i = args

            def kron():
                # One matrix at a time: the (large) Kronecker matrix goes to LU unbatched.
                fact = _kron_factor(a_i, discrete, inverse=_lu_inverse)
                return _kron_solve(fact, q_i, trans=False)

            return lax.cond(ok_i, lambda: x_i, kron)

        return lax.map(one, flat).reshape(x.shape)

    return lax.cond(jnp.all(ok), lambda x: x, fall_back, x)


@_natively_batched
def _sign_solve(a, q):
    return _refine_and_fall_back(a, q, _sign_iteration, discrete=False)


@_natively_batched
def _smith_solve(a, q):
    return _refine_and_fall_back(a, q, _smith_iteration, discrete=True)
