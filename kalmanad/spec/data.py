"""Data for a spec: long-format CSV files, per-subject panels and their checks."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["DataError", "ModelData", "PanelData", "read_csv", "read_header", "to_panel"]


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
    labels, code = subject_codes(subject.tolist())
    bad = first_decrease(times, code, by_subject=True)
    if bad is not None:
        before, row = bad
        raise ValueError(
            f"times must be non-decreasing within subject {labels[code[row]]!r}: time "
            f"{times[row]!r} (row {row}) follows {times[before]!r} (row {before})"
        )
    pcov = {}
    for name, values in (covariates or {}).items():
        values = np.asarray(values, dtype=float)
        if values.shape != (n,):
            raise ValueError(
                f"covariate {name!r} must be (N,) with N={n}, got shape {values.shape}"
            )
        bad = first_change(values, code, by_subject=True)
        if bad is not None:
            first, row = bad
            raise ValueError(
                f"covariate {name!r} is not constant within subject {labels[code[row]]!r} "
                f"(values {values[first]!r} and {values[row]!r})"
            )
        pcov[name] = values[_first_rows(code)]
    counts = np.bincount(code, minlength=len(labels))
    pt, py, pu = _pad(times, y, inputs, code, counts)
    return PanelData(pt, py, pu, pcov, np.array(labels), counts)


def _pad(times, y, inputs, code, counts):
    """(S, T) times, (S, T, m) observations and (S, T, k) inputs (or None), padded."""
    n_sub = counts.shape[0]
    t_max = int(counts.max()) if n_sub else 0
    pt = np.zeros((n_sub, t_max))
    py = np.full((n_sub, t_max, y.shape[1]), np.nan)
    pu = None if inputs is None else np.zeros((n_sub, t_max, inputs.shape[1]))
    for s in range(n_sub):
        rows = np.flatnonzero(code == s)
        c = rows.size
        pt[s, :c] = times[rows]
        pt[s, c:] = times[rows[-1]]
        py[s, :c] = y[rows]
        if pu is not None:
            pu[s, :c] = inputs[rows]
    return pt, py, pu


# ----------------------------------------------------------- within-subject invariants


def subject_codes(subject: list) -> tuple[list, np.ndarray]:
    """The distinct labels in order of first appearance, and each row's label index."""
    labels, first = [], {}
    for s in subject:
        if s not in first:
            first[s] = len(labels)
            labels.append(s)
    return labels, np.array([first[s] for s in subject], dtype=int)


def _first_rows(code: np.ndarray) -> np.ndarray:
    """The first row of each subject (codes 0..S-1, each present)."""
    return np.unique(code, return_index=True)[1]


def _first_of(before, rows, code, by_subject):
    """The (before, row) pair of the first row: in row order, or by subject then row."""
    if not rows.size:
        return None
    i = np.lexsort((rows, code[rows]))[0] if by_subject else np.argmin(rows)
    return int(before[i]), int(rows[i])


def first_decrease(times, code, *, by_subject: bool):
    """The first row whose time is not >= the time of its subject's previous row.

    Returns:
        ``(previous row, row)``, or None when times never decrease (NaN counts as a
        decrease). "First" is in row order, or with ``by_subject`` the first subject
        (in order of first appearance) that has one.
    """
    order = np.argsort(code, kind="stable")
    same = code[order[1:]] == code[order[:-1]]
    before, rows = order[:-1][same], order[1:][same]
    bad = ~(times[rows] >= times[before])
    return _first_of(before[bad], rows[bad], code, by_subject)


def first_change(values, code, *, by_subject: bool):
    """The first row whose value differs from the value on its subject's first row.

    Returns:
        ``(the subject's first row, row)``, or None when every subject's values are
        constant (a NaN differs from everything); "first" as in :func:`first_decrease`.
    """
    before = _first_rows(code)[code] if code.size else code
    rows = np.flatnonzero(values != values[before])
    return _first_of(before[rows], rows, code, by_subject)


_MISSING = {"", "na", "nan", "n/a", "null", "none", "."}


def _is_comment(row) -> bool:
    return bool(row) and row[0].lstrip().startswith("#")


