"""Shared helpers of the benchmark scripts: machine information, timing,
comparison, tables and result files, and the SHO / OU models several benchmarks use.

Protocol the helpers implement: every contender is compiled (``jit``) and warmed up
before it is timed; every call is followed by ``jax.block_until_ready``; contenders of
one case are timed *interleaved* (one sample of each in turn, round-robin), so that the
background load of a shared machine affects them alike; the statistic is the median
over samples, with the minimum kept as well. CPU numbers are meaningful as ratios
between contenders measured in the same process.

Import from a benchmark script (``python benchmarks/bench_X.py`` puts ``benchmarks/`` on
``sys.path``)::

    from _common import time_interleaved, machine_info, write_results
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"

__all__ = [
    "DYNESTYX_LABEL",
    "REPO",
    "RESULTS_DIR",
    "call",
    "compile_all",
    "cpu_target_note",
    "dynestyx_loglik",
    "dynestyx_version",
    "enable_compile_cache",
    "format_ms",
    "machine_info",
    "markdown_table",
    "max_rel_diff",
    "on_cpu",
    "ou_linear_sde",
    "sho_linear_sde",
    "text_table",
    "time_interleaved",
    "time_interleaved_samples",
    "write_results",
]


# ------------------------------------------------------------------------------ machine


def _jaxlib_version() -> str | None:
    try:
        import jaxlib
    except ImportError:
        return None
    return getattr(jaxlib, "__version__", None)


def machine_info(dtype: str, quick: bool, **extra: Any) -> dict:
    """What a result needs to be interpreted: versions, backend, CPUs, load, date, dtype.

    ``extra`` entries (e.g. versions of the peer libraries) are added as given.
    """
    dev = jax.devices()[0]
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "jaxlib": _jaxlib_version(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": str(getattr(dev, "device_kind", dev)),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "dtype": dtype,
        "quick": quick,
        "xla_flags": os.environ.get("XLA_FLAGS"),
    }
    info.update(extra)
    return info


def enable_compile_cache(path: str | os.PathLike | None) -> None:
    """Turn on JAX's persistent compilation cache in ``path`` (None: leave it off).

    A rerun then loads the executables instead of compiling them; the timings are
    unaffected (same executables), only the wall time of the run shrinks.
    """
    if path is None:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# ------------------------------------------------------------------------------- timing


def call(fn: Callable, args: Sequence) -> Any:
    """``fn(*args)``, blocked until every array of the result is ready."""
    return jax.block_until_ready(fn(*args))


def compile_all(
    fns: Mapping[Any, tuple[Callable, Sequence]], workers: int = 2
) -> tuple[dict, dict]:
    """Ahead-of-time ``jax.jit(fn).lower(*args).compile()`` of every entry.

    XLA compiles in C++ without the GIL, so ``workers`` threads compile several
    contenders at once (the wall time of a benchmark is dominated by compilation).
    Returns ``(compiled, seconds)``: the executables and each one's lowering+compile
    wall time (under ``workers > 1`` the compilations share the CPUs).
    """

    def one(item):
        key, (fn, args) = item
        t0 = time.perf_counter()
        exe = jax.jit(fn).lower(*args).compile()
        return key, exe, time.perf_counter() - t0

    compiled, seconds = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, exe, dt in pool.map(one, fns.items()):
            compiled[key], seconds[key] = exe, dt
    return compiled, seconds


def time_interleaved_samples(
    fns: Mapping[Any, tuple[Callable, Sequence]],
    repeats: int,
    min_time: float,
    max_seconds: float,
    min_rounds: int = 3,
) -> dict[Any, list[float]]:
    """Seconds per call of each (compiled, warmed-up) function: all samples.

    A sample is the mean over enough back-to-back calls (each blocked on) to last
    ``min_time``; a single call that long is a sample by itself. One sample of each
    function in turn per round (round-robin), so drifting background load affects all
    contenders alike. Runs ``repeats`` rounds, or stops after ``min_rounds`` once
    ``max_seconds`` have passed.
    """
    number, samples = {}, {}
    t_start = time.perf_counter()
    for key, (fn, args) in fns.items():
        t0 = time.perf_counter()
        call(fn, args)
        dt = time.perf_counter() - t0
        number[key] = max(1, min(1000, math.ceil(min_time / max(dt, 1e-7))))
        samples[key] = [dt] if number[key] == 1 else []
    rounds_needed = repeats - 1 if all(samples.values()) else repeats
    for _ in range(rounds_needed):
        for key, (fn, args) in fns.items():
            t0 = time.perf_counter()
            for _ in range(number[key]):
                call(fn, args)
            samples[key].append((time.perf_counter() - t0) / number[key])
        if (
            min(len(v) for v in samples.values()) >= min_rounds
            and time.perf_counter() - t_start > max_seconds
        ):
            break
    return samples


def time_interleaved(
    fns: Mapping[Any, tuple[Callable, Sequence]],
    repeats: int,
    min_time: float,
    max_seconds: float,
) -> tuple[dict, dict, int]:
    """Median and minimum seconds per call of each function, and the rounds run.

    See :func:`time_interleaved_samples` for the protocol.
    """
    samples = time_interleaved_samples(fns, repeats, min_time, max_seconds)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    minima = {k: min(v) for k, v in samples.items()}
    return medians, minima, min(len(v) for v in samples.values())


# --------------------------------------------------------------------------- comparison


def max_rel_diff(x, y, dtype=np.float64) -> float:
    """Largest ``max|x - y| / max|y|`` over the leaves of two pytrees (y: reference)."""
    xs, ys = jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)
    if len(xs) != len(ys):
        raise ValueError(f"pytrees with {len(xs)} and {len(ys)} leaves cannot be compared")
    worst = 0.0
    for a, b in zip(xs, ys, strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        scale = max(float(np.max(np.abs(b))), float(np.finfo(dtype).tiny))
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


# ------------------------------------------------------------------------------- tables


def format_ms(seconds: float | None, digits: int = 3) -> str:
    """Seconds as milliseconds with ``digits`` significant digits ('—' for None)."""
    if seconds is None or not np.isfinite(seconds):
        return "—"
    ms = seconds * 1e3
    if ms == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(ms))))
    return f"{ms:.{decimals}f}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (first column left-aligned, others right)."""
    out = ["| " + " | ".join(str(h) for h in headers) + " |"]
    out.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic | np.ndarray | jax.Array):
        return np.asarray(x).tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def on_cpu() -> bool:
    """Whether this run is on CPU, where the issues' CPU targets are judged."""
    return jax.default_backend() == "cpu"


