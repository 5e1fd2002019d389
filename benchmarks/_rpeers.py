"""R peers of ``bench_vs_stan.py`` and ``bench_vs_openmx.py``: setup, data exchange, ESS.

The peers are Debian's packages: ``r-cran-rstan`` (Stan through rstan) and
``r-cran-openmx`` (OpenMx). :func:`ensure_r` finds them and, with ``install=True``,
installs them with ``apt-get update && apt-get install -y`` (root only; CRAN is not
used). Debian bookworm's ``r-cran-bh`` depends on ``libboost-dev`` but ships no
``include/`` folder, and rstan refuses to compile without one ("Boost not found"):
the setup links ``BH/include`` to ``/usr/include`` where that folder is missing.

Where R or a package is absent and cannot be installed, :func:`ensure_r` returns a
reason and the benchmarks skip their peers with that one message. The tests never
need R.

Data go to R as R dump files (``rstan::read_rdump``) or CSV; draws come back as CSV
(one row per draw, columns ``chain``, ``draw`` and Stan's parameter names such as
``re_z[3,1]``), and ESS is computed here with ``arviz.ess`` for both sides alike.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

PEERS = Path(__file__).resolve().parent / "peers"
DEBIAN_PACKAGES = {"rstan": "r-cran-rstan", "OpenMx": "r-cran-openmx"}


def _r_query(expr: str, timeout: float = 120.0) -> tuple[int, str]:
    try:
        p = subprocess.run(["Rscript", "-e", expr], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return p.returncode, (p.stdout + p.stderr).strip()


def r_package_versions(packages) -> dict[str, str | None]:
    """``{package: version or None}`` as R sees them (all None without Rscript)."""
    out = dict.fromkeys(packages)
    if shutil.which("Rscript") is None:
        return out
    for pkg in packages:
        rc, text = _r_query(
            f'cat(tryCatch(as.character(packageVersion("{pkg}")), error=function(e) "NONE"))'
        )
        line = text.strip().splitlines()[-1] if text.strip() else "NONE"
        out[pkg] = None if rc != 0 or line == "NONE" else line
    return out


def _fix_bh_include() -> str | None:
    """Link Debian's ``BH/include`` to /usr/include where it is missing (see module doc)."""
    rc, text = _r_query('cat(system.file(package="BH"))')
    bh = text.strip().splitlines()[-1] if rc == 0 and text.strip() else ""
    if not bh or not Path(bh).is_dir():
        return None
    inc = Path(bh) / "include"
    if inc.exists() or not Path("/usr/include/boost").is_dir():
        return None
    try:
        inc.symlink_to("/usr/include")
    except OSError as e:
        return f"could not link {inc} -> /usr/include ({e}); rstan will not find Boost"
    return f"linked {inc} -> /usr/include (Debian's r-cran-bh ships no include/ folder)"


def ensure_r(packages, *, install: bool = True, log=print) -> tuple[bool, str, dict]:
    """Make sure ``Rscript`` and the R ``packages`` (keys of DEBIAN_PACKAGES) work.

    Returns ``(ok, message, versions)``. With ``install`` and root, missing pieces are
    installed with ``apt-get update && apt-get install -y --no-install-recommends
    r-base-core <debian packages>``. ``ok`` is False (and ``message`` says why) where
    R or a package is absent and cannot be installed.
    """
    packages = list(packages)
    versions = r_package_versions(packages)
    missing = [p for p in packages if versions[p] is None]
    if missing and install:
        if shutil.which("apt-get") is None:
            return False, f"R packages {missing} missing and there is no apt-get", versions
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            return False, f"R packages {missing} missing and not root (apt-get)", versions
        debs = ["r-base-core"] + [DEBIAN_PACKAGES[p] for p in missing]
        log(f"[setup] apt-get install {' '.join(debs)} (several minutes)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        t0 = time.time()
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", *debs],
        ):
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-5:])
                return False, f"`{' '.join(cmd)}` failed (exit {p.returncode}): {tail}", versions
        log(f"[setup] installed in {time.time() - t0:.0f} s")
        versions = r_package_versions(packages)
        missing = [p for p in packages if versions[p] is None]
    if missing:
        why = "Rscript not found" if shutil.which("Rscript") is None else "not installed"
        return (
            False,
            f"R peer(s) {', '.join(missing)} unavailable ({why}); install Debian's "
            f"{' '.join(DEBIAN_PACKAGES[p] for p in missing)} (run with --setup as root)",
            versions,
        )
    note = _fix_bh_include() if "rstan" in packages else None
    if note:
        log(f"[setup] {note}")
    return True, note or "", versions


