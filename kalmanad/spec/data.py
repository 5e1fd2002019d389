"""Data for a spec: long-format CSV files, per-subject panels and their checks."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["DataError", "ModelData", "PanelData", "first_row", "read_csv", "to_panel"]


class DataError(ValueError):
    """A problem in a data file (one line: file, line, column and the problem)."""


class ModelData(NamedTuple):
    """A data set in long format (one row per observation time and subject).

    Attributes:
        times: (N,) observation times (non-decreasing within each subject; ties are
            several rows at one time).
        y: (N, m) observations in the spec's manifest order; NaN = missing.
        subject: (N,) subject labels (strings), or None for a single series.
        inputs: (N, k) time-varying inputs in the spec's input order, or None.
        covariates: name -> (N,) time-independent covariates (constant within
            subject); empty when the spec has none.
        path: the CSV file, or None.
    """

    times: np.ndarray
    y: np.ndarray
    subject: np.ndarray | None
    inputs: np.ndarray | None
    covariates: dict
    path: Path | None

    def model_kwargs(self) -> dict:
        """Keyword arguments for :meth:`ModelSpec.numpyro_model`: times, y and, when
        present, subject, inputs and covariates (long format)."""
        out = {"times": self.times, "y": self.y}
        if self.subject is not None:
            out["subject"] = self.subject
        if self.inputs is not None:
            out["inputs"] = self.inputs
        if self.covariates:
            out["covariates"] = dict(self.covariates)
        return out

    def to_panel(self) -> PanelData:
        """The data as padded per-subject arrays (see :func:`to_panel`)."""
        subject = self.subject if self.subject is not None else np.zeros(len(self.times), int)
        return to_panel(self.times, self.y, subject, self.inputs, self.covariates)


class PanelData(NamedTuple):
    """Per-subject arrays padded to a common length T.

    Attributes:
        times: (S, T) times; a subject with fewer observations is padded by
            repeating its last time (zero-length steps).
        y: (S, T, m) observations; padding is NaN (missing), so it adds nothing to the
            log-likelihood (use ``counts`` to drop the padded entries of pointwise
            results).
        inputs: (S, T, k) inputs (padding zeros) or None.
        covariates: name -> (S,) per-subject covariate values.
        subjects: (S,) subject labels, in order of first appearance.
        counts: (S,) number of real observations of each subject.
    """

    times: np.ndarray
    y: np.ndarray
    inputs: np.ndarray | None
    covariates: dict
    subjects: np.ndarray
    counts: np.ndarray


def to_panel(times, y, subject, inputs=None, covariates=None) -> PanelData:
    """Group long-format data by subject and pad to (S, T, ...) arrays.

    Args:
        times: (N,) times, non-decreasing within each subject (ties allowed).
        y: (N, m) observations (an all-NaN array for prior-predictive use).
        subject: (N,) subject labels of any hashable type.
        inputs: (N, k) inputs or None.
        covariates: name -> (N,) values, constant within subject, or None.

    Returns:
        :class:`PanelData`; subjects in order of first appearance, rows within a
        subject in their original order.

    Raises:
        ValueError: mismatched lengths, times decreasing (or NaN) within a subject,
            or a covariate that varies within a subject.
    """
    times = np.asarray(times, dtype=float)
    if times.ndim != 1:
        raise ValueError(f"times must be (N,) in long format, got shape {times.shape}")
    n = times.shape[0]
    y = np.asarray(y, dtype=float)
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"y must be (N, m) with N={n} (from times), got shape {y.shape}")
    subject = np.asarray(subject)
    if subject.shape != (n,):
        raise ValueError(f"subject must be (N,) with N={n} (from times), got shape {subject.shape}")
    if inputs is not None:
        inputs = np.asarray(inputs, dtype=float)
        if inputs.ndim != 2 or inputs.shape[0] != n:
            raise ValueError(f"inputs must be (N, k) with N={n}, got shape {inputs.shape}")
    labels, first = [], {}
    for s in subject.tolist():
        if s not in first:
            first[s] = len(labels)
            labels.append(s)
    code = np.array([first[s] for s in subject.tolist()], dtype=int)
    n_sub = len(labels)
    counts = np.bincount(code, minlength=n_sub)
    t_max = int(counts.max()) if n_sub else 0
    m = y.shape[1]
    pt = np.zeros((n_sub, t_max))
    py = np.full((n_sub, t_max, m), np.nan)
    pu = None if inputs is None else np.zeros((n_sub, t_max, inputs.shape[1]))
    pcov = {}
    for s in range(n_sub):
        rows = np.flatnonzero(code == s)
        ts = times[rows]
        bad = np.flatnonzero(~(np.diff(ts) >= 0))
        if bad.size:
            k = bad[0]
            raise ValueError(
                f"times must be non-decreasing within subject {labels[s]!r}: time "
                f"{ts[k + 1]!r} (row {rows[k + 1]}) follows {ts[k]!r} (row {rows[k]})"
            )
        c = rows.size
        pt[s, :c] = ts
        pt[s, c:] = ts[-1]
        py[s, :c] = y[rows]
        if pu is not None:
            pu[s, :c] = inputs[rows]
    for name, values in (covariates or {}).items():
        values = np.asarray(values, dtype=float)
        if values.shape != (n,):
            raise ValueError(
                f"covariate {name!r} must be (N,) with N={n}, got shape {values.shape}"
            )
        per = np.empty(n_sub)
        for s in range(n_sub):
            rows = np.flatnonzero(code == s)
            v = values[rows]
            if np.any(v != v[0]):
                raise ValueError(
                    f"covariate {name!r} is not constant within subject {labels[s]!r} "
                    f"(values {v[0]!r} and {v[v != v[0]][0]!r})"
                )
            per[s] = v[0]
        pcov[name] = per
    return PanelData(pt, py, pu, pcov, np.array(labels), counts)


_MISSING = {"", "na", "nan", "n/a", "null", "none", "."}


def _is_comment(row) -> bool:
    return bool(row) and row[0].lstrip().startswith("#")


def first_row(fh) -> list:
    """The first non-comment row of a CSV file (the header), or []."""
    return next((r for r in csv.reader(fh) if not _is_comment(r)), [])


def _show_number(value: float) -> str:
    """A number as short as ``%g`` when that is exact, else every digit (``repr``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def read_csv(path: Path, *, time: str, subject: str | None, manifest, inputs, covariates):
    """Read a long-format CSV; every problem is a one-line DataError."""
    where = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{where}: cannot read: {e}") from None
    # Lines starting with '#' are comments (e.g. the header `kalmanad simulate` writes).
    numbered = [(i + 1, r) for i, r in enumerate(rows) if not _is_comment(r)]
    if not numbered:
        raise DataError(f"{where}: the file is empty")
    header = [h.strip() for h in numbered[0][1]]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataError(f"{where}: duplicate column(s) {', '.join(map(repr, dup))}")
    wanted = [time, *manifest.values(), *inputs.values(), *covariates.values()]
    if subject is not None:
        wanted.append(subject)
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))} "
            f"(the file has: {', '.join(header)})"
        )
    col = {h: i for i, h in enumerate(header)}
    body = [(i, r) for i, r in numbered[1:] if any(c.strip() for c in r)]
    if not body:
        raise DataError(f"{where}: no data rows")

    def number(lineno, r, name, allow_missing):
        j = col[name]
        text = r[j].strip() if j < len(r) else ""
        if text.lower() in _MISSING:
            if allow_missing:
                return math.nan
            raise DataError(f"{where}: line {lineno}, column {name!r}: missing value")
        try:
            v = float(text)
        except ValueError:
            raise DataError(
                f"{where}: line {lineno}, column {name!r}: {text!r} is not a number"
            ) from None
        if not math.isfinite(v) and not (allow_missing and math.isnan(v)):
            raise DataError(f"{where}: line {lineno}, column {name!r}: {text!r} is not finite")
        return v

    for lineno, r in body:
        if len(r) != len(header):
            raise DataError(
                f"{where}: line {lineno} has {len(r)} fields but the header has {len(header)}"
            )
    times = np.array([number(ln, r, time, False) for ln, r in body])
    y = np.array([[number(ln, r, c, True) for c in manifest.values()] for ln, r in body])
    y = y.reshape(len(body), len(manifest))
    u = None
    if inputs:
        u = np.array([[number(ln, r, c, False) for c in inputs.values()] for ln, r in body])
    cov = {
        name: np.array([number(ln, r, c, False) for ln, r in body])
        for name, c in covariates.items()
    }
    subj = None
    if subject is not None:
        subj = [r[col[subject]].strip() for _, r in body]
        empty = [ln for (ln, _), s in zip(body, subj, strict=True) if not s]
        if empty:
            raise DataError(f"{where}: line {empty[0]}, column {subject!r}: missing subject id")
    # Sorted times within each subject; ties (several rows at one time) are allowed.
    last: dict = {}
    for k, (lineno, _) in enumerate(body):
        key = subj[k] if subj is not None else None
        if key in last and times[k] < last[key][0]:
            who = f" within subject {key!r}" if subj is not None else ""
            raise DataError(
                f"{where}: line {lineno}: time {_show_number(times[k])} is before "
                f"{_show_number(last[key][0])} (line {last[key][1]}); times must be in "
                f"increasing order{who} (ties allowed): sort the rows by time"
            )
        last[key] = (times[k], lineno)
    if subj is not None:
        for name, values in cov.items():
            seen: dict = {}
            for k, (lineno, _) in enumerate(body):
                if subj[k] in seen and values[k] != seen[subj[k]][0]:
                    raise DataError(
                        f"{where}: line {lineno}, column {covariates[name]!r}: covariate "
                        f"{name!r} changes within subject {subj[k]!r} ({seen[subj[k]][0]:g} on "
                        f"line {seen[subj[k]][1]}, {values[k]:g} here)"
                    )
                seen.setdefault(subj[k], (values[k], lineno))
    return ModelData(times, y, None if subj is None else np.array(subj), u, cov, path)
