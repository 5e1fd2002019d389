"""Write the zoo's bundled default data sets (run from anywhere: ``python models/_make_data.py``).

Real data (public domain, copied from statsmodels.datasets):

* ``nile.csv``: annual flow of the Nile at Aswan, 1871-1970 (10^8 m^3), 100 rows
  (Cobb 1978; Durbin & Koopman's classic local-level example).
* ``sunspots.csv``: yearly mean sunspot numbers, 1700-2008, 309 rows (NOAA NGDC).

Simulated data: every other spec's ``[data.truth]`` table gives the true parameter
values and ``[data] seed`` the seed. The simulation is exact: the state is drawn
from its stationary distribution at the first time and then propagated with the
exact transition over each (irregular) interval,
``x_k = e^{AΔ} x_{k-1} + ∫e^{As}c ds + w,  w ~ N(0, ∫ e^{As} GGᵀ e^{Aᵀs} ds)`` (Van
Loan's matrix exponentials), and observed as ``y = H x + d + e, e ~ N(0, R)``.

The model matrices are written out here by hand, in numpy, independently of the
spec language (tests/test_spec.py checks that ``ModelSpec.build`` at the truth gives
the same matrices). Only numpy and scipy are used (statsmodels for the real data),
so the script runs without the kalmanad package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.linalg

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------ model matrices
# Each returns dict(A, c, Q, H, d, R) at the truth (Q = GGᵀ, R = measurement covariance).


def ou(t):
    return dict(
        A=np.array([[-t["theta"]]]),
        c=np.array([t["theta"] * t["mu"]]),
        Q=np.array([[2 * t["theta"] * t["sigma"] ** 2]]),
        H=np.array([[1.0]]),
        d=np.zeros(1),
        R=np.array([[t["noise"] ** 2]]),
    )


def ctvar(t):
    return dict(
        A=np.array([[-t["auto1"], t["cross12"]], [t["cross21"], -t["auto2"]]]),
        c=np.zeros(2),
        Q=np.diag([t["sigma1"] ** 2, t["sigma2"] ** 2]),
        H=np.eye(2),
        d=np.array([t["mu1"], t["mu2"]]),
        R=np.diag([t["noise1"] ** 2, t["noise2"] ** 2]),
    )


def _carma(alpha, beta, sd):
    """Companion form of a(s) = s^p + alpha[p-1] s^(p-1) + ... + alpha[0] (alpha low->high)
    with loadings beta (low->high, padded) and the unit-rate noise on the last state
    scaled so that the stationary sd of beta·x is ``sd``."""
    p = len(alpha)
    A = np.zeros((p, p))
    A[:-1, 1:] = np.eye(p - 1)
    A[-1] = -np.asarray(alpha)
    E = np.zeros((p, p))
    E[-1, -1] = 1.0
    h = np.zeros(p)
    h[: len(beta)] = beta
    P1 = scipy.linalg.solve_continuous_lyapunov(A, -E)
    return A, (sd**2 / (h @ P1 @ h)) * E, h[None, :]


def car(t):
    # (s² + a1 s + a2)(s + r) = s³ + (a1 + r) s² + (a2 + a1 r) s + a2 r
    a1, a2, r = t["a1"], t["a2"], t["r"]
    A, Q, H = _carma([a2 * r, a2 + a1 * r, a1 + r], [1.0], t["sigma"])
    return dict(
        A=A, c=np.zeros(3), Q=Q, H=H, d=np.array([t["mu"]]), R=np.array([[t["noise"] ** 2]])
    )


def matern32(t):
    lam = np.sqrt(3.0) / t["lengthscale"]
    return dict(
        A=np.array([[0.0, 1.0], [-(lam**2), -2 * lam]]),
        c=np.zeros(2),
        Q=np.diag([0.0, 4 * lam**3 * t["sigma"] ** 2]),
        H=np.array([[1.0, 0.0]]),
        d=np.array([t["mu"]]),
        R=np.array([[t["noise"] ** 2]]),
    )


def matern52(t):
    lam = np.sqrt(5.0) / t["lengthscale"]
    return dict(
        A=np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-(lam**3), -3 * lam**2, -3 * lam]]),
        c=np.zeros(3),
        Q=np.diag([0.0, 0.0, 16.0 / 3.0 * lam**5 * t["sigma"] ** 2]),
        H=np.array([[1.0, 0.0, 0.0]]),
        d=np.array([t["mu"]]),
        R=np.array([[t["noise"] ** 2]]),
    )


def panel_ctvar(t):
    """Population-level (typical subject) matrices; subject values replace the
    varying parameters (see simulate_panel)."""
    return ctvar(t)


MATRICES = {
    "ou": ou,
    "ctvar": ctvar,
    "car": car,
    "matern32": matern32,
    "matern52": matern52,
    "panel_ctvar": panel_ctvar,
}


# ---------------------------------------------------------------------- simulation


def _step(A, c, Q, dt):
    """Exact transition over dt: (Ad, bd, Qd) by Van Loan's block exponentials."""
    n = A.shape[0]
    # [[A, c], [0, 0]] -> [[Ad, bd], [0, 1]]
    aug = np.zeros((n + 1, n + 1))
    aug[:n, :n] = A
    aug[:n, n] = c
    e = scipy.linalg.expm(aug * dt)
    Ad, bd = e[:n, :n], e[:n, n]
    # [[-A, Q], [0, Aᵀ]] -> F12, F22; Qd = F22ᵀ F12
    vl = np.zeros((2 * n, 2 * n))
    vl[:n, :n] = -A
    vl[:n, n:] = Q
    vl[n:, n:] = A.T
    f = scipy.linalg.expm(vl * dt)
    Qd = f[n:, n:].T @ f[:n, n:]
    return Ad, bd, 0.5 * (Qd + Qd.T)


