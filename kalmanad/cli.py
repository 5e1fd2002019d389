"""The ``kalmanad`` command.

    kalmanad models                       list the model zoo
    kalmanad describe MODEL               show a model's variables, priors and matrices
    kalmanad fit MODEL [DATA.csv]         NUTS posterior: summary table, netCDF, plot
                 ... --method mle         maximum likelihood: estimates, SEs, AIC/BIC
    kalmanad simulate MODEL               simulate a data set from a model

MODEL is a zoo name (``kalmanad models``) or the path of a TOML spec. Without DATA,
``fit`` uses the model's bundled default data. A bad model or CSV gives a one-line
error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from kalmanad._cli_mle import add_mle_options
from kalmanad._cli_plots import dt_effects as dt_effects  # re-exported: cli.dt_effects
from kalmanad._cli_plots import plot_dt_effects, plot_fit

EXIT_USAGE = 2

#: The filters ``fit --method`` offers (kalmanad.filter.METHODS).
FILTER_METHODS = ("sequential", "sqrt", "parallel")
# fit --plot KIND: the figure's file name, OUT/<model>_<name>.png
PLOT_FILES = {"states": "fit", "dt-effects": "dt_effects"}

CSV_LAYOUT = """\
DATA is a CSV in long format, one row per observation time (and subject):

  time,y1,y2            a time column (--time; default the spec's [data] time,
  0.0,1.25,0.3            else 'time'), one column per manifest variable named as
  0.7,,0.1                in the spec (or mapped by its [data] columns), one per
  0.7,1.1,                input and covariate, and for a panel a subject column
  1.9,NA,0.4              (--subject; default the spec's, else 'subject').

Other columns are ignored. Empty cells and NA/NaN are missing observations (manifest
columns only). Lines starting with '#' are comments. Times are sorted within each
subject; rows may share a time (ties), but a time may not decrease or be missing.
Without DATA the model's bundled data are used.
"""


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Options and positional arguments in any order; usage errors as one line.

    argparse fills an optional positional (``fit MODEL [DATA]``) with the first group of
    positional strings, so ``fit ou --time t data.csv`` would leave ``data.csv``
    unrecognised; intermixed parsing reads the options first, then the positionals.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')")


@contextlib.contextmanager
def _written_when_complete(target: Path):
    """Yield a temporary path next to ``target``; rename it to ``target`` on success.

    A run that fails or is interrupted leaves no partial file (and no temporary one).
    """
    target = Path(target)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# XLA's older CPU fusion emitters compile the sampler about twice as fast, at 10-20%
# more run time per gradient; for a command whose wall time is mostly compilation that is a
# clear win. Applied only when the user's XLA_FLAGS do not mention the option and this
# jaxlib still has it (kalmanad._xla.with_fast_compile).


def _compilation_cache_dir() -> str | None:
    """Where the command keeps compiled programs between runs (None: nowhere).

    ``$KALMANAD_CACHE_DIR`` (empty or ``off`` disables it), else
    ``$XDG_CACHE_HOME/kalmanad/jax`` (``~/.cache/kalmanad/jax``). A ``JAX_COMPILATION_CACHE_DIR``
    of the user's own is left to JAX.
    """
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


def _check_fit_options(args) -> None:
    """Option values that argparse's types do not rule out, checked before any work."""
    for option, value in (("--draws", args.draws), ("--warmup", args.warmup)):
        if value < 0 or (option == "--draws" and value == 0):
            least = "1" if option == "--draws" else "0"
            raise CLIError(f"{option} must be at least {least}, got {value}")
    if args.chains < 1:
        raise CLIError(f"--chains must be at least 1, got {args.chains}")
    if args.seed < 0:
        raise CLIError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.checkpoint is not None:
        if args.checkpoint < 1:
            raise CLIError(f"--checkpoint must be a positive segment length, got {args.checkpoint}")
        if args.method == "parallel":
            raise CLIError(
                "--checkpoint applies to --method sequential or sqrt (the parallel filter has "
                "no sequential segments to rematerialise): drop one of them"
            )
    if args.no_plot and args.plot:
        raise CLIError("--plot and --no-plot contradict each other: drop one")
    _check_out_dir(Path(args.out))


def _check_out_dir(out: Path) -> None:
    """The output folder must be a folder (or creatable): checked before sampling."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a folder")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out}: cannot write in {parent}")


def _format_summary(summary, truth=None) -> str:
    """The ArviZ summary as text: every row and column, ESS as integers, R-hat to 0.01.

    Point estimates, intervals and Monte Carlo errors keep 4 significant digits, so
    small and large parameters both read well. pandas' display options are set only
    inside this function.
    """
    import pandas as pd

    table = summary.copy()
    if truth:
        table["truth"] = [truth.get(str(k).split("[")[0], np.nan) for k in table.index]

    # pandas writes missing values (R-hat of one chain, an unknown truth) as NaN itself.
    formatters = {
        c: "{:.0f}".format
        if c.startswith("ess")
        else "{:.2f}".format
        if c == "r_hat"
        else "{:.4g}".format
        for c in table.columns
    }
    with pd.option_context(
        "display.max_rows", None, "display.max_columns", None, "display.width", None
    ):
        return table.to_string(formatters=formatters)


def _write_netcdf(idata, path: Path) -> None:
    with _written_when_complete(path) as tmp:
        idata.to_netcdf(str(tmp))


def cmd_fit(args) -> int:
    _check_fit_options(args)
    _enable_x64()
    spec = _load(args.model)
    data, default = _read(spec, args.data, args.time, args.subject)
    times, y, inputs, kwargs, subjects = _arrays(spec, data)
    if args.method == "mle":
        from kalmanad._cli_mle import run_mle

        arrays = (times, y, inputs, kwargs)
        return run_mle(args, spec, data, arrays, CLIError, _written_when_complete)

    import arviz as az

    from kalmanad.inference import fit_nuts

    source = data.path if data.path is not None else "(in memory)"
    n_obs = int(np.isfinite(y).sum())
    shape = "x".join(str(s) for s in np.shape(y))
    print(f"kalmanad fit {spec.name}: {source} ({shape} array, {n_obs} observed values)")
    filter_options = {"method": args.method, "checkpoint": args.checkpoint}
    try:
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
            pointwise=not args.no_pointwise,
            **filter_options,
            **kwargs,
        )
    except RuntimeError as e:
        if "Cannot find valid initial parameters" not in str(e):
            raise
        also = "" if args.init == "map" else "; try --init map"
        raise CLIError(
            f"{spec.name}: the log-density is not finite at any starting point tried near "
            "the prior median: check that typical prior draws give a stable drift (a "
            "stationary start needs one; or set [initial] state = 'diffuse'), positive "
            "variances, data on the scale the priors expect, and a drift that is not stiff "
            "over the longest gap (|A|*gap in the millions overflows: measure time in larger "
            f"units){also}"
        ) from None
    names = [p for p in spec.parameters if p in idata.posterior.data_vars]
    names += [d for d in spec.derived if d in idata.posterior.data_vars]
    summary = az.summary(idata, var_names=names, round_to="none")
    truth = getattr(spec.data, "truth", None) if default else None
    print(_format_summary(summary, truth))
    n_div = int(idata.sample_stats["diverging"].values.sum())
    print(f"divergent transitions: {n_div}")

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        nc = out / f"{spec.name}_fit.nc"
        _write_netcdf(idata, nc)
        print(f"wrote {nc}")
        plots = [] if args.no_plot else list(dict.fromkeys(args.plot or ["states"]))
        for kind in plots:
            png = out / f"{spec.name}_{PLOT_FILES[kind]}.png"
            draw = plot_fit if kind == "states" else plot_dt_effects
            with _written_when_complete(png) as tmp:
                draw(spec, idata, times, y, inputs, kwargs, subjects, tmp)
            print(f"wrote {png}")
    except OSError as e:
        raise CLIError(f"--out {out}: cannot write: {e.strerror or e}") from None
    return 0


def _read_inputs(spec, path: str):
    from kalmanad.spec import DataError

    if not Path(path).is_file():
        raise CLIError(f"{path}: no such file")
    try:
        return spec.read_inputs(path)
    except DataError as e:
        raise CLIError(str(e)) from None


def _simulate_observations(spec, model, times, inputs, key) -> np.ndarray:
    """Observations simulated at ``times``; a stiff, stable model falls back soundly.

    The default (Van Loan) discretisation overflows when ‖A‖·Δt is huge (a fast-decaying
    state over a long gap). For a stable drift the stationary discretisation is exact
    and stays finite, so it is used instead (with a note on stderr); for an unstable one
    the message says what to change.
    """
    from kalmanad.statespace import simulate

    try:  # an overflowing discretisation is a named ValueError
        y = np.asarray(simulate(model, times, key, inputs).observations)
    except ValueError:
        y = np.full(1, np.nan)
    if np.all(np.isfinite(y)):
        return y
    drift = np.asarray(model.drift)
    stable = bool(np.all(np.linalg.eigvals(drift).real < 0))
    if stable:
        y = np.asarray(
            simulate(model, times, key, inputs, discretization="stationary").observations
        )
        if np.all(np.isfinite(y)):
            print(
                f"kalmanad: note: {spec.name}: the drift is stiff for these gaps (the Van Loan "
                "discretisation overflows); simulated with the stationary discretisation",
                file=sys.stderr,
            )
            return y
    largest = float(np.max(np.diff(times))) if len(times) > 1 else 0.0
    scale = float(np.max(np.abs(drift))) * largest
    raise CLIError(
        f"{spec.name}: the simulation overflows (non-finite values): the drift is "
        f"{'stable but stiff' if stable else 'not stable'} and |A|*gap reaches {scale:.3g}; "
        "shorten the gaps (--dt), measure time in larger units, or choose parameters "
        "with a stable drift"
    )


def _prior_draw(spec, given: dict, key) -> dict:
    """A prior draw of the parameters; flat priors (no draws) take the given values."""
    import numpyro
    from numpyro.distributions import ImproperUniform

    flat = [k for k, d in spec.priors.items() if isinstance(d, ImproperUniform)]
    missing = [k for k in flat if k not in given]
    if missing:
        raise CLIError(
            f"{', '.join(missing)}: a flat prior has no draws; give a value with "
            f"--param {missing[0]}=VALUE (or a [data.truth] in the spec)"
        )
    with numpyro.handlers.substitute(data={k: given[k] for k in flat}):
        return spec.sample_prior(key)


def _check_simulate_options(args) -> None:
    if args.n < 1:
        raise CLIError(f"--n must be at least 1, got {args.n}")
    if not (math.isfinite(args.dt) and args.dt > 0):
        raise CLIError(f"--dt must be a positive number, got {args.dt}")
    if args.seed < 0:
        raise CLIError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.out not in (None, "-"):
        target = Path(args.out)
        if target.is_dir():
            raise CLIError(f"--out {target}: is a folder; give a file name")
        if not target.parent.is_dir():
            raise CLIError(f"--out {target}: the folder {target.parent} does not exist")


def _given_parameters(spec, items) -> dict:
    """The spec's ``[data.truth]`` values updated by ``--param NAME=VALUE`` items."""
    truth = dict(getattr(spec.data, "truth", None) or {})
    for item in items or []:
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
        if not math.isfinite(truth[k]):
            raise CLIError(f"--param {k}: {v!r} is not a finite number")
    return truth


def _simulation_times(spec, args):
    """(times, inputs): the ``--inputs`` file's for a model with inputs, else ``--n``
    times with exponential (or, ``--regular``, constant) gaps of mean ``--dt``."""
    if spec.inputs:
        if args.inputs is None:
            names = ", ".join(spec.inputs)
            raise CLIError(
                f"{spec.name} has inputs ({names}): give their series with --inputs FILE.csv "
                "(a time column and one column per input; the simulation uses its times)"
            )
        return _read_inputs(spec, args.inputs)
    if args.inputs is not None:
        raise CLIError(f"--inputs: {spec.name} has no inputs")
    rng = np.random.default_rng(args.seed)
    gaps = np.full(args.n - 1, args.dt) if args.regular else rng.exponential(args.dt, args.n - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)]), None