def read_header(path: Path) -> list:
    """The column names of a CSV file: its first non-comment row, stripped.

    ``[]`` when the file cannot be read (:func:`read_csv` then reports why).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            row = next((r for r in csv.reader(fh) if not _is_comment(r)), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [h.strip() for h in row]


def _show_number(value: float) -> str:
    """A number as short as ``%g`` when that is exact, else every digit (``repr``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def read_csv(path: Path, *, time: str, subject: str | None, manifest, inputs, covariates):
    """Read a long-format CSV; every problem is a one-line DataError.

    ``manifest``, ``inputs`` and ``covariates`` map variable names to CSV columns;
    ``time`` and ``subject`` (or None) are column names.
    """
    where = str(path)
    wanted = [time, *manifest.values(), *inputs.values(), *covariates.values()]
    if subject is not None:
        wanted.append(subject)
    header, body = header_and_body(path, wanted)
    table = CsvTable(where, header, body)
    times = table.numbers(time, allow_missing=False)
    y = table.rows(list(manifest.values()), allow_missing=True)
    y = y.reshape(len(body), len(manifest))
    u = None
    if inputs:
        u = table.rows(list(inputs.values()), allow_missing=False)
    cov = {name: table.numbers(c, allow_missing=False) for name, c in covariates.items()}
    subj = None if subject is None else table.subjects(subject)
    _check_within_subject(where, body, times, subj, covariates, cov)
    return ModelData(times, y, None if subj is None else np.array(subj), u, cov, path)


def header_and_body(path: Path, wanted: list) -> tuple[list, list]:
    """The header (stripped names) and the non-blank data rows ``(line number, row)``."""
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
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))} "
            f"(the file has: {', '.join(header)})"
        )
    body = [(i, r) for i, r in numbered[1:] if any(c.strip() for c in r)]
    if not body:
        raise DataError(f"{where}: no data rows")
    for lineno, r in body:
        if len(r) != len(header):
            raise DataError(
                f"{where}: line {lineno} has {len(r)} fields but the header has {len(header)}"
            )
    return header, body


class CsvTable:
    """The data rows of a CSV file, read column by column."""

    def __init__(self, where: str, header: list, body: list):
        self.where = where
        self.col = {h: i for i, h in enumerate(header)}
        self.body = body

    def numbers(self, name: str, *, allow_missing: bool) -> np.ndarray:
        """Column ``name`` as floats; missing cells are NaN where allowed."""
        return np.array([self._number(ln, r, name, allow_missing) for ln, r in self.body])

    def rows(self, names: list, *, allow_missing: bool) -> np.ndarray:
        """Columns ``names`` as an (N, len(names)) array, read row by row."""
        return np.array(
            [[self._number(ln, r, c, allow_missing) for c in names] for ln, r in self.body]
        )

    def _number(self, lineno, r, name, allow_missing):
        where = self.where
        j = self.col[name]
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

    def subjects(self, name: str) -> list:
        """Column ``name`` as subject labels (strings); none may be empty."""
        subj = [r[self.col[name]].strip() for _, r in self.body]
        empty = [ln for (ln, _), s in zip(self.body, subj, strict=True) if not s]
        if empty:
            raise DataError(f"{self.where}: line {empty[0]}, column {name!r}: missing subject id")
        return subj


def _check_within_subject(where, body, times, subj, columns, covariates) -> None:
    """Times in order and covariates constant within each subject (first problem raised)."""
    _, code = subject_codes(subj if subj is not None else [None] * len(body))
    bad = first_decrease(times, code, by_subject=False)
    if bad is not None:
        # Sorted times within each subject; ties (several rows at one time) are allowed.
        before, k = bad
        who = f" within subject {subj[k]!r}" if subj is not None else ""
        raise DataError(
            f"{where}: line {body[k][0]}: time {_show_number(times[k])} is before "
            f"{_show_number(times[before])} (line {body[before][0]}); times must be in "
            f"increasing order{who} (ties allowed): sort the rows by time"
        )
    if subj is None:
        return
    for name, values in covariates.items():
        bad = first_change(values, code, by_subject=False)
        if bad is not None:
            first, k = bad
            raise DataError(
                f"{where}: line {body[k][0]}, column {columns[name]!r}: covariate "
                f"{name!r} changes within subject {subj[k]!r} ({values[first]:g} on "
                f"line {body[first][0]}, {values[k]:g} here)"
            )
