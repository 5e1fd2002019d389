"""Differentiable linear-algebra primitives with explicit gradient rules.

Every function here accepts any leading batch dimensions and works in float32 and
float64. Derivatives are given by derived rules, never by automatic
differentiation through the algorithm's own steps.
"""

from kalmanad.linalg.cholesky import cho_solve, gaussian_logpdf, gaussian_logpdf_chol, logdet_spd
from kalmanad.linalg.expm import expm, expm_frechet
from kalmanad.linalg.lyapunov import solve_continuous_lyapunov, solve_discrete_lyapunov
from kalmanad.linalg.series import taylor_coefficients

__all__ = [
    "cho_solve",
    "expm",
    "expm_frechet",
    "gaussian_logpdf",
    "gaussian_logpdf_chol",
    "logdet_spd",
    "solve_continuous_lyapunov",
    "solve_discrete_lyapunov",
    "taylor_coefficients",
]
