"""Pieces of report text shared by every table: a mean with its seed spread (or its single seed), the
line that says what a statistic needs when there is too little to compute it, and two kinds of note
that the HTML report folds away (``<details>``) while the text formats print them as the lines they
always were.

Notes are plain strings everywhere (tables collect them, tests search them); the two kinds below are
``str`` subclasses, so they read as their text anywhere and only the HTML renderer looks at the kind.
"""

from __future__ import annotations

from collections.abc import Iterable


class Folded(str):
    """A note holding a long list (e.g. each way a method's settings differ from the published ones):
    in Markdown, LaTeX and CSV the one line ``summary: item; item; ...``, in HTML a ``<details>``
    whose summary is shown and whose items are listed when opened."""

    summary: str
    items: tuple[str, ...]
    #: what the items are, for the HTML summary's count ('(20 differences)')
    what: str

    def __new__(cls, summary: str, items: Iterable[str], what: str = "items", sep: str = "; ") -> Folded:
        items = tuple(items)
        note = super().__new__(cls, f"{summary}: {sep.join(items)}" if items else summary)
        note.summary, note.items, note.what = summary, items, what
        return note


class Explained(str):
    """A note that says how to read the numbers (what a test is, what ± means), not what they are. In
    HTML the explanations of a table are gathered into one fold after its other notes."""


def spread_text(mean: float, std: float, n_seeds: int | None = None) -> str:
    """'0.582 ± 0.010' (mean ± population std over seeds); '0.582 (1 seed)' for a cell of one seed,
    whose std of 0.000 would read as a spread measured to be none. ``n_seeds`` None: not known (a
    frame without seeds), shown with ±."""
    if n_seeds == 1:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {std:.3f}"


def needs_line(what: str, need: int, unit: str, have: int, more: str = "", verb: str = "need") -> str:
    """One line saying that a statistic needs more of something than the results hold, e.g. 'p-values
    and rank tests need >= 6 datasets; this table has 1: run more datasets to get them'."""
    it = "it" if verb == "needs" else "them"
    return f"{what} {verb} >= {need} {unit}; this table has {have}{more}: run more {unit} to get {it}"