def _mvn(rng, mean, cov):
    # eigh-based square root: the covariances here may be singular (e.g. Matérn's Qd
    # for tiny dt), where a Cholesky factorisation would fail.
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    return mean + v @ (np.sqrt(np.clip(w, 0.0, None)) * rng.standard_normal(len(mean)))


def simulate(mats, times, rng):
    """Exact draw of y (T, m) at the given times, the state starting stationary."""
    A, c, Q, H, d, R = (mats[k] for k in ("A", "c", "Q", "H", "d", "R"))
    P = scipy.linalg.solve_continuous_lyapunov(A, -Q)
    x = _mvn(rng, -np.linalg.solve(A, c), P)
    ys = []
    for k, tk in enumerate(times):
        if k > 0:
            Ad, bd, Qd = _step(A, c, Q, tk - times[k - 1])
            x = _mvn(rng, Ad @ x + bd, Qd)
        ys.append(_mvn(rng, H @ x + d, R))
    return np.array(ys)


def irregular_times(rng, n, mean_dt, decimals=2):
    """n strictly increasing times from 0 with exponential gaps, rounded."""
    while True:
        t = np.round(np.concatenate([[0.0], np.cumsum(rng.exponential(mean_dt, n - 1))]), decimals)
        if np.all(np.diff(t) > 0):
            return t


# Per-model design of the simulated data: (rows, mean gap, missing fraction).
DESIGN = {
    "ou": (200, 0.5, 0.0),
    "ctvar": (250, 0.5, 0.05),
    "car": (300, 0.3, 0.0),
    "matern32": (200, 0.3, 0.0),
    "matern52": (200, 0.3, 0.0),
}
PANEL = {"subjects": 30, "per_subject": 20, "mean_dt": 0.6}