def cpu_target_note() -> str:
    """Appended to a CPU target's label on an accelerator, where it is recorded, not judged."""
    return "" if on_cpu() else f" (a CPU target; this run is on {jax.devices()[0].device_kind})"


def write_results(stem: str, payload: dict, markdown: str, out_dir: Path | None = None):
    """Write ``<stem>.json`` and ``<stem>.md`` under ``benchmarks/results/``; return paths.

    A run on an accelerator appends its backend to the stem (``bench_scale_quick_gpu``),
    so that it never overwrites the CPU results; ``$KALMANAD_BENCH_TAG`` appends a tag
    (a benchmark run in parts). ``$KALMANAD_BENCH_RESULTS`` redirects
    the directory (the lent GPU machine writes where its files come back from).
    """
    backend = jax.default_backend()
    if backend != "cpu":
        stem = f"{stem}_{backend}"
    if os.environ.get("KALMANAD_BENCH_TAG"):  # runs of one benchmark in parts
        stem = f"{stem}_{os.environ['KALMANAD_BENCH_TAG']}"
    if out_dir is None:
        out_dir = os.environ.get("KALMANAD_BENCH_RESULTS") or RESULTS_DIR
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


# ------------------------------------------------------------------------------- models


def sho_linear_sde(omega, quality, sigma, noise, mu=0.0):
    """tinygp's ``quasisep.SHO(omega, quality, sigma)`` + white noise as a LinearSDE.

    tinygp's state-space form: drift ``[[0, 1], [-ω², -ω/Q]]``, stationary covariance
    ``diag(1, ω²)`` (so the diffusion rate is ``diag(0, 2ω³/Q)``) and observation
    ``[σ, 0]``; plus the mean ``mu`` and measurement noise ``noise²``. Traceable in
    all arguments (scalars).
    """
    import kalmanad

    omega, quality, sigma, noise, mu = (jnp.asarray(v) for v in (omega, quality, sigma, noise, mu))
    zero, one = jnp.zeros_like(omega), jnp.ones_like(omega)
    drift = jnp.stack([jnp.stack([zero, one]), jnp.stack([-(omega**2), -omega / quality])])
    diffusion = jnp.diag(jnp.stack([zero, 2.0 * omega**3 / quality]))
    observation = jnp.stack([sigma, jnp.zeros_like(sigma)])[None, :]
    return kalmanad.LinearSDE(
        drift=drift,
        diffusion=diffusion,
        observation=observation,
        observation_noise=jnp.reshape(noise**2, (1, 1)),
        observation_intercept=jnp.reshape(mu, (1,)),
    )


