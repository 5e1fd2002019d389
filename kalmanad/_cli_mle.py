"""``kalmanad fit --method mle``: maximum likelihood from the command line.

Prints :meth:`kalmanad.mle.MLEResult.summary` and writes ``OUT/<model>_mle.csv`` (one
row per parameter: estimate, se, z, p, Wald bounds, and profile bounds with
``--profile``) and ``OUT/<model>_mle.json`` (the fit statistics and the table), each
written completely or not at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["add_mle_options", "run_mle"]


def add_mle_options(parser) -> None:
    """The options of ``fit`` that only ``--method mle`` reads."""
    parser.add_argument(
        "--start",
        action="append",
        metavar="NAME=VALUE",
        help="(--method mle) start value of a parameter on its natural scale; repeat for "
        "several (the others start at the prior median, a flat prior's at 0 or 1)",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=3,
        metavar="N",
        help="(--method mle) number of optimiser starts (default 3)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="(--method mle) also compute profile-likelihood intervals (one re-optimisation "
        "per bound and trial point)",
    )


def _parse_starts(items, error) -> dict:
    start = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number):
            raise error(f"--start {item!r}: expected NAME=VALUE with a finite number")
        start[name.strip()] = number
    return start


def run_mle(args, spec, data, arrays, error, written_when_complete) -> int:
    """Fit by maximum likelihood, print the summary and write the estimates.

    Args:
        arrays: ``(times, y, inputs, kwargs)`` in the layout the spec's model takes.
        error: the CLI's one-line error class (exit status 2).
        written_when_complete: the CLI's atomic-write context manager.
    """
    from kalmanad.mle import NotIdentifiedError, fit_mle

    if args.starts < 1:
        raise error(f"--starts must be at least 1, got {args.starts}")
    start = _parse_starts(args.start, error)
    times, y, inputs, kwargs = arrays
    try:
        result = fit_mle(
            spec,
            times,
            y,
            inputs,
            start=start or None,
            num_starts=args.starts,
            seed=args.seed,
            **kwargs,
        )
    except NotIdentifiedError as e:
        raise error(f"{spec.name}: {e}") from None
    except ValueError as e:
        raise error(f"{spec.name}: {str(e).splitlines()[0]}") from None
    if args.profile:
        result.profile()
    print(result.summary())
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        csv_path = out / f"{spec.name}_mle.csv"
        with written_when_complete(csv_path) as tmp:
            result.to_dataframe().to_csv(tmp, float_format="%.17g")
        print(f"wrote {csv_path}")
        payload = result.to_dict()
        payload["data"] = str(data.path) if data.path is not None else None
        if args.profile:
            payload["profile"] = {
                n: [b if math.isfinite(b) else None for b in bounds]
                for n, bounds in result.profile().items()
            }
        json_path = out / f"{spec.name}_mle.json"
        with written_when_complete(json_path) as tmp:
            Path(tmp).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {json_path}")
    except OSError as e:
        raise error(f"--out {out}: cannot write: {e.strerror or e}") from None
    return 0