# --------------------------------------------------------------------------- exchange


def _r_vec(x) -> str:
    x = np.asarray(x, dtype=np.float64).ravel(order="F")
    return "c(" + ", ".join(repr(float(v)) for v in x) + ")"


def write_rdump(path: Path, data: Mapping) -> None:
    """An R dump file of ints, float arrays (column-major with .Dim) for read_rdump."""
    lines = []
    for name, value in data.items():
        if isinstance(value, int | np.integer):
            lines.append(f"{name} <- {int(value)}L")
            continue
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim <= 1:
            lines.append(f"{name} <- {_r_vec(arr)}")
        else:
            dims = ", ".join(f"{d}L" for d in arr.shape)
            lines.append(f"{name} <- structure({_r_vec(arr)}, .Dim = c({dims}))")
    Path(path).write_text("\n".join(lines) + "\n")


def read_draws(path: Path) -> tuple[dict[str, np.ndarray], int]:
    """Stan draws CSV -> ``{column: (chains, draws)}`` (lp__ dropped), number of chains."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], np.asarray(rows[1:], dtype=np.float64)
    chain = body[:, header.index("chain")].astype(int)
    chains = sorted(set(chain.tolist()))
    out = {}
    for j, name in enumerate(header):
        if name in ("chain", "draw", "lp__"):
            continue
        out[name] = np.stack([body[chain == c, j] for c in chains])
    return out, len(chains)


def read_name_values(path: Path) -> dict[str, float]:
    """A two-column ``name,value`` CSV -> dict."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return {r[0]: float(r[1]) for r in rows[1:] if r[1] not in ("NA", "")}


def stan_columns(samples: Mapping[str, np.ndarray], names=None) -> dict[str, np.ndarray]:
    """NumPyro draws ``{site: (chains, draws, *shape)}`` -> ``{"site[i,j]": (chains, draws)}``.

    Indices are 1-based and row-major in the brackets, as Stan names them; a scalar site
    keeps its name. ``names`` restricts to those sites.
    """
    out = {}
    for site, v in samples.items():
        if names is not None and site not in names:
            continue
        v = np.asarray(v, dtype=np.float64)
        shape = v.shape[2:]
        if not shape:
            out[site] = v
            continue
        for idx in np.ndindex(*shape):
            label = ",".join(str(i + 1) for i in idx)
            out[f"{site}[{label}]"] = v[(slice(None), slice(None), *idx)]
    return out


def min_ess(columns: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """Smallest bulk ESS (``arviz.ess``) over the columns ``{name: (chains, draws)}``."""
    import arviz as az

    worst, which = np.inf, ""
    for name, v in columns.items():
        e = float(az.ess(np.asarray(v)[None] if v.ndim == 1 else np.asarray(v)))
        if e < worst:
            worst, which = e, name
    return worst, which


def compare_means(ours: Mapping[str, np.ndarray], peer: Mapping[str, np.ndarray]) -> list[dict]:
    """Posterior mean and sd of every common column, and |Δmean| in pooled posterior sds."""
    rows = []
    for name in ours:
        if name not in peer:
            continue
        a, b = np.asarray(ours[name]).ravel(), np.asarray(peer[name]).ravel()
        sd = float(np.sqrt(0.5 * (a.var() + b.var())))
        rows.append(
            {
                "parameter": name,
                "mean_kalmanad": float(a.mean()),
                "mean_peer": float(b.mean()),
                "sd_kalmanad": float(a.std()),
                "sd_peer": float(b.std()),
                "diff_in_sd": abs(float(a.mean() - b.mean())) / sd if sd > 0 else 0.0,
            }
        )
    return rows


def run_rscript(args, *, timeout: float, log_path: Path | None = None) -> tuple[int, float, str]:
    """Run ``Rscript *args``; return (exit status, wall seconds, output tail)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            ["Rscript", *map(str, args)], capture_output=True, text=True, timeout=timeout
        )
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, f"timed out after {timeout:.0f} s\n{e.stdout or ''}{e.stderr or ''}"
    wall = time.perf_counter() - t0
    if log_path is not None:
        Path(log_path).write_text(text if isinstance(text, str) else str(text))
    return rc, wall, "\n".join(str(text).strip().splitlines()[-8:])