def ou_linear_sde(theta, mu, sigma, noise):
    """The OU process of models/ou.toml: ``dx = θ(μ - x)dt + √(2θ)σ dW``, ``y = x + e``.

    Its covariance is ``σ² exp(-θ|τ|)``, tinygp's ``quasisep.Exp(scale=1/θ, sigma=σ)``.
    """
    import kalmanad

    theta, mu, sigma, noise = (jnp.asarray(v) for v in (theta, mu, sigma, noise))
    return kalmanad.LinearSDE(
        drift=jnp.reshape(-theta, (1, 1)),
        diffusion=jnp.reshape(2.0 * theta * sigma**2, (1, 1)),
        observation=jnp.ones((1, 1), theta.dtype),
        observation_noise=jnp.reshape(noise**2, (1, 1)),
        drift_intercept=jnp.reshape(theta * mu, (1,)),
    )


# ------------------------------------------------------------------ dynestyx-equivalent

DYNESTYX_LABEL = "dynestyx-equivalent: NumPyro + Van Loan + cuthbert parallel filter"
DYNESTYX_NOTE = (
    "dynestyx (PyPI) {why}; the peer is its closest equivalent named by issue 6: per-step Van Loan "
    "discretisation by jax.scipy.linalg.expm under JAX's AD and cuthbert's parallel "
    "square-root Kalman filter (cuthbert.gaussian.kalman, associative scan)"
)


def dynestyx_version() -> dict:
    """Which dynestyx peer runs here (always the equivalent; whether dynestyx imports)."""
    py = platform.python_version()
    try:
        import dynestyx
    except ImportError:
        import cuthbert

        return {
            "dynestyx": None,
            "dynestyx_peer": "equivalent",
            "cuthbert": cuthbert.__version__,
            "dynestyx_note": DYNESTYX_NOTE.format(
                why=f"needs Python >= 3.12 and is not installable on this Python ({py})"
                if sys.version_info < (3, 12)
                else f"is not installed here (Python {py})",
            ),
        }
    import cuthbert

    # dynestyx's own API is untested here (it cannot be installed on Python 3.11): the
    # benchmarks still run the equivalent, and say so.
    return {
        "dynestyx": getattr(dynestyx, "__version__", "installed"),
        "dynestyx_peer": "equivalent (dynestyx installed but not wired up)",
        "cuthbert": cuthbert.__version__,
    }


def _van_loan_expm(a, q, c, dts):
    """Per-step exact discretisation by ``jax.scipy.linalg.expm`` (vmapped over steps).

    Van Loan: ``expm([[-A, GGᵀ], [0, Aᵀ]]Δ) = [[·, F₁₂], [0, F₂₂]]``, ``A_d = F₂₂ᵀ``,
    ``Q_d = A_d F₁₂``; the intercept's offset ``∫₀^Δ e^{As} ds c`` from the augmented
    exponential ``expm([[A, c], [0, 0]]Δ)``.
    """
    n = a.shape[-1]
    zn = jnp.zeros_like(a)
    block = jnp.block([[-a, q], [zn, a.T]])
    aug = jnp.block([[a, c[:, None]], [jnp.zeros((1, n + 1), a.dtype)]])

    def one(dt):
        f = jax.scipy.linalg.expm(block * dt)
        ad = f[n:, n:].T
        qd = ad @ f[:n, n:]
        off = jax.scipy.linalg.expm(aug * dt)[:n, n]
        return ad, off, 0.5 * (qd + qd.T)

    return jax.vmap(one)(dts)


