"""Declarative continuous-time model specifications: the language of the model zoo.

A *spec* describes a continuous-time linear SDE model

    dx = (A x + B u + c) dt + G dW,        y_k = H x(t_k) + D u_k + d + e_k,  e_k ~ N(0, R)

in words a scientist can read, and compiles to a :class:`kalmanad.LinearSDE` (via
:meth:`ModelSpec.build`) and to a NumPyro model function (via
:meth:`ModelSpec.numpyro_model`). Specs are TOML files (the zoo in the repository's
top-level ``models/`` folder; :func:`load_model` and :func:`list_models`) or Python
dicts with the same layout (:meth:`ModelSpec.from_dict`). A complete example, the
one-dimensional Ornstein–Uhlenbeck process observed with noise::

    [model]
    description = "Ornstein–Uhlenbeck process observed with noise"
    latent = ["x"]                      # state variables, in order
    manifest = ["y"]                    # observed variables (CSV columns), in order

    [parameters]                        # every free parameter with its prior
    theta = "LogNormal(0, 1)"           # mean-reversion rate
    mu = "Normal(0, 5)"                 # long-run mean
    sigma = "HalfNormal(2)"             # stationary standard deviation of x
    noise = "HalfNormal(1)"             # measurement-noise standard deviation

    [dynamics]
    drift = [["-theta"]]                # A: one row per latent variable
    intercept = ["theta * mu"]          # c
    diffusion = [["2 * theta * sigma^2"]]   # the rate GGᵀ ...
    # diffusion_sd = [["..."]]          # ... or G itself (diffusion = G Gᵀ)

    [measurement]
    loadings = [[1]]                    # H: one row per manifest variable
    noise_sd = [["noise"]]              # R = S Sᵀ (or `noise` = R itself)

Sections and keys (LinearSDE field in brackets):

* ``[model]``: ``latent``, ``manifest`` (required lists of names), ``inputs`` (names of
  time-varying inputs, optional), ``name``, ``title``, ``description``, ``time_unit``,
  ``references``.
* ``[parameters]``: ``name = "Prior(args)"`` (a NumPyro distribution from
  :data:`PRIORS`, e.g. ``"HalfNormal(1)"``, ``"LogNormal(0, 1)"``,
  ``"TruncatedNormal(0, 1, low=0)"``), a number (a fixed constant), or a table
  ``{ prior = "...", description = "..." }`` / ``{ value = 1.0, description = "..." }``;
  a free parameter's table may add ``start = 0.1``, a start value
  (:attr:`ModelSpec.starts`, used by :meth:`ModelSpec.init_strategy`).
* ``[derived]`` (optional): named expressions of parameters used in the matrices and
  reported as deterministic sites, e.g. ``lam = "sqrt(3) / lengthscale"``.
* ``[dynamics]``: ``drift`` (A, n×n, required), ``intercept`` (c, n),
  ``diffusion`` (GGᵀ, n×n) or ``diffusion_sd`` (G, n×r; one is required),
  ``input_effect`` (B, n×k), ``impulse_effect`` (B_imp, n×k).
* ``[measurement]``: ``loadings`` (H, m×n, required), ``intercept`` (d, m),
  ``noise`` (R, m×m) or ``noise_sd`` (S with R = S Sᵀ; one is required),
  ``input_effect`` (D, m×k).
* ``[initial]`` (optional; omitted means a stationary start): ``state`` =
  ``"stationary"`` | ``"diffuse"`` | ``"known"``, ``mean`` (n), ``cov`` or ``sd``
  (a known start; cov = sd sdᵀ), ``diffuse_scale`` (variance of a diffuse start).
* ``[random_effects]``, ``[covariates]``: hierarchical (panel) models, see below.
* ``[data]``: the bundled default data set, see :meth:`ModelSpec.default_data`.
* ``[equations]`` (``text = "..."``): the model as equations, in place of
  ``[parameters]``, ``[derived]``, ``[dynamics]``, ``[measurement]``, ``[initial]``,
  ``[random_effects]`` and ``[covariates]`` (see below).

Matrix values. A matrix is a list of rows, a vector a list; each cell is a number, a
parameter or derived name, or an expression in quotes. Shorthands: a single cell for
a 1×1 matrix or a length-1 vector; the number ``0`` for all zeros;
``{ diagonal = [cells] }`` (or one cell, repeated) for a diagonal matrix;
``{ lower = [[c00], [c10, c11], ...] }`` for a lower-triangular matrix (row i lists
columns 0..i); ``{ symmetric = [[c00], [c10, c11], ...] }`` for a symmetric matrix
given by its lower triangle; and ``{ builder = "name", ... }`` for structured
matrices (:data:`BUILDERS`):

* ``drift = { builder = "companion", factors = [["a1", "a2"], "r"] }``: the companion
  matrix of the monic AR polynomial a(s) = (s² + a1 s + a2)(s + r) — a 2-list is a
  quadratic factor s² + a s + b, a single cell a linear factor s + r, total degree n.
  When every coefficient is positive every root has a negative real part, so every
  draw is stable, and no roots are ever computed, so gradients are finite
  everywhere (repeated roots included). The factor cells must be provably positive
  (positive constants, parameters with positive priors, exp/softplus/... of
  anything); ``coefficients = [α0, ..., α_{n-1}]`` gives a(s) = sⁿ + α_{n-1}s^{n-1} +
  ... + α0 directly, with no stability guarantee. The state is (x, x', ..., x^{(n-1)}).
* ``loadings = { builder = "ma_loadings", factors = ["tau"], scale = 1 }``: the
  single row scale·[β0, β1, ..., βq, 0, ...] of the MA polynomial b(s) = Σ βj s^j =
  Π(1 + a s + b s²) Π(1 + c s) (β0 = 1); ``coefficients = [β1, ..., βq]`` instead.
  Positive factor coefficients give a minimum-phase (identifiable) CARMA model.
* ``diffusion = { builder = "stationary_sd", sd = "sigma", noise_on = "x2",
  manifest = "y" }``: white noise entering latent ``noise_on`` (default: the last
  latent) with the rate that makes the stationary standard deviation of the
  noise-free ``manifest`` (default: the first) equal ``sd``. Needs a stable drift
  (e.g. ``companion``): a CAR/CARMA amplitude that does not fight the AR
  coefficients in the posterior.

Expressions are parsed with :mod:`ast` and evaluated by a whitelist evaluator (no
``eval``): numbers, names, ``+ - * /``, ``^`` or ``**`` for powers (``-x^2`` is
``-(x^2)``), parentheses, the constant ``pi`` and the functions in
:data:`FUNCTIONS`. Anything else (attribute access, indexing, comparisons, other
calls) is rejected with an error naming the file, field and cell.

Hierarchical models (as in ctsem). ``[random_effects]`` lists parameters that vary
by subject::

    [random_effects]
    parameters = ["auto1", "mu1"]       # any free parameters
    sd_prior = "HalfNormal(1)"          # or a table { auto1 = "HalfNormal(0.5)", ... }
    correlation_prior = "LKJ(2)"        # LKJ prior on their correlation, or "none"

    [covariates]                        # time-independent subject covariates
    effects = { auto1 = ["age"], mu1 = ["age", "treated"] }
    prior = "Normal(0, 1)"              # prior of every effect coefficient

The ``[parameters]`` prior of a varying parameter θ is the prior of its population
value θ_pop. Subject s has θ_s = T(T⁻¹(θ_pop) + Σ_c β_{θ,c} z_{s,c} + δ_{θ,s}) where T
maps the real line onto the prior's support (identity for real parameters, exp for
positive ones, a scaled logistic for intervals), so subject values respect the
support and θ_pop is the typical (median) subject's value. The deviations are
non-centred: δ_s = diag(sd) L η_s with η_s ~ N(0, I) (site ``re_z``), sd the
per-parameter sites ``<param>_sd`` and L the Cholesky factor of the correlation
matrix (site ``re_corr_cholesky``, deterministic ``re_corr``). The covariate effects
β are sites ``<covariate>_on_<param>``; the subject values are reported as the
deterministic sites ``<param>_subject``.

Equations. The same model written as equations (a ``.kal`` file, a TOML spec's
``[equations]`` table, or :func:`from_equations`) compiles to these sections::

    d(x) = theta*(mu - x) + sqrt(2*theta)*sigma*dW     # one equation per state
    y ~ x ; y ~~ noise^2*y                             # indicator, residual variance
    theta ~ lognormal(0, 1) ; mu ~ normal(0, 5)        # priors (others get defaults)

See :mod:`~kalmanad.spec.equations` and ``docs/guide/equations.md``.

The package, one job per module: :mod:`~kalmanad.spec.expressions` (cells as
expressions, sign analysis), :mod:`~kalmanad.spec.priors`,
:mod:`~kalmanad.spec.cells` (matrices, builders and the matrix sections),
:mod:`~kalmanad.spec.sections` (the other sections), :mod:`~kalmanad.spec.data` (CSV
files and panels), :mod:`~kalmanad.spec.sampling` (the NumPyro side),
:mod:`~kalmanad.spec.model` (:class:`ModelSpec`), :mod:`~kalmanad.spec.render`
(:meth:`ModelSpec.describe`), :mod:`~kalmanad.spec.zoo`, and the equations language in
:mod:`~kalmanad.spec.statements` (reading), :mod:`~kalmanad.spec.equations`
(compiling) and :mod:`~kalmanad.spec.layout` (the sections); errors in
:mod:`~kalmanad.spec.errors`.
"""

from __future__ import annotations

from kalmanad.spec.cells import BUILDERS
from kalmanad.spec.data import DataError, ModelData, PanelData, to_panel
from kalmanad.spec.equations import EquationError, from_equations
from kalmanad.spec.errors import SpecError
from kalmanad.spec.expressions import FUNCTIONS, Expression, parse_expression
from kalmanad.spec.model import DataSpec as DataSpec  # public, documented; not in __all__
from kalmanad.spec.model import ModelSpec
from kalmanad.spec.priors import PRIORS, parse_prior
from kalmanad.spec.zoo import list_models, load_model, models_dir

__all__ = [
    "BUILDERS",
    "FUNCTIONS",
    "PRIORS",
    "DataError",
    "EquationError",
    "Expression",
    "ModelData",
    "ModelSpec",
    "PanelData",
    "SpecError",
    "from_equations",
    "list_models",
    "load_model",
    "models_dir",
    "parse_expression",
    "parse_prior",
    "to_panel",
]