def simulate_series(name, truth, seed):
    """(times (T,), y (T, m)) of a single-series zoo model at its truth and seed."""
    rng = np.random.default_rng(seed)
    rows, mean_dt, missing = DESIGN[name]
    times = irregular_times(rng, rows, mean_dt)
    y = np.round(simulate(MATRICES[name](truth), times, rng), 4)
    if missing:
        # Each cell missing with this probability; keep at least one value per row.
        mask = rng.random(y.shape) < missing
        mask[mask.all(axis=1), 0] = False
        y[mask] = np.nan
    return times, y


def simulate_panel(truth, seed):
    """(subject, times, y, age) of the hierarchical CT-VAR, long format.

    Subject s has log auto_i,s = log auto_i + (age effect) + δ, mu_i,s = mu_i + ... + δ,
    with δ_s ~ N(0, diag(sd) C diag(sd)) over (auto1, auto2, mu1, mu2) and
    standardised ages.
    """
    rng = np.random.default_rng(seed)
    s_n, t_n = PANEL["subjects"], PANEL["per_subject"]
    varying = ["auto1", "auto2", "mu1", "mu2"]
    sd = np.array([truth[f"{x}_sd"] for x in varying])
    corr = np.asarray(truth["re_corr"], float)
    cov = sd[:, None] * corr * sd[None, :]
    age = np.round(rng.standard_normal(s_n), 2)
    rows = []
    for s in range(s_n):
        delta = _mvn(rng, np.zeros(4), cov)
        t = dict(truth)
        t["auto1"] = truth["auto1"] * np.exp(truth["age_on_auto1"] * age[s] + delta[0])
        t["auto2"] = truth["auto2"] * np.exp(delta[1])
        t["mu1"] = truth["mu1"] + truth["age_on_mu1"] * age[s] + delta[2]
        t["mu2"] = truth["mu2"] + delta[3]
        times = irregular_times(rng, t_n, PANEL["mean_dt"])
        y = np.round(simulate(ctvar(t), times, rng), 4)
        for k in range(t_n):
            rows.append((s + 1, times[k], y[k, 0], y[k, 1], age[s]))
    return rows


def _fmt(v):
    return "" if np.isnan(v) else repr(float(v))


def _load(name):
    with open(HERE / f"{name}.toml", "rb") as fh:
        return tomllib.load(fh)


def write_simulated(out: Path = HERE):
    for name in DESIGN:
        spec = _load(name)
        data = spec["data"]
        times, y = simulate_series(name, data["truth"], data["seed"])
        manifest = spec["model"]["manifest"]
        with open(out / data["file"], "w") as fh:
            fh.write(",".join([data.get("time", "time"), *manifest]) + "\n")
            for tk, yk in zip(times, y, strict=True):
                fh.write(",".join([repr(float(tk)), *(_fmt(v) for v in yk)]) + "\n")
    spec = _load("panel_ctvar")
    data = spec["data"]
    rows = simulate_panel(data["truth"], data["seed"])
    with open(out / data["file"], "w") as fh:
        fh.write("id,time,y1,y2,age\n")
        for s, t, y1, y2, age in rows:
            fh.write(f"{s},{float(t)!r},{float(y1)!r},{float(y2)!r},{float(age)!r}\n")


def write_real(out: Path = HERE):
    import statsmodels.datasets.nile
    import statsmodels.datasets.sunspots

    nile = statsmodels.datasets.nile.load_pandas().data
    with open(out / "nile.csv", "w") as fh:
        fh.write("year,volume\n")
        for year, vol in zip(nile["year"], nile["volume"], strict=True):
            fh.write(f"{int(year)},{float(vol):g}\n")
    sun = statsmodels.datasets.sunspots.load_pandas().data
    with open(out / "sunspots.csv", "w") as fh:
        fh.write("year,sunactivity\n")
        for year, v in zip(sun["YEAR"], sun["SUNACTIVITY"], strict=True):
            fh.write(f"{int(year)},{float(v):g}\n")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    write_real(target)
    write_simulated(target)
