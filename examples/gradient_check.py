"""Check kalmanad's explicit gradient rules against independent references, live.

Run:  python examples/gradient_check.py

For a random non-normal drift-like matrix A and weights W it compares
  * expm(A) with scipy.linalg.expm,
  * the reverse rule  d/dA sum(W * expm(A))  with scipy's Fréchet derivative L(Aᵀ, W),
  * the continuous Lyapunov solve and its gradient with scipy and central differences,
and prints the relative errors. It enables float64 for itself (the library never does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import kalmanad.linalg as kl

jax.config.update("jax_enable_x64", True)


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def main(n: int = 6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)) + 3.0 * np.triu(rng.standard_normal((n, n)), 1)
    w = rng.standard_normal((n, n))
    print(f"kalmanad gradient-rule check (n={n}, seed={seed}, float64)")
    print(f"{'quantity':48s} {'relative error':>15s}")

    x = kl.expm(a)
    print(f"{'expm(A) vs scipy.linalg.expm':48s} {rel(x, scipy.linalg.expm(a)):15.2e}")
    grad = jax.grad(lambda m: jnp.sum(w * kl.expm(m)))(jnp.asarray(a))
    ref = scipy.linalg.expm_frechet(a.T, w, compute_expm=False)
    print(f"{'grad sum(W*expm(A)) vs scipy L(A^T, W)':48s} {rel(grad, ref):15.2e}")
    e = rng.standard_normal((n, n))
    lf = kl.expm_frechet(a, e)
    ref_l = scipy.linalg.expm_frechet(a, e, compute_expm=False)
    print(f"{'expm_frechet(A, E) vs scipy':48s} {rel(lf, ref_l):15.2e}")

    # A stable drift for the Lyapunov equation A X + X Aᵀ = Q.
    stable = a - (np.max(np.real(np.linalg.eigvals(a))) + 1.0) * np.eye(n)
    q = rng.standard_normal((n, n))
    q = q @ q.T
    xl = kl.solve_continuous_lyapunov(stable, q)
    ref_xl = scipy.linalg.solve_continuous_lyapunov(stable, q)
    print(f"{'solve_continuous_lyapunov vs scipy':48s} {rel(xl, ref_xl):15.2e}")

    def f(m):
        return jnp.sum(w * kl.solve_continuous_lyapunov(m, q))

    g = jax.grad(f)(jnp.asarray(stable))
    direction = rng.standard_normal((n, n))
    h = 1e-6
    fd = (f(stable + h * direction) - f(stable - h * direction)) / (2 * h)
    ad = float(jnp.sum(g * direction))
    print(f"{'Lyapunov grad vs central difference':48s} {abs(ad - fd) / abs(fd):15.2e}")


if __name__ == "__main__":
    main()
