"""The ``kalmanad`` command.

    kalmanad models                       list the model zoo
    kalmanad describe MODEL               show a model's variables, priors and matrices
    kalmanad fit MODEL [DATA.csv]         NUTS posterior: summary table, netCDF, plot
    kalmanad simulate MODEL               simulate a data set from a model

MODEL is a zoo name (``kalmanad models``) or the path of a TOML spec. Without DATA,
``fit`` uses the model's bundled default data. A bad model or CSV gives a one-line
error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# XLA's older CPU fusion emitters compile the sampler about twice as fast (measured on
# the OU model's log-likelihood gradient: 2.7 s against 5.9 s), at 10-20% more run
# time per gradient; for a command whose wall time is mostly compilation that is a
# clear win. Applied only when the user's XLA_FLAGS do not mention the option and this
# jaxlib still has it (kalmanad._xla.with_fast_compile).


def _compilation_cache_dir() -> str | None:
    """Where the command keeps compiled programs between runs (None: nowhere).

    ``$KALMANAD_CACHE_DIR`` (empty or ``off`` disables it), else
    ``$XDG_CACHE_HOME/kalmanad/jax`` (``~/.cache/kalmanad/jax``). A ``JAX_COMPILATION_CACHE_DIR``
    of the user's own is left to JAX.
    """
    import os

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    chosen = os.environ.get("KALMANAD_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "0", "off", "none") else chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kalmanad", "jax")


def _enable_x64() -> None:
    # The command is an application, not a library: it chooses float64 for itself
    # (and, before JAX starts its CPU backend, the faster-compiling emitters), and keeps
    # its compiled programs on disk, so that fitting the same model to data of the same
    # shape again skips compilation, most of a short fit's time.
    import os

    from kalmanad._xla import with_fast_compile

    flags = with_fast_compile(os.environ.get("XLA_FLAGS"))
    if flags:
        os.environ["XLA_FLAGS"] = flags
    import jax

    jax.config.update("jax_enable_x64", True)
    cache = _compilation_cache_dir()
    if cache is not None:
        try:
            os.makedirs(cache, exist_ok=True)
        except OSError:  # read-only home, say: run without the cache
            return
        jax.config.update("jax_compilation_cache_dir", cache)
        # Every program, not only those over JAX's default 1 s of compilation: a fit
        # compiles many small ones too, and loading each is faster than compiling it.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _load(model_arg: str):
    from kalmanad.spec import SpecError, load_model

    try:
        return load_model(model_arg)
    except (SpecError, FileNotFoundError, OSError) as e:
        raise CLIError(str(e)) from None


def _read(spec, data_arg: str | None, time_col: str | None, subject_col: str | None):
    from kalmanad.spec import DataError

    try:
        if data_arg is None:
            return spec.default_data(), True
        if not Path(data_arg).is_file():
            raise CLIError(f"{data_arg}: no such file")
        return spec.read_data(data_arg, time=time_col, subject=subject_col), False
    except DataError as e:
        raise CLIError(str(e)) from None


def _arrays(spec, data):
    """(times, y, inputs, kwargs, labels) in the layout the spec's model takes."""
    if data.subject is None:
        return data.times, data.y, data.inputs, {}, None
    panel = data.to_panel()
    kwargs = {}
    if spec.covariate_names:
        kwargs["covariates"] = panel.covariates
    return panel.times, panel.y, panel.inputs, kwargs, panel.subjects


def cmd_models(args) -> int:
    from kalmanad.spec import list_models, load_model

    names = list_models()
    width = max(len(n) for n in names)
    for name in names:
        spec = load_model(name)
        title = spec.title or (spec.description.strip().splitlines() or [""])[0]
        print(f"{name:<{width}}  {title}")
    return 0


def cmd_describe(args) -> int:
    print(_load(args.model).describe())
    return 0


