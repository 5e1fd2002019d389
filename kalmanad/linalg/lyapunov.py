"""Continuous and discrete Lyapunov equations, batched, GPU-friendly, with adjoint rules.

``solve_continuous_lyapunov(a, q)`` solves ``a X + X aᵀ = q`` and
``solve_discrete_lyapunov(a, q)`` solves ``a X aᵀ − X + q = 0`` (scipy's conventions).

Algorithms -- matrix products and inverses only, which JAX has on every backend (no
Schur form, no general eigendecomposition):

* Small n (``n <= 3`` continuous, ``n <= 2`` discrete): the Kronecker system. With
  row-major vec, ``vec(a X + X aᵀ) = (a ⊗ I + I ⊗ a) vec X`` and
  ``vec(X − a X aᵀ) = (I − a ⊗ a) vec X``. The n² × n² matrix K is inverted once (so
  its exact condition number is at hand for the singularity check) and the inverse
  serves the primal solve and, transposed, the adjoint solve of the gradient; each
  solve takes one step of refinement on the residual.
* Larger n: an iteration costing O(n³) per step. Continuous: the scaled Newton
  iteration for the matrix sign function of ``[[a, −q], [0, −aᵀ]]`` (Roberts 1980;
  Byers 1987), whose (1, 2) block converges to ``2X`` when ``a`` is stable. Discrete:
  Smith's doubling ``X ← X + A X Aᵀ, A ← A²``, which converges when the spectral radius
  of ``a`` is below one. Both run in a ``while_loop`` bounded by a maximum iteration
  count (inf/NaN stop it), followed by iterative refinement on the residual, which
  brings ill-conditioned cases (stiff or nearly marginal ``a``) from an error of about
  ``eps·cond(a)`` to that of a backward-stable solver. The sign iteration's inverses
  and scalings depend on ``a`` alone: they are recorded once (while they fit
  ``_REPLAY_MAX_BYTES``) and replayed for the refinements and, transposed, for the
  adjoint solve of the gradient, which then cost two matrix products per step instead
  of an inverse and two. (In a batch, one matrix that needs a refinement makes the
  whole batch take it: repeating the iteration made the batched gradient cost 2.7
  primal solves.) Matrices for which the
  iteration does not apply (continuous: ``a`` not stable; discrete: spectral radius
  >= 1) fall back to the Kronecker solve -- O(n⁶) time and O(n⁴) memory -- one matrix
  at a time, and only when the batch holds such a matrix.

The route is a static, Python-level choice on ``n`` (no branching on values under
``jit``; the crossovers are in :mod:`kalmanad._tuning`, set on CPU in float64 for
values and gradients): the Kronecker route costs O(n⁶) but shares its inverse with the
gradient; the iterations cost O(n³) per step and the gradient is a second solve. The
fallback is a ``lax.cond`` on "does any matrix of the batch need it". The iterative
solvers batch natively under ``jax.vmap`` (``custom_vmap``), so that predicate stays a
scalar: plain ``vmap`` would turn the ``cond`` into "always compute the fallback".

Inverses are Gauss–Jordan elimination written in ``jax.numpy`` on CPU (see
:func:`_gauss_jordan_inverse` for why) and the native LU elsewhere.

Derivatives come from ``jax.lax.custom_linear_solve`` with the linear
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

from kalmanad._tuning import KRON_MAX_N_CONTINUOUS as _KRON_MAX_N_CONTINUOUS
from kalmanad._tuning import KRON_MAX_N_DISCRETE as _KRON_MAX_N_DISCRETE
from kalmanad._tuning import REPLAY_MAX_BYTES as _REPLAY_MAX_BYTES
from kalmanad.linalg._checks import as_float_array, check_same_shape, check_square, common_dtype
from kalmanad.linalg._util import mT, symmetrize

__all__ = ["solve_continuous_lyapunov", "solve_discrete_lyapunov"]


# Newton sign iteration: with determinant scaling it needs about 10 steps for
# well-separated spectra and about 25 when an eigenvalue lies within 1e-12 of the
# imaginary axis; more than this means the matrix is not (numerically) stable.
_MAX_SIGN_ITER = 50
# Smith doubling after k steps has summed 2^k terms of the series: 64 steps reach
# spectral radii within 1e-17 of one.
_MAX_SMITH_ITER = 64
# Refinement steps on the residual of the iterative routes (each one a full solve,
# taken only while some matrix's relative residual is above n·eps and decreasing).
# Well-conditioned problems need none; a stiff a (eigenvalues from -1e-3 to -1e3,
# eigenvectors with condition number 3e3) needs four to reach n·eps.
_MAX_REFINE = 5
# A matrix whose relative residual is still above this many times n·eps after
# refinement goes to the Kronecker solve, like one outside the iteration's domain.
_ACCEPT_FACTOR = 100


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

    The equation has a unique solution iff ``λᵢ + λⱼ ≠ 0`` for all pairs of eigenvalues
    of ``a``: every stable ``a`` qualifies; ``a = 0``, or an ``a`` with eigenvalues ``λ``
    and ``−λ``, does not. Where it has none, that matrix's result is all NaN -- no
    exception, also inside ``jit`` -- and so are the derivatives. Precisely: the
    Kronecker solve returns NaN when ``K = a ⊗ I + I ⊗ a`` is singular to working
    precision, ``1 / (‖K‖₁ ‖K⁻¹‖₁) < n² · eps``; the sign iteration only accepts stable
    ``a`` (unique solution) and hands every other matrix to the Kronecker solve. NaN
    input gives NaN output.

    Method: for ``n <= 3`` the Kronecker system; for larger ``n`` the scaled Newton
    sign-function iteration with iterative refinement where ``a`` is stable, and the
    Kronecker system otherwise (O(n⁶) time, O(n⁴) memory). Gradients with respect to
    ``a`` and ``q`` come from the adjoint equation ``aᵀ Λ + Λ a = X̄`` (module
    docstring).
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

    The equation has a unique solution iff ``λᵢ λⱼ ≠ 1`` for all pairs of eigenvalues
    of ``a``: every ``a`` with spectral radius below one qualifies; ``a = I``, or a
    rotation, does not. Where it has none, that matrix's result is all NaN -- no
    exception, also inside ``jit`` -- and so are the derivatives. Precisely: the
    Kronecker solve returns NaN when ``K = I − a ⊗ a`` is singular to working precision,
    ``1 / (‖K‖₁ ‖K⁻¹‖₁) < n² · eps``; Smith's doubling only accepts spectral radius
    below one (unique solution) and hands every other matrix to the Kronecker solve.
    NaN input gives NaN output.

    Method: for ``n <= 2`` the Kronecker system; for larger ``n`` Smith's doubling with
    iterative refinement where the spectral radius of ``a`` is below one, and the
    Kronecker system otherwise (O(n⁶) time, O(n⁴) memory). Gradients come from the
    adjoint equation ``Λ − aᵀ Λ a = X̄`` (module docstring).
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


def _norm1(x):
    """Matrix 1-norm (largest absolute column sum) over the last two axes."""
    return jnp.max(jnp.sum(jnp.abs(x), axis=-2), axis=-1)


def _operator(a, x, discrete):
    """The linear map whose inverse is the solver: ``a x + x aᵀ`` or ``x − a x aᵀ``."""
    if discrete:
        return x - a @ x @ mT(a)
    return a @ x + x @ mT(a)


def _symmetrise_like(b, x):
    """Make ``x`` exactly symmetric where the right-hand side ``b`` is.

    Both operators commute with transposition, so the exact solution for a symmetric
    right-hand side is symmetric; this only removes rounding asymmetry. It is applied to
    every solve (primal, tangent, cotangent), each of which is the same linear map.
    """
    sym = jnp.all(b == mT(b), axis=(-2, -1), keepdims=True)
    return jnp.where(sym, symmetrize(x), x)


def _solve(a, q, discrete):
    # The solvers see a constant `a`: custom_linear_solve differentiates only through
    # `matvec` (which closes over the differentiable `a`) and treats `solve` as its
    # exact inverse, so no tangent may flow into the factorisation or the iterations.
    a_const = lax.stop_gradient(a)

    def matvec(x):
        return _operator(a, x, discrete)

    kron_max_n = _KRON_MAX_N_DISCRETE if discrete else _KRON_MAX_N_CONTINUOUS
    if a.shape[-1] <= kron_max_n:
        # One inverse serves both solves: K(aᵀ) = K(a)ᵀ for both equations.
        k_inv, ok = _kron_inverse(a_const, discrete)

        def solve(_, b):
            return _symmetrise_like(b, _kron_solve(a_const, k_inv, ok, b, discrete))

        def transpose_solve(_, b):
            x = _kron_solve(mT(a_const), mT(k_inv), ok, b, discrete)
            return _symmetrise_like(b, x)

    elif not discrete and _replay_fits(a_const):
        # The sign iteration's inverses depend on a alone: computed once, they serve
        # the primal solve, its refinements and the adjoint solve (transposed), which
        # then cost two matrix products per step instead of an inverse and two.
        factors = _sign_factors(a_const)

        def solve(_, b):
            return _symmetrise_like(b, _replayed_solve(a_const, *factors, b))

        def transpose_solve(_, b):
            return _symmetrise_like(b, _replayed_transpose_solve(mT(a_const), *factors, b))

    else:
        iterative = _smith_solve if discrete else _sign_solve

        def solve(_, b):
            return _symmetrise_like(b, iterative(a_const, b))

        def transpose_solve(_, b):
            return _symmetrise_like(b, iterative(mT(a_const), b))

    return lax.custom_linear_solve(matvec, q, solve, transpose_solve)


# ------------------------------------------------------------------ matrix inverse


def _gauss_jordan_inverse(m):
    """Inverse and log|det| of ``m`` (..., N, N) by Gauss–Jordan with partial pivoting.

    Pure ``jax.numpy``, vectorised over the batch: N steps of O(N²) work each. On CPU
    this replaces jaxlib's LAPACK kernels, which fan a batch out over
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


