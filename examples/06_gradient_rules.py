# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The gradient rules: accuracy and speed, measured live
#
# Every likelihood evaluation of a continuous-time model discretises the SDE over the
# time steps: $A_d = e^{A\Delta}$ and a process-noise covariance from a Lyapunov
# equation or a Van Loan block exponential. NUTS needs the gradient of all of this with
# respect to $A$ and $GG^\top$, thousands of times. kalmanad does **not** differentiate
# the algorithms (the Padé approximant with scaling and squaring, the Lyapunov solver);
# it registers the matrix exponential and the Lyapunov solves as JAX primitives with
# derived rules:
#
# * **Matrix exponential.** The forward (JVP) rule is the Fréchet derivative
#   $L(A, E) = \int_0^1 e^{sA} E\, e^{(1-s)A}\,ds$; its adjoint under
#   $\langle X, Y\rangle = \operatorname{tr}(X^\top Y)$ is $L(A^\top, \cdot)$, so the
#   reverse rule is $\bar A = L(A^\top, \bar Y)$ — the same routine on the transpose.
#   $e^A$ and $L(A, E)$ are computed together by differentiating the Padé recurrence
#   (Al-Mohy & Higham 2009), at about three times the cost of $e^A$.
# * **Continuous Lyapunov equation** $AX + XA^\top = Q$. The adjoint of the solve is
#   another solve: $A^\top\Lambda + \Lambda A = \bar X$, then $\bar Q = \Lambda$ and
#   $\bar A = -(\Lambda X^\top + \Lambda^\top X)$.
#
# This notebook checks both against independent references — `scipy.linalg`'s
# `expm`, `expm_frechet` and `solve_continuous_lyapunov`, the exact block-matrix
# identity $\exp\begin{pmatrix}A & E\\ 0 & A\end{pmatrix} =
# \begin{pmatrix}e^A & L(A,E)\\ 0 & e^A\end{pmatrix}$, central differences — and times
# them against JAX's own automatic differentiation through `jax.scipy.linalg.expm` and
# through a generic linear solve. All numbers below are produced when the notebook runs
# (on whatever machine runs it: on a shared CPU, ratios are more meaningful than
# absolute times). `benchmarks/bench_linalg.py` is the full benchmark.

# %%
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import kalmanad.linalg as kl

jax.config.update("jax_enable_x64", True)

QUICK = os.environ.get("KALMANAD_EXAMPLES_QUICK") == "1"
SEED = 0
print("quick mode" if QUICK else "full mode")