def cmd_fit(args) -> int:
    _enable_x64()
    spec = _load(args.model)
    data, default = _read(spec, args.data, args.time, args.subject)
    times, y, inputs, kwargs, subjects = _arrays(spec, data)

    import arviz as az

    from kalmanad.inference import fit_nuts

    source = data.path if data.path is not None else "(in memory)"
    n_obs = int(np.isfinite(y).sum())
    shape = "x".join(str(s) for s in np.shape(y))
    print(f"kalmanad fit {spec.name}: {source} ({shape} array, {n_obs} observed values)")
    idata = fit_nuts(
        spec,
        times,
        y,
        inputs,
        num_warmup=args.warmup,
        num_samples=args.draws,
        num_chains=args.chains,
        chain_method=args.chain_method,
        seed=args.seed,
        init=args.init,
        dense_mass=args.dense_mass,
        progress_bar=not args.no_progress,
        **kwargs,
    )
    names = [p for p in spec.parameters if p in idata.posterior.data_vars]
    names += [d for d in spec.derived if d in idata.posterior.data_vars]
    summary = az.summary(idata, var_names=names, round_to=4)
    truth = getattr(spec.data, "truth", None) if default else None
    if truth:
        summary["truth"] = [truth.get(str(k).split("[")[0], np.nan) for k in summary.index]
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.width", 160):
        print(summary)
    n_div = int(idata.sample_stats["diverging"].values.sum())
    print(f"divergent transitions: {n_div}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nc = out / f"{spec.name}_fit.nc"
    idata.to_netcdf(str(nc))
    print(f"wrote {nc}")
    if not args.no_plot:
        png = out / f"{spec.name}_fit.png"
        _plot_fit(spec, idata, times, y, inputs, kwargs, subjects, png)
        print(f"wrote {png}")
    return 0


def _plot_fit(spec, idata, times, y, inputs, kwargs, subjects, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kalmanad.inference import sde_draws, smoothed_states
    from kalmanad.plots import plot_states

    means, covs = smoothed_states(spec, idata, times, y, inputs, max_draws=100, **kwargs)
    samples = {
        k: np.asarray(v.values.reshape((-1, *v.values.shape[2:])))[:1]
        for k, v in idata.posterior.data_vars.items()
    }
    # The observation matrix of each subject (it can depend on subject parameters).
    d = sde_draws(spec, samples, times, y, inputs, **kwargs)["y"]
    h = np.asarray(d.model.observation)[0]
    offset = np.asarray(d.model.observation_intercept)[0]
    means, covs = np.asarray(means), np.asarray(covs)
    if subjects is None:
        panels = [(None, np.asarray(times), np.asarray(y), means, covs, h, offset)]
    else:
        k = min(4, len(subjects))
        hs = np.broadcast_to(h, (len(subjects), *h.shape[-2:]))
        os_ = np.broadcast_to(offset, (len(subjects), *offset.shape[-1:]))
        panels = [
            (
                subjects[i],
                np.asarray(times)[i],
                np.asarray(y)[i],
                means[:, i],
                covs[:, i],
                hs[i],
                os_[i],
            )
            for i in range(k)
        ]
    m = spec.m
    fig, axes = plt.subplots(
        m, len(panels), figsize=(4.5 * len(panels) + 2, 2.8 * m), squeeze=False, sharex="col"
    )
    for j, (label, t, yy, mu, cv, hh, off) in enumerate(panels):
        ok = np.isfinite(t)
        # Pad rows (repeated last time, all-NaN y) are dropped from the picture.
        keep = ok & ~(np.r_[False, np.diff(t) == 0] & np.all(np.isnan(yy), axis=1))
        plot_states(
            t[keep],
            mu[:, keep],
            cv[:, keep],
            y=yy[keep] - off,
            observation=hh,
            names=[f"{n} − offset" if np.any(off) else n for n in spec.manifest],
            ax=axes[:, j],
        )
        if label is not None:
            axes[0, j].set_title(f"subject {label}")
    fig.suptitle(f"{spec.name}: smoothed signal (posterior mean, 90% band) and data")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def cmd_simulate(args) -> int:
    _enable_x64()
    import jax

    from kalmanad.statespace import simulate

    spec = _load(args.model)
    if spec.is_hierarchical:
        raise CLIError(f"{spec.name} is hierarchical: simulate one subject's model instead")
    truth = dict(getattr(spec.data, "truth", None) or {})
    for item in args.param or []:
        if "=" not in item:
            raise CLIError(f"--param expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if k not in spec.parameters:
            raise CLIError(
                f"--param: unknown parameter {k!r} (known: {', '.join(spec.parameters)})"
            )
        try:
            truth[k] = float(v)
        except ValueError:
            raise CLIError(f"--param {k}: {v!r} is not a number") from None
    key = jax.random.PRNGKey(args.seed)
    k_prior, _k_times, k_sim = jax.random.split(key, 3)
    prior = spec.sample_prior(k_prior)
    params = {p: truth.get(p, prior[p]) for p in spec.parameters}
    model = spec.build(params)
    if spec.inputs:
        raise CLIError(f"{spec.name} has inputs: simulate needs an input series (not supported)")
    rng = np.random.default_rng(args.seed)
    gaps = np.full(args.n - 1, args.dt) if args.regular else rng.exponential(args.dt, args.n - 1)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    sim = simulate(model, times, k_sim)
    y = np.asarray(sim.observations)
    header = ",".join(["time", *spec.manifest])
    rows = np.column_stack([times, y])
    out = sys.stdout if args.out in (None, "-") else open(args.out, "w")
    try:
        out.write(
            f"# simulated from {spec.name} with "
            + ", ".join(
                f"{k}={float(np.asarray(v)):.6g}" for k, v in params.items() if np.ndim(v) == 0
            )
            + f"; seed={args.seed}\n"
        )
        out.write(header + "\n")
        # Every digit (Python's shortest exact repr): the file reads back to the
        # simulated values, and close times of a long series stay distinct.
        for r in rows.tolist():
            out.write(",".join(map(repr, r)) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
            print(f"wrote {args.out} ({args.n} rows)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kalmanad",
        description="Fit continuous-time linear SDE models to time series (NumPyro NUTS).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("models", help="list the model zoo")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("describe", help="describe a model spec")
    s.add_argument("model", help="zoo name or path to a .toml spec")
    s.set_defaults(func=cmd_describe)

    s = sub.add_parser("fit", help="sample a model's posterior with NUTS")
    s.add_argument("model", help="zoo name or path to a .toml spec")
    s.add_argument("data", nargs="?", help="CSV in long format (default: the bundled data)")
    s.add_argument("--time", help="name of the time column (default: the spec's, or 'time')")
    s.add_argument("--subject", help="name of the subject column (optional)")
    s.add_argument("--draws", type=int, default=500, help="posterior draws per chain")
    s.add_argument("--warmup", type=int, default=500, help="warm-up iterations per chain")
    s.add_argument("--chains", type=int, default=2, help="number of chains")
    s.add_argument(
        "--chain-method", default="vectorized", choices=["vectorized", "parallel", "sequential"]
    )
    s.add_argument(
        "--init",
        default="median",
        choices=["median", "map"],
        help="chain starts: the prior median, or draws around the posterior mode (fit_map) "
        "with its Laplace covariance as the initial mass matrix; try map when warm-up is slow",
    )
    s.add_argument(
        "--dense-mass",
        action="store_true",
        help="adapt a dense mass matrix (correlated parameters, e.g. a CT-VAR drift)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="kalmanad_out", help="output folder (netCDF and PNG)")
    s.add_argument("--no-plot", action="store_true")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("simulate", help="simulate data from a model (CSV to stdout or --out)")
    s.add_argument("model", help="zoo name or path to a .toml spec")
    s.add_argument("--n", type=int, default=200, help="number of observation times")
    s.add_argument("--dt", type=float, default=1.0, help="mean gap between times")
    s.add_argument("--regular", action="store_true", help="regular instead of random gaps")
    s.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="parameter value (default: the spec's truth, else a prior draw)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="CSV file (default: stdout)")
    s.set_defaults(func=cmd_simulate)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"kalmanad: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kalmanad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