def _kron_inverse(a, discrete, inverse=_inverse):
    """``(K⁻¹, ok)``: the inverse of the Kronecker matrix K and whether K is nonsingular
    to working precision, ``1 / (‖K‖₁ ‖K⁻¹‖₁) >= n² · eps`` (False for NaN input, as
    every comparison with NaN is)."""
    k = _kron_matrix(a, discrete)
    k_inv, _ = inverse(k)
    rcond = 1.0 / (_norm1(k) * _norm1(k_inv))
    return k_inv, rcond >= k.shape[-1] * jnp.finfo(k.dtype).eps


def _kron_solve(a, k_inv, ok, b, discrete):
    """Solve ``L(X) = b`` with ``vec X = K⁻¹ vec b``; NaN where K is singular.

    One step of refinement on the residual follows: a solve through an explicit
    inverse can leave a residual ``cond(K)`` times larger than an LU solve does, and
    one step brings it down to that level (forward errors then match or beat scipy's
    Bartels–Stewart on stiff, nearly marginal and non-normal cases).
    """
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
        out = wrapped(*args)
        return out, jax.tree.map(lambda _: True, out)

    return wrapped


def _sign_step(ak, dist):
    """One scaled Newton step of the ``A`` block (see :func:`_sign_iteration`).

    Returns ``(inv, mu, a_new, dist_new, stop)``: ``A⁻¹``, the scaling μ (...,), the
    next ``A``, its distance ``‖A + I‖₁`` and the stopping test of each matrix.
    """
    n = ak.shape[-1]
    tol = 10 * n * jnp.finfo(ak.dtype).eps
    inv, log_det = _inverse(ak)
    # Scaling speeds up the first steps; near −I it would only perturb the quadratic
    # convergence (Higham, Functions of Matrices, §5.5).
    mu = jnp.where(dist > 1e-2, jnp.exp(-log_det / n), 1.0)
    a_new = 0.5 * (mu[..., None, None] * ak + inv / mu[..., None, None])
    dist_new = _norm1(a_new + jnp.eye(n, dtype=ak.dtype))
    change = _norm1(a_new - ak)
    stop = (dist_new <= tol) | (change <= tol * _norm1(a_new)) | ~jnp.isfinite(dist_new)
    return inv, mu, a_new, dist_new, stop


