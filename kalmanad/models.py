"""Constructors of the model zoo's families: plain numbers (or JAX arrays) → ``LinearSDE``.

Each function builds the :class:`~kalmanad.LinearSDE` of one family of the bundled model
zoo (``models/*.toml``) from its natural parameters, with ``jnp`` operations only: the
arguments may be Python numbers, arrays, or values sampled inside a NumPyro model (the
sizes, such as the CARMA orders, come from the lengths of the arguments and are static).
The zoo's spec builders (``companion``, ``ma_loadings``, ``stationary_sd``) call the
helpers here, so a spec and the constructor give the same model.
:func:`stationary_covariance` gives the stationary covariance of any model with a stable
drift.

Every constructor observes one process ``y = mean + x + e`` (``ctvar``: ``y = d + H x + e``)
with ``e ~ N(0, noise²)``; ``noise = 0`` is allowed. The start is stationary for the
stationary families and diffuse for the local level and trend, as in the zoo; pass
``initial_state`` (and, for ``"known"``, ``initial_mean``/``initial_cov`` through
:meth:`~kalmanad.LinearSDE.replace`) to change it.

CARMA conventions
-----------------
kalmanad's CARMA(p, q) process x is

    a(D) x = b(D) ε,    a(s) = s^p + a_1 s^{p-1} + … + a_p,    b(s) = b_0 + b_1 s + … + b_q s^q

with ε unit white noise, q < p, in companion form: the state is (z, z′, …, z^{(p-1)}) with
``a(D) z = ε`` and ``x = b_0 z + b_1 z′ + … + b_q z^{(q)}``. :func:`carma` takes
``ar = [a_1, …, a_p]`` (the highest power first, leading 1 left out) and
``ma = [b_0, …, b_q]`` (the lowest power first), the order of Brockwell (2001) and of
EzTao. Other conventions map as follows:

* EzTao (``eztao.carma.CARMA_term(log_arpars, log_mapars)``; the AR roots are
  ``np.roots([1, *arpars])``, the MA polynomial ``Σ_k mapars[k] s^k``):
  ``carma(ar=np.exp(log_arpars), ma=np.exp(log_mapars))`` (``sigma=None``: the
  amplitude is in ``ma``). EzTao's DRW ``(log_a1, log_b0)`` is :func:`ou` with
  ``theta = a1`` and ``sigma = b0 / sqrt(2 a1)``; its DHO ``(a1, a2, b0, b1)`` is
  ``carma([a1, a2], [b0, b1])``.
* celerite (``celerite.solver.CARMASolver(log_sigma, arparams, maparams)``, C++
  ``cpp/include/celerite/carma.h``): ``arparams`` are logs of the coefficients of the AR
  polynomial's factors, a pair ``(log c, log b)`` for each ``s² + b s + c`` and, for odd
  p, a last ``log r`` for ``s + r``; ``maparams`` likewise for the MA polynomial, which
  celerite divides by its constant term; σ = ``exp(log_sigma)`` scales the noise. So
  ``ar = ar_from_factors([[b1, c1], [b2, c2], …, r])`` (AR factors read off
  ``exp(arparams)``) and ``ma = σ · ma_from_factors([[b/c, 1/c], …, 1/r])`` (each MA
  factor ``s² + b s + c`` divided by c is ``1 + (b/c) s + (1/c) s²``, each ``s + r``
  divided by r is ``1 + s/r``), with ``sigma=None``.
* kalmanad's spec builders: ``companion`` ``factors`` are the same factors
  (``[a, b]`` for ``s² + a s + b``, a cell ``r`` for ``s + r``; :func:`ar_from_factors`),
  but ``companion`` ``coefficients`` list α_0 … α_{p-1} *lowest* power first, the reverse
  of ``ar``. ``ma_loadings`` factors are a cell ``c`` for ``1 + c s`` and ``[a, b]`` for
  ``1 + a s + b s²`` (:func:`ma_from_factors`).
* tinygp's ``quasisep.CARMA.init(alpha, beta)`` and Kelly et al. (2014) list α lowest
  power first: ``ar = alpha[::-1]``; tinygp's β (σ absorbed) is ``ma``.

With ``sigma`` given, :func:`carma` rescales the noise so that the stationary standard
deviation of x is ``sigma`` (only the shape of ``ma`` matters then), as the zoo's
``stationary_sd`` builder does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kalmanad._validation import value_errors_raise
from kalmanad.discretize import initial_moments
from kalmanad.linalg import solve_continuous_lyapunov
from kalmanad.model import LinearSDE, drift_is_stable

__all__ = [
    "ar_from_factors",
    "car",
    "carma",
    "companion",
    "ctvar",
    "local_level",
    "local_linear_trend",
    "ma_from_factors",
    "matern32",
    "matern52",
    "ou",
    "sho",
    "stationary_covariance",
    "stationary_sd_diffusion",
]


# ----------------------------------------------------------------------- building blocks
def _poly_mul(p: Sequence, q: Sequence) -> list:
    """Product of polynomials given as coefficient lists, lowest degree first."""
    out = [0.0] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] = out[i + j] + a * b
    return out


def _factor_list(factors, what: str) -> list[list]:
    if not isinstance(factors, (list, tuple)):
        raise TypeError(f"{what} must be a list of factors, got {type(factors).__name__}")
    out = []
    for i, f in enumerate(factors):
        if isinstance(f, (list, tuple)):
            if len(f) != 2:
                raise ValueError(
                    f"{what}[{i}]: a quadratic factor has 2 coefficients [a, b], got {len(f)}"
                )
            out.append(list(f))
        else:
            out.append([f])
    return out


def ar_from_factors(factors) -> list:
    """The AR coefficients ``[a_1, …, a_p]`` (highest power first) of a product of factors.

    Args:
        factors: a list whose items are ``[a, b]`` for a quadratic factor ``s² + a s + b``
            or a single value ``r`` for a linear factor ``s + r`` (the zoo's
            ``companion`` ``factors``). With every coefficient positive, every root has
            a negative real part.

    Returns:
        The list ``[a_1, …, a_p]`` of ``a(s) = s^p + a_1 s^{p-1} + … + a_p`` (numbers or
        scalar arrays, as given), for :func:`carma`.
    """
    poly = [1.0]  # lowest degree first
    for f in _factor_list(factors, "factors"):
        # s + r -> [r, 1];  s² + a s + b -> [b, a, 1]
        poly = _poly_mul(poly, [f[0], 1.0] if len(f) == 1 else [f[1], f[0], 1.0])
    return poly[-2::-1]


def ma_from_factors(factors) -> list:
    """The MA coefficients ``[1, b_1, …, b_q]`` (lowest power first) of a product of factors.

    Args:
        factors: items ``[a, b]`` for ``1 + a s + b s²`` or a value ``c`` for ``1 + c s``
            (the zoo's ``ma_loadings`` ``factors``).

    Returns:
        ``[b_0, …, b_q]`` with ``b_0 = 1``, for :func:`carma`.
    """
    poly = [1.0]
    for f in _factor_list(factors, "factors"):
        poly = _poly_mul(poly, [1.0, *f])
    return poly


def companion(alpha_low_first, dtype=None) -> jax.Array:
    """The companion drift of the monic polynomial ``s^p + α_{p-1} s^{p-1} + … + α_0``.

    Args:
        alpha_low_first: α_0 … α_{p-1}, lowest power first (numbers or scalar arrays).
        dtype: the result's dtype (default: JAX's default float for the values).

    Returns:
        (p, p) matrix with ones on the superdiagonal and last row ``-(α_0, …, α_{p-1})``:
        the drift of the state (z, z′, …, z^{(p-1)}) of ``a(D) z = noise``.
    """
    alpha = jnp.stack([jnp.asarray(a, dtype) for a in alpha_low_first])
    p = alpha.shape[0]
    last = -alpha[None, :]
    if p == 1:
        return last
    return jnp.concatenate([jnp.eye(p - 1, p, k=1, dtype=alpha.dtype), last], axis=0)


def stationary_sd_diffusion(drift, observation_row, sd, noise_on: int = -1) -> jax.Array:
    """The diffusion rate on one state that gives ``h x`` the stationary sd ``sd``.

    With ``e`` the unit vector of state ``noise_on`` and P₁ the stationary covariance
    of unit rate, ``A P₁ + P₁ Aᵀ + e eᵀ = 0``, the rate is ``sd² / (h P₁ hᵀ)``:
    the diffusion ``(sd² / h P₁ hᵀ) e eᵀ`` makes ``Var(h x) = sd²`` (the zoo's
    ``stationary_sd`` builder). Needs a stable drift.

    Args:
        drift: (n, n) stable drift A.
        observation_row: (n,) row h.
        sd: the stationary standard deviation of ``h x``.
        noise_on: the index of the state the noise enters (default the last).

    Returns:
        (n, n) diffusion rate matrix.
    """
    a = jnp.asarray(drift)
    n = a.shape[-1]
    e = jnp.zeros((n, n), a.dtype).at[noise_on, noise_on].set(1.0)
    p1 = solve_continuous_lyapunov(a, -e)
    h = jnp.asarray(observation_row, a.dtype)
    var = h @ p1 @ h
    return (jnp.asarray(sd, a.dtype) ** 2 / var) * e


def _scalar_model(drift, diffusion, loading, mean, noise, initial_state, **kw) -> LinearSDE:
    """One observed channel ``y = mean + loading · x + e``."""
    n = drift.shape[-1]
    dtype = drift.dtype
    return LinearSDE(
        drift=drift,
        diffusion=diffusion,
        observation=jnp.reshape(jnp.asarray(loading, dtype), (1, n)),
        observation_noise=jnp.reshape(jnp.asarray(noise, dtype) ** 2, (1, 1)),
        observation_intercept=jnp.reshape(jnp.asarray(mean, dtype), (1,)),
        initial_state=initial_state,
        **kw,
    )


def _dtype(*xs):
    return jnp.result_type(*(jnp.asarray(x) for x in xs), float)


def _require_stable_ar(drift, what: str) -> None:
    """A concrete AR polynomial must have all roots in the left half plane (not checked
    while a NumPyro model runs: there the model's ``-inf`` log-density rejects it)."""
    if isinstance(drift, jax.core.Tracer) or not value_errors_raise():
        return
    if not bool(drift_is_stable(drift)):
        lam = np.linalg.eigvals(np.asarray(drift, np.float64))
        raise ValueError(
            f"{what}: the AR polynomial has a root with real part {lam.real.max():.6g} >= 0 "
            "(not stationary); every root must have a negative real part"
        )


def stationary_covariance(model: LinearSDE) -> jax.Array:
    """The stationary covariance P∞ of the state: ``A P∞ + P∞ Aᵀ + GGᵀ = 0``.

    The covariance that x(t) settles to for a stable drift A (every eigenvalue with a
    negative real part), whatever the model's ``initial_state``; the ``"stationary"``
    start uses it as P0 (:func:`kalmanad.discretize.initial_moments`, whose Lyapunov
    solve this is). The autocovariance at lag τ ≥ 0 is ``Cov[x(t+τ), x(t)] = e^{Aτ} P∞``.
    jit-, vmap- and grad-safe.

    Args:
        model: an unbatched :class:`~kalmanad.LinearSDE` (``jax.vmap`` for several).

    Returns:
        (n, n) symmetric P∞. For a traced drift that is not stable (a sampler's
        proposal) every entry is NaN, with finite (zero) gradients.

    Raises:
        ValueError: a concrete drift that is not stable (it has no stationary
            distribution); a batched model.
    """
    if not isinstance(model, LinearSDE):
        raise TypeError(f"model must be a LinearSDE, got {type(model).__name__}")
    if np.ndim(model.drift) != 2:
        raise ValueError(
            "stationary_covariance takes an unbatched model (drift (n, n)), got drift of "
            f"shape {np.shape(model.drift)}: use jax.vmap for several"
        )
    stable = drift_is_stable(model.drift)
    if not isinstance(stable, jax.Array) and not bool(stable):
        lam = np.linalg.eigvals(np.asarray(model.drift, np.float64)).real.max()
        raise ValueError(
            "the stationary covariance needs a stable drift, but the largest real part "
            f"of the eigenvalues of drift is {lam:.6g} (must be < 0): the process has none"
        )
    if model.initial_state != "stationary":
        model = model.replace(initial_state="stationary")
    _, p = initial_moments(model)  # finite for a traced unstable drift (-I stands in)
    return jnp.where(stable, p, jnp.nan)


# ------------------------------------------------------------------------ the families
def ou(theta, sigma, mean=0.0, noise=0.0, *, initial_state: str | None = None) -> LinearSDE:
    """Ornstein–Uhlenbeck process (zoo ``ou``): CAR(1).

    ``dx = θ (μ − x) dt + √(2θ) σ dW``, ``y = x + e``: stationary mean μ = ``mean``,
    stationary sd σ, autocovariance ``σ² e^{−θ|τ|}``.

    Args:
        theta: mean-reversion rate θ > 0 (1/θ is the correlation time).
        sigma: stationary standard deviation σ.
        mean: long-run mean μ (the drift intercept θμ).
        noise: measurement-noise standard deviation.
        initial_state: default ``"stationary"``.
    """
    dt = _dtype(theta, sigma, mean, noise)
    theta = jnp.asarray(theta, dt)
    sigma = jnp.asarray(sigma, dt)
    return LinearSDE(
        drift=jnp.reshape(-theta, (1, 1)),
        diffusion=jnp.reshape(2.0 * theta * sigma**2, (1, 1)),
        observation=jnp.ones((1, 1), dt),
        observation_noise=jnp.reshape(jnp.asarray(noise, dt) ** 2, (1, 1)),
        drift_intercept=jnp.reshape(theta * jnp.asarray(mean, dt), (1,)),
        initial_state=initial_state,
    )


def ctvar(
    drift,
    diffusion_sd,
    *,
    intercept=None,
    observation=None,
    observation_intercept=None,
    noise_sd=None,
    initial_state: str | None = None,
) -> LinearSDE:
    """Continuous-time VAR(1) / multivariate OU (zoo ``ctvar``, ctsem's model).

    ``dx = (A x + c) dt + G dW``, ``y = d + H x + e``, ``e ~ N(0, S Sᵀ)``.

    Args:
        drift: (n, n) drift A (ctsem's DRIFT); A[i, j] is the effect of x_j on the rate
            of change of x_i.
        diffusion_sd: (n, n) factor G of the diffusion rate GGᵀ (ctsem's DIFFUSION is
            the lower Cholesky factor), or (n,) standard deviations (G diagonal).
        intercept: (n,) drift intercept c (ctsem's CINT). Default zeros.
        observation: (m, n) loadings H (ctsem's LAMBDA). Default the identity.
        observation_intercept: (m,) d (ctsem's MANIFESTMEANS). Default zeros.
        noise_sd: (m, m) factor S of the measurement-noise covariance, or (m,) sds
            (ctsem's MANIFESTVAR is the lower Cholesky factor S). Default zeros.
        initial_state: default ``"stationary"``.
    """
    a = jnp.asarray(drift)
    dt = _dtype(a, diffusion_sd)
    a = a.astype(dt)
    n = a.shape[-1]
    g = jnp.asarray(diffusion_sd, dt)
    g = jnp.diag(g) if g.ndim == 1 else g
    h = jnp.eye(n, dtype=dt) if observation is None else jnp.asarray(observation, dt)
    m = h.shape[0]
    s = jnp.zeros((m, m), dt) if noise_sd is None else jnp.asarray(noise_sd, dt)
    s = jnp.diag(s) if s.ndim == 1 else s
    return LinearSDE(
        drift=a,
        diffusion=g @ g.T,
        observation=h,
        observation_noise=s @ s.T,
        drift_intercept=intercept,
        observation_intercept=observation_intercept,
        initial_state=initial_state,
    )


def carma(
    ar,
    ma=(1.0,),
    sigma=None,
    *,
    mean=0.0,
    noise=0.0,
    initial_state: str | None = None,
) -> LinearSDE:
    """CARMA(p, q) process (zoo ``carma``; ``car`` for q = 0). See the module doc.

    ``a(D) x = b(D) ε`` with ``a(s) = s^p + a_1 s^{p-1} + … + a_p`` and
    ``b(s) = b_0 + … + b_q s^q``, observed as ``y = mean + x + e``.

    Args:
        ar: ``[a_1, …, a_p]``, highest power first (EzTao's and Brockwell's order);
            :func:`ar_from_factors` builds it from factors.
        ma: ``[b_0, …, b_q]``, lowest power first, q < p. Default ``[1]`` (CAR(p)).
        sigma: None: ε has unit rate and ``ma`` carries the amplitude (EzTao). A value:
            the noise rate is chosen so that the stationary sd of x is ``sigma`` (the
            zoo's ``stationary_sd``), and only the shape of ``ma`` matters.
        mean: the mean of y (observation intercept).
        noise: measurement-noise standard deviation.
        initial_state: default ``"stationary"``.

    Returns:
        A :class:`~kalmanad.LinearSDE` with n = p states (z, z′, …, z^{(p-1)}), noise on
        the last, observation row ``[b_0, …, b_q, 0, …]``.

    Raises:
        ValueError: q >= p, an empty ``ar``, or (concrete values) an AR polynomial with a
            root whose real part is not negative.
    """
    ar, ma = list(ar), list(ma)
    p, q = len(ar), len(ma) - 1
    if p < 1:
        raise ValueError("carma needs at least one AR coefficient (p >= 1)")
    if q < 0 or q >= p:
        raise ValueError(
            f"carma needs 1 <= len(ma) <= len(ar), i.e. q < p; got p = {p} AR and "
            f"{q + 1} MA coefficients"
        )
    dt = _dtype(*ar, *ma, mean, noise, *([] if sigma is None else [sigma]))
    a = companion(ar[::-1], dt)
    _require_stable_ar(a, "carma")
    beta = jnp.stack([jnp.asarray(b, dt) for b in ma] + [jnp.zeros((), dt)] * (p - 1 - q))
    if sigma is None:
        diffusion = jnp.zeros((p, p), dt).at[-1, -1].set(1.0)
    else:
        diffusion = stationary_sd_diffusion(a, beta, sigma)
    return _scalar_model(a, diffusion, beta, mean, noise, initial_state)


def car(ar, sigma, *, mean=0.0, noise=0.0, initial_state: str | None = None) -> LinearSDE:
    """CAR(p) process (zoo ``car``): :func:`carma` with ``ma = [1]`` and stationary sd
    ``sigma`` of x. ``ar = [a_1, …, a_p]`` highest power first (e.g.
    ``ar_from_factors([[a1, a2], r])`` for the zoo's ``car``)."""
    return carma(ar, (1.0,), sigma, mean=mean, noise=noise, initial_state=initial_state)


def sho(omega, quality, sigma, mean=0.0, noise=0.0, *, initial_state=None) -> LinearSDE:
    """Damped harmonic oscillator driven by white noise (zoo ``sho``; celerite's SHOTerm).

    ``x″ + (ω/Q) x′ + ω² x = white noise`` of rate ``2 ω³ σ² / Q``, state (x, x′); σ is
    the stationary sd of x.

    Args:
        omega: natural angular frequency ω > 0.
        quality: quality factor Q > 0 (damping ratio 1/(2Q)).
        sigma: stationary standard deviation of x.
        mean, noise: observation intercept and noise sd.
        initial_state: default ``"stationary"``.
    """
    dt = _dtype(omega, quality, sigma, mean, noise)
    w, qf, s = (jnp.asarray(v, dt) for v in (omega, quality, sigma))
    a = companion([w**2, w / qf], dt)
    diffusion = jnp.zeros((2, 2), dt).at[1, 1].set(2.0 * w**3 * s**2 / qf)
    return _scalar_model(a, diffusion, [1.0, 0.0], mean, noise, initial_state)


def matern32(lengthscale, sigma, mean=0.0, noise=0.0, *, initial_state=None) -> LinearSDE:
    """Matérn-3/2 Gaussian process in state-space form (zoo ``matern32``).

    Covariance ``σ² (1 + λτ) e^{−λτ}``, ``λ = √3 / lengthscale``; state (f, f′),
    ``f″ + 2λ f′ + λ² f`` = white noise of rate ``4 λ³ σ²`` (Hartikainen & Särkkä 2010).
    """
    dt = _dtype(lengthscale, sigma, mean, noise)
    lam = jnp.sqrt(jnp.asarray(3.0, dt)) / jnp.asarray(lengthscale, dt)
    a = companion([lam**2, 2.0 * lam], dt)
    rate = 4.0 * lam**3 * jnp.asarray(sigma, dt) ** 2
    diffusion = jnp.zeros((2, 2), dt).at[1, 1].set(rate)
    return _scalar_model(a, diffusion, [1.0, 0.0], mean, noise, initial_state)


def matern52(lengthscale, sigma, mean=0.0, noise=0.0, *, initial_state=None) -> LinearSDE:
    """Matérn-5/2 Gaussian process in state-space form (zoo ``matern52``).

    Covariance ``σ² (1 + λτ + λ²τ²/3) e^{−λτ}``, ``λ = √5 / lengthscale``; state
    (f, f′, f″), ``f‴ + 3λ f″ + 3λ² f′ + λ³ f`` = white noise of rate ``(16/3) λ⁵ σ²``.
    """
    dt = _dtype(lengthscale, sigma, mean, noise)
    lam = jnp.sqrt(jnp.asarray(5.0, dt)) / jnp.asarray(lengthscale, dt)
    a = companion([lam**3, 3.0 * lam**2, 3.0 * lam], dt)
    rate = 16.0 / 3.0 * lam**5 * jnp.asarray(sigma, dt) ** 2
    diffusion = jnp.zeros((3, 3), dt).at[2, 2].set(rate)
    return _scalar_model(a, diffusion, [1.0, 0.0, 0.0], mean, noise, initial_state)


def local_level(sigma_level, noise, *, initial_state: str = "diffuse", **kw) -> LinearSDE:
    """Local level (zoo ``local_level``): a Brownian level observed with noise.

    ``d level = σ_level dW``, ``y = level + e``. With unit time steps this is the
    discrete local level of Durbin & Koopman (statsmodels' ``'llevel'``). The start is
    exactly diffuse by default; ``**kw`` go to :class:`~kalmanad.LinearSDE`
    (``initial_mean``, ``initial_cov`` with ``initial_state="known"``).
    """
    dt = _dtype(sigma_level, noise)
    return _scalar_model(
        jnp.zeros((1, 1), dt),
        jnp.reshape(jnp.asarray(sigma_level, dt) ** 2, (1, 1)),
        [1.0],
        0.0,
        noise,
        initial_state,
        **kw,
    )


def local_linear_trend(
    sigma_level, sigma_slope, noise, *, initial_state: str = "diffuse", **kw
) -> LinearSDE:
    """Local linear trend (zoo ``local_linear_trend``): a level with a Brownian slope.

    ``d level = slope dt + σ_level dW₁``, ``d slope = σ_slope dW₂``, ``y = level + e``.
    ``sigma_level = 0`` gives the integrated random walk (smooth trend). State (level,
    slope); diffuse start by default (``**kw`` as in :func:`local_level`).
    """
    dt = _dtype(sigma_level, sigma_slope, noise)
    sd = jnp.stack([jnp.asarray(sigma_level, dt), jnp.asarray(sigma_slope, dt)])
    return _scalar_model(
        jnp.array([[0.0, 1.0], [0.0, 0.0]], dt),
        jnp.diag(sd**2),
        [1.0, 0.0],
        0.0,
        noise,
        initial_state,
        **kw,
    )
