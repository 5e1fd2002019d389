"""Flag an NUTS slowdown between two ``bench_nuts`` results, e.g. across a dependency upgrade.

Usage (before and after upgrading jax, jaxlib or numpyro, on the same machine)::

    python benchmarks/bench_nuts.py --quick             # before: keep its result
    cp benchmarks/results/bench_nuts_quick.json /tmp/before.json
    pip install -U jax jaxlib numpyro
    python benchmarks/bench_nuts.py --quick             # after
    python benchmarks/nuts_regression.py /tmp/before.json benchmarks/results/bench_nuts_quick.json

For every (model, contender) in both results it compares the gradient evaluations per
second (the sampler's work rate: it does not depend on the number of leapfrog steps the
sampler chooses) and the effective samples per second, prints the versions of jax,
jaxlib, numpyro and numpy in each, and exits with status 1 when the gradient rate of a
kalmanad contender fell by more than ``--factor`` (default 2: timings on a shared machine
vary by tens of per cent; the slowdown of pyro-ppl/numpyro#2225 is 100-200x). A
different machine (backend, device, CPU count, dtype) is reported, since then the rates
are not comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VERSIONS = ("jax", "jaxlib", "numpyro", "numpy")
MACHINE = ("backend", "device", "cpu_count", "dtype")


def compare(before: dict, after: dict, factor: float = 2.0) -> tuple[list[str], list[str]]:
    """``(report lines, flagged lines)`` for two ``bench_nuts`` result payloads."""
    lines = []
    mb, ma = before.get("machine", {}), after.get("machine", {})
    changed = [f"{k} {mb.get(k)} -> {ma.get(k)}" for k in VERSIONS if mb.get(k) != ma.get(k)]
    lines.append("versions: " + (", ".join(changed) if changed else "unchanged"))
    other = [f"{k} {mb.get(k)} -> {ma.get(k)}" for k in MACHINE if mb.get(k) != ma.get(k)]
    if other:
        lines.append("different machine (rates not comparable): " + ", ".join(other))
    rows_before = {(r["model"], r["contender"]): r for r in before["summary"]}
    flagged = []
    for row in after["summary"]:
        key = (row["model"], row["contender"])
        old = rows_before.get(key)
        if old is None:
            continue
        grad = row["grad_evals_per_s"] / old["grad_evals_per_s"]
        ess = row["ess_per_s"] / old["ess_per_s"]
        line = (
            f"{key[0]:>4} {key[1]:<14} gradient evaluations/s x{grad:.3g} "
            f"({old['grad_evals_per_s']:.4g} -> {row['grad_evals_per_s']:.4g}), "
            f"ESS/s x{ess:.3g}"
        )
        lines.append(line)
        if key[1].startswith("kalmanad") and grad < 1.0 / factor:
            flagged.append(line)
    return lines, flagged


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path, help="bench_nuts JSON before the change")
    p.add_argument("after", type=Path, help="bench_nuts JSON after the change")
    p.add_argument(
        "--factor", type=float, default=2.0, help="flag a gradient rate lower by this factor"
    )
    args = p.parse_args(argv)
    before = json.loads(args.before.read_text())
    after = json.loads(args.after.read_text())
    lines, flagged = compare(before, after, args.factor)
    print("\n".join(lines))
    if flagged:
        print(f"NUTS SLOWDOWN (more than {args.factor:g}x):", file=sys.stderr)
        print("\n".join(flagged), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