def _sign_c_step(c, inv, mu):
    """The ``C`` block's step: ``(μ C + A⁻¹ C A⁻ᵀ/μ)/2``."""
    mu = mu[..., None, None]
    return 0.5 * (mu * c + inv @ c @ mT(inv) / mu)


def _sign_iteration(a, q):
    """Scaled Newton iteration for ``sign([[a, −q], [0, −aᵀ]]) = [[−I, 2X], [0, I]]``.

    With ``Z = [[A, C], [0, −Aᵀ]]``, ``Z⁻¹ = [[A⁻¹, A⁻¹ C A⁻ᵀ], [0, −A⁻ᵀ]]``, so the step
    ``Z ← (μ Z + (μ Z)⁻¹)/2`` acts on the blocks as ``A ← (μ A + A⁻¹/μ)/2`` and
    ``C ← (μ C + A⁻¹ C A⁻ᵀ/μ)/2``, with determinant scaling ``μ = |det A|^(−1/n)``
    (Byers 1987) while far from convergence. For stable ``a``, ``A → −I``, ``C → 2X``.

    A matrix stops when ``‖A + I‖₁ <= 10 n eps``, or when the step no longer changes
    ``A`` (the rounding floor, or a fixed point other than −I), or on inf/NaN. Returns
    ``(X, converged)``: converged means stopped at −I (any other sign matrix S has
    ``‖S + I‖₁ >= 2``), so it is False where ``a`` is not stable, has eigenvalues on the
    imaginary axis, for NaN input, or after ``_MAX_SIGN_ITER`` steps.
    """
    batch = a.shape[:-2]

    def cond(state):
        k, _, _, _, done = state
        return (k < _MAX_SIGN_ITER) & ~jnp.all(done)

    def body(state):
        k, ak, ck, dist, done = state
        inv, mu, a_new, dist_new, stop = _sign_step(ak, dist)
        keep = done[..., None, None]
        return (
            k + 1,
            jnp.where(keep, ak, a_new),
            jnp.where(keep, ck, _sign_c_step(ck, inv, mu)),
            jnp.where(done, dist, dist_new),
            done | stop,
        )

    init = (0, a, -q, jnp.full(batch, jnp.inf, a.dtype), jnp.zeros(batch, bool))
    _, _, c, dist, done = lax.while_loop(cond, body, init)
    return 0.5 * c, done & (dist < 1.0)