def _write_simulation(args, comment: str, columns: list, rows: np.ndarray) -> None:
    def write(out) -> None:
        out.write(comment)
        out.write(",".join(columns) + "\n")
        # Every digit (Python's shortest exact repr): the file reads back to the
        # simulated values, and close times of a long series stay distinct.
        for r in rows.tolist():
            out.write(",".join(map(repr, r)) + "\n")

    if args.out in (None, "-"):
        write(sys.stdout)
        return
    try:
        with _written_when_complete(Path(args.out)) as tmp, open(tmp, "w") as out:
            write(out)
    except OSError as e:
        raise CLIError(f"--out {args.out}: cannot write: {e.strerror or e}") from None
    print(f"wrote {args.out} ({len(rows)} rows)", file=sys.stderr)


def cmd_simulate(args) -> int:
    _enable_x64()
    import jax

    _check_simulate_options(args)
    spec = _load(args.model)
    if spec.is_hierarchical:
        raise CLIError(f"{spec.name} is hierarchical: simulate one subject's model instead")
    truth = _given_parameters(spec, args.param)
    key = jax.random.PRNGKey(args.seed)
    k_prior, _k_times, k_sim = jax.random.split(key, 3)
    prior = _prior_draw(spec, truth, k_prior)
    params = {p: truth.get(p, prior[p]) for p in spec.parameters}
    try:
        model = spec.build(params)
    except ValueError as e:
        raise CLIError(f"{spec.name}: no valid model at these parameters: {e}") from None
    times, inputs = _simulation_times(spec, args)
    y = _simulate_observations(spec, model, times, inputs, k_sim)
    columns = ["time", *spec.manifest]
    rows = np.column_stack([times, y])
    if inputs is not None:
        _, input_columns, _ = spec.data_columns()
        columns += [input_columns[x] for x in spec.inputs]
        rows = np.column_stack([rows, inputs])
    comment = (
        f"# simulated from {spec.name} with "
        + ", ".join(f"{k}={float(np.asarray(v)):.6g}" for k, v in params.items() if np.ndim(v) == 0)
        + f"; seed={args.seed}\n"
    )
    _write_simulation(args, comment, columns, rows)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="kalmanad",
        description="Fit continuous-time linear SDE models to time series (NumPyro NUTS).",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("models", help="list the model zoo")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("describe", help="describe a model spec")
    s.add_argument("model", help="zoo name, or path to a .toml spec or .kal equations")
    s.set_defaults(func=cmd_describe)

    s = sub.add_parser(
        "fit",
        help="sample a model's posterior with NUTS, or fit it by maximum likelihood",
        description="Sample a model's posterior with NUTS: print the summary, write\n"
        "OUT/<model>_fit.nc and OUT/<model>_fit.png. With --method mle, fit by maximum\n"
        "likelihood instead: print the estimates with standard errors, write\n"
        "OUT/<model>_mle.csv and OUT/<model>_mle.json. Options and arguments may come\n"
        "in any order.",
        epilog=CSV_LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("model", help="zoo name, or path to a .toml spec or .kal equations")
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
    s.add_argument(
        "--method",
        default="sequential",
        choices=(*FILTER_METHODS, "mle"),
        help="Kalman filter of the NUTS fit: sequential (default), sqrt (square-root, for "
        "ill-conditioned models) or parallel (associative scan, for long series on an "
        "accelerator); or mle: maximum likelihood (kalmanad.mle.fit_mle, sequential filter)",
    )
    s.add_argument(
        "--checkpoint",
        type=int,
        metavar="K",
        help="rematerialise the filter's gradient in segments of K steps: memory "
        "O(T/K + K) instead of O(T) for long series (sequential and sqrt)",
    )
    s.add_argument(
        "--no-pointwise",
        action="store_true",
        help="leave the per-time log-likelihood (for arviz.loo) out of the netCDF: "
        "it takes draws x chains x times x 8 bytes",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="kalmanad_out", help="output folder (netCDF and PNG)")
    s.add_argument(
        "--plot",
        action="append",
        choices=list(PLOT_FILES),
        metavar="KIND",
        help="figure to write (repeat for several; default: states): states = smoothed "
        "signal and data (OUT/<model>_fit.png); dt-effects = discrete-time auto- and "
        "cross-effects e^(AΔt) of the latent states against the interval Δt, ctsem-style "
        "(OUT/<model>_dt_effects.png)",
    )
    s.add_argument("--no-plot", action="store_true", help="write no figure")
    s.add_argument("--no-progress", action="store_true")
    add_mle_options(s)
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("simulate", help="simulate data from a model (CSV to stdout or --out)")
    s.add_argument("model", help="zoo name, or path to a .toml spec or .kal equations")
    s.add_argument("--n", type=int, default=200, help="number of observation times")
    s.add_argument("--dt", type=float, default=1.0, help="mean gap between times")
    s.add_argument("--regular", action="store_true", help="regular instead of random gaps")
    s.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="parameter value (default: the spec's truth, else a prior draw)",
    )
    s.add_argument(
        "--inputs",
        metavar="FILE.csv",
        help="for a model with inputs: a CSV with a time column and one column per input; "
        "the simulation uses its times (not --n, --dt) and copies the inputs to the output",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="CSV file (default: stdout)")
    s.set_defaults(func=cmd_simulate)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except CLIError as e:
        print(f"kalmanad: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kalmanad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