def dynestyx_loglik(model, times, y, parallel: bool = True):
    """Log-likelihood of a (time-invariant, unbatched) ``kalmanad.LinearSDE`` with a
    stationary start, the dynestyx way: Van Loan per step by ``jax.scipy.linalg.expm``,
    then cuthbert's square-root Kalman filter (``parallel``: associative scan).

    ``times`` (T,) with distinct steps (a zero step has a singular Q_d, whose Cholesky
    factor is undefined), ``y`` (T, m) without missing values; ``jax.vmap`` over both
    for a panel. The first
    observation is of the stationary state: cuthbert's first element propagates the
    initial state by the identity with zero noise. Traceable in the model's arrays.
    """
    from cuthbert import filter as cuthbert_filter
    from cuthbert.gaussian import kalman

    a, q = model.drift, model.diffusion
    n = a.shape[-1]
    c = model.drift_intercept if model.drift_intercept is not None else jnp.zeros(n, a.dtype)
    h, r = model.observation, model.observation_noise
    m = h.shape[0]
    d = (
        model.observation_intercept
        if model.observation_intercept is not None
        else jnp.zeros(m, a.dtype)
    )
    eye = jnp.eye(n, dtype=a.dtype)
    # stationary start: (A ⊗ I + I ⊗ A) vec P∞ = -vec GGᵀ, m∞ = -A⁻¹c
    p0 = jnp.linalg.solve(jnp.kron(a, eye) + jnp.kron(eye, a), -q.reshape(-1)).reshape(n, n)
    p0 = 0.5 * (p0 + p0.T)
    m0 = -jnp.linalg.solve(a, c)
    dts = jnp.diff(jnp.asarray(times, a.dtype))
    ad, off, qd = _van_loan_expm(a, q, c, dts)
    parts = {
        "m0": m0,
        "chol_p0": jnp.linalg.cholesky(p0),
        "F": jnp.concatenate([eye[None], ad]),
        "c": jnp.concatenate([jnp.zeros((1, n), a.dtype), off]),
        "chol_Q": jnp.concatenate([jnp.zeros((1, n, n), a.dtype), jnp.linalg.cholesky(qd)]),
        "h": h,
        "d": d,
        "chol_r": jnp.linalg.cholesky(r),
    }
    # An invalid parameter (an unstable drift, or one so large that the discretisation
    # overflows) gives -inf without reaching the filter. An Inf there would reach the
    # LAPACK SVD (gesdd) inside the pseudo-inverse of cuthbert's QR-based `tria` gradient,
    # and gesdd with singular vectors does not return on a matrix holding an Inf
    # (Reference-LAPACK/lapack#1409): NUTS's first, long warm-up trajectories on the SHO
    # met such points, and one gradient evaluation then ran for hours. Entries above
    # max**(1/4) are refused too, so that products of up to four stay finite.
    bound = jnp.finfo(a.dtype).max ** 0.25
    ok = jnp.all(jnp.stack([jnp.all(jnp.abs(v) <= bound) for v in parts.values()]))
    benign = {
        "m0": jnp.zeros(n, a.dtype),
        "chol_p0": eye,
        "F": jnp.broadcast_to(eye, parts["F"].shape),
        "c": jnp.zeros_like(parts["c"]),
        "chol_Q": jnp.broadcast_to(eye, parts["chol_Q"].shape),
        "h": jnp.zeros_like(h),
        "d": jnp.zeros_like(d),
        "chol_r": jnp.eye(m, dtype=a.dtype),
    }
    safe = {k: jnp.where(ok, v, benign[k]) for k, v in parts.items()}
    inputs = {k: safe[k] for k in ("F", "c", "chol_Q")}
    inputs["y"] = jnp.asarray(y, a.dtype)
    filt = kalman.build_filter(
        safe["m0"],
        safe["chol_p0"],
        lambda mi: (mi["F"], mi["c"], mi["chol_Q"]),
        lambda mi: (safe["h"], safe["d"], safe["chol_r"], mi["y"]),
    )
    states = cuthbert_filter(filt, inputs, filt.init_prepare(), parallel=parallel)
    return jnp.where(ok, states.log_normalizing_constant[-1], -jnp.inf)
