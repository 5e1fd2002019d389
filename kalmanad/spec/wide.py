"""Panels in wide format (ctsem's layout): one row per subject, one column per wave.

ctsem's wide data hold, for a panel of K waves, the columns ``Y1_T0 … Y1_T{K-1}`` of
each manifest variable, ``TD1_T0 … TD1_T{K-1}`` of each time-dependent input, one
column per time-independent covariate (no suffix), and the intervals ``dT1 … dT{K-1}``
(``dTk`` the time from wave k-1 to wave k). :func:`read_wide` does what ctsem's
``ctWideToLong`` followed by ``ctDeintervalise`` do: it returns the long format of
:class:`~kalmanad.spec.data.ModelData` (one row per subject and wave, absolute times
``t_0 = start_time``, ``t_k = t_{k-1} + dTk``), which :meth:`ModelData.to_panel`
packs into padded per-subject arrays and ``fit_nuts``/``fit_map``/the model's
distribution take as it is (``**data.model_kwargs()``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kalmanad.spec.data import CsvTable, DataError, ModelData, header_and_body
from kalmanad.spec.errors import suggest

__all__ = ["read_wide"]


class _Source:
    """The columns of a CSV file or a DataFrame as floats, with row names for messages."""

    def __init__(self, source):
        if isinstance(source, (str, Path)):
            self.path = Path(source)
            self.where = str(self.path)
            self.header, body = header_and_body(self.path, [])
            self._table = CsvTable(self.where, self.header, body)
            self.rows = [f"line {ln}" for ln, _ in body]
            self._frame = None
        elif hasattr(source, "columns") and hasattr(source, "index"):
            self.path = None
            self.where = "the DataFrame"
            self.header = [str(c) for c in source.columns]
            dup = sorted({h for h in self.header if self.header.count(h) > 1})
            if dup:
                raise DataError(f"{self.where}: duplicate column(s) {', '.join(map(repr, dup))}")
            self._frame = source
            self.rows = [f"row {i!r}" for i in source.index]
        else:
            raise TypeError(
                "read_wide takes a pandas DataFrame or the path of a CSV file, got "
                f"{type(source).__name__}"
            )
        if not self.rows:
            raise DataError(f"{self.where}: no data rows")

    def numbers(self, name: str) -> np.ndarray:
        """Column ``name`` as floats, missing cells NaN."""
        if self._frame is None:
            return self._table.numbers(name, allow_missing=True)
        col = self._frame[self._frame.columns[self.header.index(name)]]
        try:
            values = np.asarray(col, dtype=float)
        except (TypeError, ValueError):
            raise DataError(f"{self.where}: column {name!r} is not numeric") from None
        bad = np.flatnonzero(np.isinf(values))
        if bad.size:
            raise DataError(
                f"{self.where}: {self.rows[bad[0]]}, column {name!r}: {values[bad[0]]} "
                "is not finite"
            )
        return values

    def labels(self, name: str) -> list:
        """Column ``name`` as subject labels (strings)."""
        if self._frame is None:
            return self._table.subjects(name)
        col = self._frame[self._frame.columns[self.header.index(name)]]
        out = []
        for row, v in zip(self.rows, col, strict=True):
            if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
                raise DataError(f"{self.where}: {row}, column {name!r}: missing subject id")
            out.append(str(v).strip())
        return out

    def unknown(self, what: str, name: str, hint: str = "") -> DataError:
        return DataError(
            f"{self.where}: unknown {what} {name!r}{suggest(name, self.header)}{hint} "
            f"(the columns are: {', '.join(self.header)})"
        )


def _waves(src: _Source, name: str, sep: str, what: str) -> list[str]:
    """The wave columns ``name{sep}0 …`` of a variable, checked to be 0..K-1."""
    pattern = re.compile(re.escape(name + sep) + r"(\d+)")
    found = {}
    for h in src.header:
        m = pattern.fullmatch(h)
        if m:
            found[int(m.group(1))] = h
    if not found:
        stem = re.compile(r"(.+)" + re.escape(sep) + r"\d+")
        stems = sorted({m.group(1) for h in src.header if (m := stem.fullmatch(h))})
        raise DataError(
            f"{src.where}: unknown {what} {name!r}{suggest(name, stems)}: no columns "
            f"{name}{sep}0, {name}{sep}1, … (the variables with wave columns are: "
            f"{', '.join(stems) or 'none'})"
        )
    k = len(found)
    gaps = sorted(set(range(k)) - set(found))
    if gaps:
        raise DataError(
            f"{src.where}: {what} {name!r} has wave columns {sorted(found)} but no "
            f"{name}{sep}{gaps[0]}: waves must be numbered 0, 1, …, K-1"
        )
    return [found[i] for i in range(k)]


def _wave_columns(src, manifest, inputs, sep):
    """Per variable, its wave columns; all with the same number of waves K."""
    cols = {}
    for what, names in (("manifest variable", manifest), ("input", inputs)):
        for name in names:
            cols[name] = _waves(src, name, sep, what)
    counts = {name: len(c) for name, c in cols.items()}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{n}: {k}" for n, k in counts.items())
        raise DataError(
            f"{src.where}: inconsistent wave counts ({shown}): every manifest variable and "
            "input needs the same waves"
        )
    return cols, next(iter(counts.values()))


def _interval_columns(src, interval: str, k: int) -> list[str]:
    names = [f"{interval}{i}" for i in range(1, k)]
    missing = [c for c in names if c not in src.header]
    if missing:
        raise src.unknown(
            "interval column", missing[0], f": {k} waves need the intervals {', '.join(names)}"
        )
    extra = f"{interval}{k}"
    if extra in src.header:
        raise DataError(
            f"{src.where}: column {extra!r} is an interval to wave {k}, but the manifest "
            f"variables have {k} waves (0..{k - 1}): inconsistent wave counts"
        )
    return names


def read_wide(
    source,
    *,
    manifest: Sequence[str],
    inputs: Sequence[str] = (),
    covariates: Sequence[str] = (),
    subject: str | None = None,
    start_time: float = 0.0,
    interval: str = "dT",
    sep: str = "_T",
) -> ModelData:
    """Read a panel in ctsem's wide format into the long format (ctsem's
    ``ctWideToLong`` + ``ctDeintervalise``).

    Args:
        source: a pandas DataFrame, or the path of a CSV file (read as
            :func:`~kalmanad.spec.data.read_csv` reads one: ``#`` comment lines,
            empty cells and NA/NaN are missing).
        manifest: the manifest variables, in the model's order; variable ``Y1`` has the
            columns ``Y1_T0 … Y1_T{K-1}`` (``sep`` between name and wave).
        inputs: the time-dependent inputs (ctsem's TDpreds), columns ``TD1_T0 …``, in
            the model's input order; the same K waves.
        covariates: time-independent covariates (ctsem's TIpreds), one column each.
        subject: the subject-id column (ctsem's ``id``); None (default, as ctsem's
            ``ctWideToLong``): the subjects are labelled "1", "2", … by row.
        start_time: the time of wave 0 of every subject.
        interval: the stem of the interval columns: ``dT1 … dT{K-1}``, ``dTk`` the time
            from wave k-1 to wave k.
        sep: the separator of a variable's name and its wave number.

    Returns:
        :class:`~kalmanad.spec.data.ModelData` in long format: ``times`` (N,), ``y``
        (N, m) with NaN for missing values, ``subject`` (N,) labels, ``inputs`` (N, p) or
        None, ``covariates`` name -> (N,), one row per subject and wave, subjects in row
        order. A wave whose manifest and input values are all missing is left out: its
        interval still counts when given, and counts as 0 when missing (ctsem fills
        those with its tiny ``mininterval``), so the next interval counts from the
        wave before. Ragged panels (waves missing at the end) thus get fewer rows, and
        the initial state applies at each subject's first wave with data, where ctsem's
        T0 parameters apply.

    Raises:
        DataError: an unknown column (with suggestions), waves not numbered 0..K-1 or
            different wave counts, a missing interval (naming the row and column)
            where the wave has data, a negative interval, a missing input or
            covariate value, duplicate subject ids, or a subject with no wave left.
    """
    src = _Source(source)
    manifest, inputs, covariates = list(manifest), list(inputs), list(covariates)
    if not manifest:
        raise ValueError("read_wide needs at least one manifest variable")
    for name in covariates:
        if name not in src.header:
            raise src.unknown("covariate", name)
    if subject is not None and subject not in src.header:
        raise src.unknown("subject column", subject)
    cols, k = _wave_columns(src, manifest, inputs, sep)
    dt_cols = _interval_columns(src, interval, k)

    n_rows = len(src.rows)
    y = np.stack([[src.numbers(c) for c in cols[x]] for x in manifest], axis=-1)  # (K, R, m)
    u = None
    if inputs:
        u = np.stack([[src.numbers(c) for c in cols[x]] for x in inputs], axis=-1)
    dt = np.stack([src.numbers(c) for c in dt_cols]) if dt_cols else np.zeros((0, n_rows))
    subjects = src.labels(subject) if subject else [str(r + 1) for r in range(n_rows)]
    dup = sorted({s for s in subjects if subjects.count(s) > 1})
    if dup:
        raise DataError(
            f"{src.where}: subject id {dup[0]!r} appears on several rows; wide data have "
            "one row per subject"
        )
    cov = {name: src.numbers(name) for name in covariates}
    for name, values in cov.items():
        bad = np.flatnonzero(np.isnan(values))
        if bad.size:
            raise DataError(f"{src.where}: {src.rows[bad[0]]}, column {name!r}: missing value")

    empty = np.isnan(y).all(axis=-1)  # (K, R): waves with no observation
    if u is not None:
        empty &= np.isnan(u).all(axis=-1)
    keep = _check_intervals(src, dt, dt_cols, empty)
    times = _absolute_times(dt, start_time)
    if u is not None:
        bad = np.argwhere(np.isnan(u) & keep[..., None])
        if bad.size:
            w, r, j = (int(i) for i in bad[np.lexsort((bad[:, 0], bad[:, 1]))[0]])
            raise DataError(
                f"{src.where}: {src.rows[r]}, column {cols[inputs[j]][w]!r}: missing input "
                "value (inputs may only be missing on a wave with no data)"
            )
    none_left = np.flatnonzero(~keep.any(axis=0))
    if none_left.size:
        raise DataError(
            f"{src.where}: {src.rows[none_left[0]]} (subject {subjects[none_left[0]]!r}) "
            "has no observed wave"
        )
    # Long format: subject by subject, waves in order.
    row = np.nonzero(keep.T)[0]
    return ModelData(
        times=times.T[keep.T],
        y=y.transpose(1, 0, 2)[keep.T],
        subject=np.array([subjects[r] for r in row]),
        inputs=None if u is None else u.transpose(1, 0, 2)[keep.T],
        covariates={name: v[row] for name, v in cov.items()},
        path=src.path,
    )


def _check_intervals(src, dt, dt_cols, empty) -> np.ndarray:
    """The (K, R) waves to keep (those with data); raises on a negative interval or a
    missing one where the wave has data."""
    neg = np.argwhere(dt < 0)
    if neg.size:
        i, r = (int(v) for v in neg[np.lexsort((neg[:, 0], neg[:, 1]))[0]])
        raise DataError(
            f"{src.where}: {src.rows[r]}, column {dt_cols[i]!r}: negative interval "
            f"{dt[i, r]:g} (the time from wave {i} to wave {i + 1} must be >= 0)"
        )
    missing = np.isnan(dt)  # (K-1, R): the interval to wave i+1
    bad = np.argwhere(missing & ~empty[1:])
    if bad.size:
        i, r = (int(v) for v in bad[np.lexsort((bad[:, 0], bad[:, 1]))[0]])
        raise DataError(
            f"{src.where}: {src.rows[r]}, column {dt_cols[i]!r}: missing interval, but wave "
            f"{i + 1} has data (an interval may only be missing where its wave is entirely "
            "missing)"
        )
    return ~empty


def _absolute_times(dt, start_time: float) -> np.ndarray:
    """(K, R) times: ``start_time`` at wave 0, then the intervals summed; a missing
    interval (to a wave with no data) adds nothing, like ctsem's ``mininterval`` filler."""
    steps = np.where(np.isnan(dt), 0.0, dt)
    start = np.full((1, dt.shape[1]), float(start_time))
    return np.concatenate([start, start + np.cumsum(steps, axis=0)])
