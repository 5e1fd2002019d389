"""The result of :func:`kalmanad.fit_mle`: estimates, covariance and reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.flatten_util import ravel_pytree

__all__ = ["Derived", "MLEResult", "NotIdentifiedError", "StartRun"]

# Eigenvalues of the correlation-scaled information below this (relative to 1) count
# as zero: the likelihood is flat in that direction to working precision.
_SINGULAR_RTOL = 1e-9


class NotIdentifiedError(ValueError):
    """The observed information is singular or indefinite at the estimate.

    ``result`` holds the :class:`MLEResult` without standard errors (its ``hessian``
    is set), ``directions`` the (name -> weight) combinations along which ℓ is flat or
    curves upwards.
    """

    def __init__(self, message: str, result: MLEResult, directions: list):
        super().__init__(message)
        self.result = result
        self.directions = directions


@dataclass
class StartRun:
    """One optimiser run: its start (natural scale), final −2LL, status and iterations."""

    start: dict
    minus2ll: float
    converged: bool
    message: str
    iterations: int


@dataclass
class Derived:
    """Delta-method estimates of derived quantities g(θ̂), Cov = J I⁻¹ Jᵀ, J = ∂g/∂θ."""

    names: tuple
    estimate: np.ndarray
    cov: np.ndarray
    level: float

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    @property
    def ci(self) -> np.ndarray:
        """(q, 2) Wald intervals g ± z_{(1+level)/2} se."""
        q = scipy.stats.norm.ppf(0.5 + self.level / 2)
        return np.stack([self.estimate - q * self.se, self.estimate + q * self.se], axis=1)

    def __str__(self) -> str:
        rows = [
            (n, e, s, *c)
            for n, e, s, c in zip(self.names, self.estimate, self.se, self.ci, strict=True)
        ]
        return _table(rows, ("estimate", "se", *_ci_labels(self.level)))


def _ci_labels(level: float) -> tuple:
    a = (1 - level) / 2
    return (f"[{a:.3g}", f"{1 - a:.3g}]")


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    if not np.isfinite(v):
        return str(v)
    return f"{v:.4g}" if (v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5)) else f"{v:.4f}"


def _table(rows, header) -> str:
    width = max([len(r[0]) for r in rows] + [8])
    cols = [[_fmt(v) for v in r[1:]] for r in rows]
    w = max([len(c) for r in cols for c in r] + [len(h) for h in header]) + 2
    lines = [" " * width + "".join(f"{h:>{w}}" for h in header)]
    lines += [
        f"{r[0]:<{width}}" + "".join(f"{c:>{w}}" for c in cs)
        for r, cs in zip(rows, cols, strict=True)
    ]
    return "\n".join(lines)


@dataclass
class MLEResult:
    """Maximum-likelihood estimates with their observed-information covariance.

    Attributes:
        names: flat parameter names in the model's order (``a[i]`` for vector sites).
        estimate: (k,) estimates on the natural scale, in ``names`` order.
        params: the estimates as a dict site -> value (natural scale).
        log_likelihood: ℓ(θ̂); ``minus2ll`` = −2ℓ(θ̂), ``aic``, ``bic``.
        n: number of observed scalar values; ``k`` the number of free parameters.
        grad: (k,) ∇ℓ(θ̂) on the natural scale.
        hessian: (k, k) ∇²ℓ(θ̂) (exact, forward-over-reverse).
        cov: (k, k) I⁻¹ with I = −hessian; ``se`` its root diagonal.
        converged: the Newton decrement gᵀI⁻¹g at θ̂ (the gain in ℓ a further Newton
            step predicts) is below ``tolerance``, or without I, the optimiser's
            success.
        tolerance: max(1e-6, 10 ε (1 + |ℓ̂|)), ε the float type's machine epsilon
            (ℓ is not resolved more finely than that: float32 gives about 1e-3 here).
        starts: a :class:`StartRun` per start; ``best_start`` indexes the one reported.
        message, status, iterations, optimizer_success: scipy's report of that run.
    """

    names: tuple
    shapes: dict
    estimate: np.ndarray
    log_likelihood: float
    n: int
    grad: np.ndarray
    starts: list
    best_start: int
    message: str
    status: int
    iterations: int
    optimizer_success: bool
    level: float = 0.95
    model_name: str = "model"
    tolerance: float = 1e-6
    hessian: np.ndarray | None = None
    cov: np.ndarray | None = None
    profiles: dict = field(default_factory=dict)
    _loglik: Any = field(default=None, repr=False)
    _derivatives: Any = field(default=None, repr=False)
    _unravel: Any = field(default=None, repr=False)
    _profile_fn: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ scalars
    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def minus2ll(self) -> float:
        return -2.0 * self.log_likelihood

    @property
    def aic(self) -> float:
        return self.minus2ll + 2.0 * self.k

    @property
    def bic(self) -> float:
        return self.minus2ll + self.k * math.log(self.n)

    @property
    def params(self) -> dict:
        return {k: np.asarray(v) for k, v in self._unravel(self.estimate).items()}

    @property
    def se(self) -> np.ndarray | None:
        return None if self.cov is None else np.sqrt(np.diag(self.cov))

    @property
    def grad_norm(self) -> float:
        return float(np.max(np.abs(self.grad)))

    @property
    def converged(self) -> bool:
        if not np.isfinite(self.log_likelihood):
            return False
        if self.cov is not None:
            return bool(self.grad @ self.cov @ self.grad < self.tolerance)
        return self.optimizer_success

    def wald_ci(self, level: float | None = None) -> np.ndarray:
        """(k, 2) intervals θ̂ ± z_{(1+level)/2} se."""
        if self.cov is None:
            raise ValueError("no standard errors: fit with se=True")
        q = scipy.stats.norm.ppf(0.5 + (self.level if level is None else level) / 2)
        return np.stack([self.estimate - q * self.se, self.estimate + q * self.se], axis=1)

    # ------------------------------------------------------------- covariance
    def compute_covariance(self) -> np.ndarray:
        """I = −∇²ℓ(θ̂) (exact), checked, and its inverse; sets ``hessian`` and ``cov``.

        Raises:
            NotIdentifiedError: I has a zero or negative eigenvalue (after scaling to
                unit diagonal); the message names the parameter combinations involved.
        """
        if self.hessian is None:
            theta = jnp.asarray(self.estimate, jnp.result_type(float))
            self.hessian = np.asarray(self._derivatives(theta)[2], np.float64)
        self.hessian = 0.5 * (self.hessian + self.hessian.T)
        info = -self.hessian
        problems = _identification(info, self.names)
        if problems:
            message, directions = problems
            raise NotIdentifiedError(message, self, directions)
        self.cov = np.linalg.inv(info)
        self.cov = 0.5 * (self.cov + self.cov.T)
        return self.cov

    # ------------------------------------------------------------ derived
    def delta(self, fn, level: float | None = None) -> Derived:
        """Delta-method standard errors of ``fn(params)``.

        Args:
            fn: params dict (natural scale, as :attr:`params`) -> a scalar, an array
                or a dict of them, written with ``jax.numpy`` (differentiated by
                ``jax.jacobian``). A spec's ``derived_values`` works as is.

        Returns:
            :class:`Derived` with names (dict keys, ``[i]`` for array entries, or
            ``g``), estimates, covariance J I⁻¹ Jᵀ, ``se`` and Wald ``ci``.
        """
        if self.cov is None:
            raise ValueError("no covariance: fit with se=True")
        theta = jnp.asarray(self.estimate, jnp.result_type(float))
        out = fn(self._unravel(theta))
        flat_out, _ = ravel_pytree(out)

        def g(t):
            return ravel_pytree(fn(self._unravel(t)))[0]

        jac = np.asarray(jax.jacobian(g)(theta), np.float64).reshape(flat_out.shape[0], -1)
        cov = jac @ self.cov @ jac.T
        return Derived(
            _output_names(out), np.asarray(flat_out, np.float64), cov, level or self.level
        )

    # ------------------------------------------------------------ profiles
    def profile(self, names=None, level: float | None = None) -> dict:
        """Profile-likelihood intervals {θ_j : 2(ℓ̂ − ℓ_p(θ_j)) ≤ χ²₁(level)}.

        ℓ_p(θ_j) re-optimises every other parameter with θ_j fixed (L-BFGS on the
        compiled gradient); each bound is the root (Brent) of the χ²₁(level)/2 drop
        (1.92 at 95 %), bracketed by doubling steps from the Wald half-width on the
        unconstrained scale. A bound that no step reaches is ±inf (the support's end).

        Args:
            names: flat parameter names (default all).

        Returns:
            name -> (lower, upper); also stored in ``profiles`` (by name and level).
        """
        level = self.level if level is None else level
        names = self.names if names is None else ([names] if isinstance(names, str) else names)
        out = {}
        for name in names:
            if name not in self.names:
                raise ValueError(f"unknown parameter {name!r}; parameters: {', '.join(self.names)}")
            key = (name, level)
            if key not in self.profiles:
                self.profiles[key] = self._profile_fn(self.names.index(name), level)
            out[name] = self.profiles[key]
        return out

    # ------------------------------------------------------------ reports
    def summary(self) -> str:
        """A statsmodels-like table: header (−2LL, AIC, BIC, n, k, convergence) and one
        row per parameter in the model's order: estimate, se, z, P>|z| and the Wald
        interval (profile intervals too where :meth:`profile` computed them)."""
        rule = "=" * 78
        agree = sum(
            1
            for r in self.starts
            if abs(r.minus2ll - self.starts[self.best_start].minus2ll) <= 1e-2
        )
        head = [
            f"Maximum-likelihood estimates: {self.model_name}",
            rule,
            f"-2 log-likelihood: {self.minus2ll:14.4f}    AIC: {self.aic:.4f}    "
            f"BIC: {self.bic:.4f}",
            f"observations n:    {self.n:14d}    free parameters k: {self.k}",
            f"converged: {'yes' if self.converged else 'NO'} (max |gradient| {self.grad_norm:.2e}; "
            f"{agree} of {len(self.starts)} starts at this optimum; {self.message})",
            "-" * 78,
        ]
        return "\n".join(head) + "\n" + _table(self._rows(), self._header()) + "\n" + rule

    def _header(self) -> tuple:
        header = ("estimate", "se", "z", "P>|z|", *_ci_labels(self.level))
        if any(lvl == self.level for _, lvl in self.profiles):
            header += ("profile lo", "profile hi")
        return header

    def _rows(self) -> list:
        rows = []
        ci = self.wald_ci() if self.cov is not None else None
        for i, name in enumerate(self.names):
            row = [name, self.estimate[i]]
            if ci is None:
                row += ["-"] * 5
            else:
                z = self.estimate[i] / self.se[i]
                row += [self.se[i], z, 2 * scipy.stats.norm.sf(abs(z)), *ci[i]]
            if any(lvl == self.level for _, lvl in self.profiles):
                row += list(self.profiles.get((name, self.level), ("-", "-")))
            rows.append(tuple(row))
        return rows

    def __str__(self) -> str:
        return self.summary()

    def to_dataframe(self):
        """A pandas DataFrame indexed by parameter (model order): estimate, se, z, p,
        lower, upper (Wald), and profile_lower/profile_upper where computed."""
        import pandas as pd

        header = ("estimate", "se", "z", "p", "lower", "upper", "profile_lower", "profile_upper")
        rows = [[np.nan if isinstance(v, str) else v for v in r[1:]] for r in self._rows()]
        df = pd.DataFrame(rows, index=list(self.names), columns=list(header[: len(rows[0])]))
        df.index.name = "parameter"
        return df

    def to_dict(self) -> dict:
        """A JSON-ready dict: fit statistics and the estimate table."""
        ci = self.wald_ci() if self.cov is not None else None
        params = {}
        for i, name in enumerate(self.names):
            entry = {"estimate": float(self.estimate[i])}
            if ci is not None:
                entry.update(se=float(self.se[i]), lower=float(ci[i, 0]), upper=float(ci[i, 1]))
            params[name] = entry
        return {
            "model": self.model_name,
            "minus2ll": self.minus2ll,
            "aic": self.aic,
            "bic": self.bic,
            "n": self.n,
            "k": self.k,
            "converged": self.converged,
            "max_abs_gradient": self.grad_norm,
            "message": self.message,
            "level": self.level,
            "parameters": params,
        }

    def to_arviz(self):
        """ArviZ InferenceData with the estimate as a single draw (chain 1, draw 1);
        the fit statistics are in ``posterior.attrs``."""
        import arviz as az

        posterior = {k: np.asarray(v)[None, None] for k, v in self.params.items()}
        idata = az.from_dict(posterior=posterior)
        idata.posterior.attrs.update(
            method="mle",
            minus2ll=self.minus2ll,
            aic=self.aic,
            bic=self.bic,
            n=self.n,
            k=self.k,
            converged=int(self.converged),
        )
        return idata


def _output_names(out) -> tuple:
    if isinstance(out, dict):
        names = []
        for key in sorted(out):  # ravel_pytree flattens dicts by sorted key
            shape = np.shape(out[key])
            names += [key] if shape == () else [f"{key}[{i}]" for i in np.ndindex(shape)]
        return tuple(names)
    shape = np.shape(out)
    return ("g",) if shape == () else tuple(f"g[{i}]" for i in np.ndindex(shape))


def _identification(info: np.ndarray, names) -> tuple | None:
    """None if I is positive definite to working precision, else (message, directions)."""
    d = np.sqrt(np.abs(np.diag(info)))
    if not np.all(np.isfinite(info)):
        bad = [n for n, row in zip(names, info, strict=True) if not np.all(np.isfinite(row))]
        return (f"the Hessian is not finite in {', '.join(bad)}", [])
    flat = [n for n, v in zip(names, d, strict=True) if v == 0]
    if flat:
        msg = (
            f"the log-likelihood does not depend on {', '.join(flat)} at the estimate: "
            "not identified (fix it, or check how it enters the model)"
        )
        return msg, [{n: 1.0} for n in flat]
    scaled = info / np.outer(d, d)
    w, v = np.linalg.eigh(scaled)
    bad = np.flatnonzero(w < _SINGULAR_RTOL * max(1.0, w.max()))
    if bad.size == 0:
        return None
    directions, parts = [], []
    for j in bad:
        vec = v[:, j] / d
        vec = vec / np.max(np.abs(vec))
        combo = {n: float(c) for n, c in zip(names, vec, strict=True) if abs(c) > 0.1}
        directions.append(combo)
        terms = " ".join(f"{c:+.2f}·{n}" for n, c in combo.items())
        kind = "flat" if w[j] > -1e-6 else "curves upwards"
        parts.append(f"ℓ {kind} along {terms} (scaled eigenvalue {w[j]:.2e})")
    involved = sorted({n for c in directions for n in c}, key=list(names).index)
    msg = (
        "the observed information is singular or indefinite at the estimate: "
        + "; ".join(parts)
        + f". Not identified (or not at a maximum): {', '.join(involved)}. Fix or "
        "re-parameterise them, or try other start values; err.result has the estimates"
    )
    return msg, directions
