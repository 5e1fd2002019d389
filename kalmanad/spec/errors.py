"""Errors of the spec language, and the did-you-mean suggestion they carry."""

from __future__ import annotations

import difflib

__all__ = ["SpecError", "suggest"]


class SpecError(ValueError):
    """A problem in a model spec. The message names the file, the field and the cell.

    Attributes:
        source: the spec file (or ``"<dict>"``), or None.
        where: the field and cell, e.g. ``"[dynamics] drift[1][0]"``, or None.
        problem: the problem alone.
    """

    def __init__(self, problem: str, *, source: str | None = None, where: str | None = None):
        self.source = source
        self.where = where
        self.problem = problem
        super().__init__(": ".join(p for p in (source, where, problem) if p))


def suggest(name: str, candidates) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates``, or ``""``."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