def rel(a, b) -> float:
    """Relative error ‖a − b‖ / ‖b‖ (Frobenius)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def nonnormal(rng, n, scale):
    """A random non-normal matrix of norm about ``scale``: a hard case for expm."""
    a = rng.standard_normal((n, n)) + 3.0 * np.triu(rng.standard_normal((n, n)), 1)
    return scale * a / np.linalg.norm(a, 2)


# %% [markdown]
# ## Accuracy of the matrix exponential and its reverse rule
#
# For random non-normal $A$ of growing norm (the norm decides how many squarings the
# algorithm needs), and a random weight $W$, the gradient of $f(A) = \sum W \odot e^A$
# is $L(A^\top, W)$. The reference is scipy's `expm_frechet`; the block-matrix identity
# (computed by `scipy.linalg.expm` on the $2n\times 2n$ matrix) is a second, independent
# reference, so the table also shows how far the two references are apart.

# %%
rng = np.random.default_rng(SEED)
sizes = [3, 8] if QUICK else [3, 8, 16]
norms = [0.5, 5.0, 50.0]


def jax_ad_grad(a, w):
    return jax.grad(lambda m: jnp.sum(w * jax.scipy.linalg.expm(m)))(a)


def ours_grad(a, w):
    return jax.grad(lambda m: jnp.sum(w * kl.expm(m)))(a)


rows = []
for n in sizes:
    for s in norms:
        a = nonnormal(rng, n, s)
        w = rng.standard_normal((n, n))
        ref = scipy.linalg.expm_frechet(a.T, w, compute_expm=False)
        block = scipy.linalg.expm(np.block([[a.T, w], [np.zeros((n, n)), a.T]]))[:n, n:]
        rows.append(
            (
                n,
                s,
                rel(kl.expm(a), scipy.linalg.expm(a)),
                rel(ours_grad(a, w), ref),
                rel(jax_ad_grad(a, w), ref),
                rel(block, ref),
            )
        )

print("relative errors (float64); reference: scipy.linalg.expm / expm_frechet(Aᵀ, W)")
print(f"{'n':>3} {'‖A‖₂':>6} {'expm':>10} {'grad ours':>10} {'grad JAX AD':>12} {'block ref':>10}")
for n, s, e0, e1, e2, e3 in rows:
    print(f"{n:3d} {s:6.1f} {e0:10.1e} {e1:10.1e} {e2:12.1e} {e3:10.1e}")

# %% [markdown]
# All columns are at the level of rounding error amplified by the conditioning of the
# exponential (which grows with $\|A\|$). The forward and reverse rules are each other's
# adjoints, which the *dot-product test* checks without any reference:
# $\langle W, L(A, E)\rangle = \langle L(A^\top, W), E\rangle$, with the JVP computing
# the left side and the VJP the right.

# %%
n = 8
a = jnp.asarray(nonnormal(rng, n, 5.0))
e = jnp.asarray(rng.standard_normal((n, n)))
w = jnp.asarray(rng.standard_normal((n, n)))
_, tangent = jax.jvp(kl.expm, (a,), (e,))
_, vjp = jax.vjp(kl.expm, a)
(cotangent,) = vjp(w)
lhs, rhs = float(jnp.sum(w * tangent)), float(jnp.sum(cotangent * e))
print(f"<W, L(A,E)>   = {lhs:.15e}")
print(f"<L(Aᵀ,W), E> = {rhs:.15e}")
print(f"relative gap   {abs(lhs - rhs) / abs(lhs):.1e}")
frechet_ref = scipy.linalg.expm_frechet(np.asarray(a), np.asarray(e), compute_expm=False)
print(f"expm_frechet(A, E) vs scipy: {rel(kl.expm_frechet(a, e), frechet_ref):.1e}")

# %% [markdown]
# ## Accuracy of the Lyapunov solve and its adjoint
#
# A stable drift (eigenvalues shifted to have real parts ≤ −1) and a positive-definite
# $Q$. The solution is compared with scipy; the gradient of $\sum W \odot X$ with
# respect to $A$ with a central difference along a random direction, and with JAX's AD
# through the $n^2 \times n^2$ Kronecker system $(I\otimes A + A\otimes I)\,\mathrm{vec}X
# = \mathrm{vec}Q$ solved by `jnp.linalg.solve`.


# %%
def kron_lyapunov(a, q):
    """X with A X + X Aᵀ = Q through the Kronecker system (JAX AD differentiates it)."""
    n = a.shape[0]
    eye = jnp.eye(n, dtype=a.dtype)
    big = jnp.kron(eye, a) + jnp.kron(a, eye)
    return jnp.linalg.solve(big, q.T.reshape(-1)).reshape(n, n).T


print(f"{'n':>3} {'X vs scipy':>11} {'X Kronecker':>12} {'grad vs FD':>11} {'grad vs Kron AD':>16}")
for n in [3, 8] if QUICK else [3, 8, 16]:
    a0 = nonnormal(rng, n, 3.0)
    stable = a0 - (np.max(np.linalg.eigvals(a0).real) + 1.0) * np.eye(n)
    q = rng.standard_normal((n, n))
    q = q @ q.T + n * np.eye(n)
    w = rng.standard_normal((n, n))
    x = kl.solve_continuous_lyapunov(stable, q)
    x_ref = scipy.linalg.solve_continuous_lyapunov(stable, q)

    def f(m, q=q, w=w):
        return jnp.sum(w * kl.solve_continuous_lyapunov(m, q))

    g = jax.grad(f)(jnp.asarray(stable))
    g_kron = jax.grad(lambda m, q=q, w=w: jnp.sum(w * kron_lyapunov(m, jnp.asarray(q))))(
        jnp.asarray(stable)
    )
    direction = rng.standard_normal((n, n))
    h = 1e-5
    fd = (f(stable + h * direction) - f(stable - h * direction)) / (2 * h)
    ad = float(jnp.sum(g * direction))
    x_kron = kron_lyapunov(jnp.asarray(stable), jnp.asarray(q))
    print(
        f"{n:3d} {rel(x, x_ref):11.1e} {rel(x_kron, x_ref):12.1e}"
        f" {abs(ad - fd) / abs(fd):11.1e} {rel(g, g_kron):16.1e}"
    )

# %% [markdown]
# The central difference is accurate to about $h^2 \approx 10^{-10}$ only, so that
# column measures the difference, not the rule.
#
# ## Speed
#
# Each contender is compiled with `jax.jit` first, then timed as the median of repeated
# calls (`block_until_ready`). "v&g" is `jax.value_and_grad` of a scalar function of the
# result; the ratio v&g ÷ primal is the price of the gradient (reverse-mode AD promises
# a small constant). The batch of 256 matrices is what a Kalman filter over 256 distinct
# time steps needs.


# %%
def timeit(fn, *args, repeats):
    fn(*args)[0].block_until_ready()  # compile and warm up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - t0)
    return float(np.median(out)) * 1e3  # ms


def contenders(expm):
    primal = jax.jit(lambda a, w: (jnp.sum(w * expm(a)),))
    vg = jax.jit(jax.value_and_grad(lambda a, w: jnp.sum(w * expm(a))))
    return primal, vg


repeats = 5 if QUICK else 30
cases = [(4, 256), (16, 1)] if QUICK else [(2, 256), (4, 256), (8, 256), (16, 1), (32, 1)]
print(f"expm, median of {repeats} (ms)")
print(
    f"{'n':>3} {'batch':>6} {'ours primal':>12} {'ours v&g':>9} {'ratio':>6}"
    f" {'JAX primal':>11} {'JAX v&g':>8} {'ratio':>6} {'v&g ours/JAX':>13}"
)
for n, batch in cases:
    a = jnp.asarray(np.stack([nonnormal(rng, n, 2.0) for _ in range(batch)]))
    w = jnp.asarray(rng.standard_normal(a.shape))
    times = []
    for expm in (kl.expm, jax.scipy.linalg.expm):
        primal, vg = contenders(expm)
        times += [timeit(primal, a, w, repeats=repeats), timeit(vg, a, w, repeats=repeats)]
    p1, g1, p2, g2 = times
    print(
        f"{n:3d} {batch:6d} {p1:12.3f} {g1:9.3f} {g1 / p1:6.2f} {p2:11.3f} {g2:8.3f}"
        f" {g2 / p2:6.2f} {g1 / g2:13.2f}"
    )

# %% [markdown]
# And the continuous Lyapunov solve against JAX's AD through the Kronecker system (which
# is exact, but costs $O(n^6)$: fine for tiny $n$, hopeless beyond).

# %%
print(f"continuous Lyapunov, batch 64, median of {repeats} (ms)")
print(
    f"{'n':>3} {'ours primal':>12} {'ours v&g':>9} {'ratio':>6}"
    f" {'Kron primal':>12} {'Kron v&g':>9} {'ratio':>6}"
)
for n in [2, 6] if QUICK else [2, 4, 8, 12]:
    a = []
    for _ in range(64):
        a0 = nonnormal(rng, n, 2.0)
        a.append(a0 - (np.max(np.linalg.eigvals(a0).real) + 1.0) * np.eye(n))
    a = jnp.asarray(np.stack(a))
    q = jnp.broadcast_to(jnp.eye(n), a.shape)
    times = []
    for solve in (kl.solve_continuous_lyapunov, jax.vmap(kron_lyapunov)):
        primal = jax.jit(lambda a, q, solve=solve: (jnp.sum(solve(a, q)),))
        vg = jax.jit(jax.value_and_grad(lambda a, q, solve=solve: jnp.sum(solve(a, q))))
        times += [timeit(primal, a, q, repeats=repeats), timeit(vg, a, q, repeats=repeats)]
    p1, g1, p2, g2 = times
    print(f"{n:3d} {p1:12.3f} {g1:9.3f} {g1 / p1:6.2f} {p2:12.3f} {g2:9.3f} {g2 / p2:6.2f}")

# %% [markdown]
# How to read the tables: "ratio" is the cost of value and gradient over the cost of
# the value alone, and the last column of the expm table is our v&g time over JAX's.
# For batches of small matrices — the Kalman-filter case, one exponential per distinct
# time step — JAX's AD through the Padé algorithm must store and replay the
# intermediates of every branch of the algorithm for every matrix, and the explicit
# rule wins by a large factor. For a single larger matrix the two are closer, and at
# these sizes on a CPU dispatch overhead and machine load blur the comparison: the
# numbers above are live, not curated. `benchmarks/README.md` has measurements taken
# under controlled conditions.