def _replay_fits(a) -> bool:
    """Whether the recorded inverses of ``a`` (..., n, n) fit ``_REPLAY_MAX_BYTES``."""
    size = a.size * _MAX_SIGN_ITER * a.dtype.itemsize
    return size <= _REPLAY_MAX_BYTES


def _sign_factors_impl(a):
    """The ``A`` recursion of :func:`_sign_iteration`, recorded for :func:`_sign_replay`.

    Returns ``(inverses, scales, live, steps, converged)``: ``inverses`` (..., M, n, n)
    and ``scales`` (..., M) hold ``A_k⁻¹`` and ``μ_k`` of step k (M = _MAX_SIGN_ITER),
    ``live`` (..., M) whether the matrix was still iterating at step k, ``steps`` (...,)
    the number of steps the batch took (the same for every matrix) and ``converged``
    (...,) as :func:`_sign_iteration` reports it. Both take the same steps
    (:func:`_sign_step`), so every recorded value is the one :func:`_sign_iteration`
    uses.
    """
    n = a.shape[-1]
    batch = a.shape[:-2]
    m = _MAX_SIGN_ITER

    def cond(state):
        k, _, _, done, _ = state
        return (k < m) & ~jnp.all(done)

    def body(state):
        k, ak, dist, done, (inverses, scales, live) = state
        inv, mu, a_new, dist_new, stop = _sign_step(ak, dist)
        record = (
            lax.dynamic_update_index_in_dim(inverses, inv, k, axis=inverses.ndim - 3),
            lax.dynamic_update_index_in_dim(scales, mu, k, axis=scales.ndim - 1),
            lax.dynamic_update_index_in_dim(live, ~done, k, axis=live.ndim - 1),
        )
        keep = done[..., None, None]
        return (
            k + 1,
            jnp.where(keep, ak, a_new),
            jnp.where(done, dist, dist_new),
            done | stop,
            record,
        )

    record = (
        jnp.zeros((*batch, m, n, n), a.dtype),
        jnp.ones((*batch, m), a.dtype),
        jnp.zeros((*batch, m), bool),
    )
    init = (0, a, jnp.full(batch, jnp.inf, a.dtype), jnp.zeros(batch, bool), record)
    steps, _, dist, done, (inverses, scales, live) = lax.while_loop(cond, body, init)
    steps = jnp.full(batch, steps, jnp.int32)
    return inverses, scales, live, steps, done & (dist < 1.0)


def _sign_replay(factors, q, transpose: bool):
    """:func:`_sign_iteration` for the right-hand side ``q`` from recorded factors.

    Only the ``C`` recursion runs (:func:`_sign_c_step`) with the recorded ``A⁻¹`` and
    ``μ``. With ``transpose`` it solves the equation of ``aᵀ``, whose iterates are the
    transposes (``A⁻ᵀ C A⁻¹``). Returns ``(X, converged)``.
    """
    inverses, scales, live, steps, converged = factors

    def body(k, c):
        inv = lax.dynamic_index_in_dim(inverses, k, axis=inverses.ndim - 3, keepdims=False)
        mu = lax.dynamic_index_in_dim(scales, k, axis=scales.ndim - 1, keepdims=False)
        on = lax.dynamic_index_in_dim(live, k, axis=live.ndim - 1, keepdims=False)
        c_new = _sign_c_step(c, mT(inv) if transpose else inv, mu)
        return jnp.where(on[..., None, None], c_new, c)

    c = lax.fori_loop(0, jnp.max(steps, initial=0), body, -q)
    return 0.5 * c, converged


def _smith_iteration(a, q):
    """Smith's doubling: ``X ← X + A X Aᵀ``, ``A ← A²``, from ``X = q``, ``A = a``.

    After k steps X holds the first 2^k terms of ``Σ aʲ q (aᵀ)ʲ`` and the exact solution
    is ``X + A X* Aᵀ``, so the relative truncation error is at most ``‖A‖₁ ‖A‖∞``; stop
    when that is below eps. Returns ``(X, converged)``; ``converged`` is False when the
    spectral radius is not below one (powers do not decay, or overflow), for NaN input,
    or after ``_MAX_SMITH_ITER`` steps.
    """
    eps = jnp.finfo(a.dtype).eps

    def tail(ak):
        return _norm1(ak) * _norm1(mT(ak))

    def cond(state):
        k, _, _, done = state
        return (k < _MAX_SMITH_ITER) & ~jnp.all(done)

    def body(state):
        k, ak, xk, done = state
        x_new = xk + ak @ xk @ mT(ak)
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
    ``_MAX_REFINE`` times. Matrices the iteration cannot handle, or whose residual stays
    above ``_ACCEPT_FACTOR · n · eps``, are solved through the Kronecker system one at a
    time (``lax.map``), and only if the batch has any: a backward-stable safety net.
    """
    n = a.shape[-1]
    tol = n * jnp.finfo(a.dtype).eps
    if discrete:
        op_norm = 1.0 + _norm1(a) * _norm1(mT(a))
    else:
        op_norm = _norm1(a) + _norm1(mT(a))
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
    _, x, _, err, _, ok = lax.while_loop(cond, body, init)
    ok = ok & (err <= _ACCEPT_FACTOR * tol)

    def fall_back(x):
        flat = (a.reshape(-1, n, n), q.reshape(-1, n, n), x.reshape(-1, n, n), ok.reshape(-1))

        def one(args):
            a_i, q_i, x_i, ok_i = args

            def kron():
                # One matrix at a time: the (large) Kronecker matrix goes to LU unbatched.
                k_inv, ok = _kron_inverse(a_i, discrete, inverse=_lu_inverse)
                return _kron_solve(a_i, k_inv, ok, q_i, discrete)

            return lax.cond(ok_i, lambda: x_i, kron)

        return lax.map(one, flat).reshape(x.shape)

    return lax.cond(jnp.all(ok), lambda x: x, fall_back, x)


@_natively_batched
def _sign_solve(a, q):
    return _refine_and_fall_back(a, q, _sign_iteration, discrete=False)


@_natively_batched
def _smith_solve(a, q):
    return _refine_and_fall_back(a, q, _smith_iteration, discrete=True)


@_natively_batched
def _sign_factors(a):
    return _sign_factors_impl(a)


def _replayed(transpose: bool):
    """``solve(a, *factors, q)`` from factors recorded for ``a`` (``transpose``: for the
    equation of ``aᵀ``, which the caller passes as ``a``), natively batched."""

    @_natively_batched
    def solve(a, inverses, scales, live, steps, converged, q):
        factors = (inverses, scales, live, steps, converged)
        return _refine_and_fall_back(
            a, q, lambda _, r: _sign_replay(factors, r, transpose), discrete=False
        )

    return solve


_replayed_solve = _replayed(transpose=False)
_replayed_transpose_solve = _replayed(transpose=True)
