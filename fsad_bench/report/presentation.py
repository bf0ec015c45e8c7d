"""What a report needs to know about methods and protocols, and where it comes from.

Method names, the published column a method maps to and notes on its weights are declared by each
detector (``Detector.display_name``, ``paper_column``, ``weights_notes``); the column order, the
reference method of the p-value rows, per-protocol column titles and the x axis of a curve come from
the protocol spec (``methods``, ``reference_method``, ``[display]``, ``curve_x``). This module names
no method: a third-party detector is reported exactly like ours.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from fsad_bench.detectors.base import Detector
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError
from fsad_bench.protocol import ProtocolSpec, load_protocol, packaged_protocols

#: the budget that reproduces the paper's settings; numbers of any other are not comparable with it
PAPER_BUDGET = "paper"

#: the packaged spec whose presentation a table gets when its protocol has no packaged spec (a
#: long-form CSV, a store of a user's own spec): Table 2's, as the CSV input documents
TABLE2_PROTOCOL = "q1"


@cache
def _detector(method: str) -> type[Detector] | None:
    """The detector class of a stored method name; None when it no longer loads (an old store)."""
    try:
        return load_detector(method)
    except UserError:
        return None


def display_name(method: str) -> str:
    """The detector's declared display name, else the name it ran under (its entry-point name or
    dotted path, as stored; also when it no longer loads)."""
    cls = _detector(method)
    return (cls.display_name or method) if cls is not None else method


def paper_column(method: str) -> str | None:
    """The published table column the method maps to (None: not in the paper, or not loadable)."""
    cls = _detector(method)
    return cls.paper_column if cls is not None else None


def weights_note(method: str, weights: str) -> str | None:
    """The detector's note on what ``weights`` means for it (e.g. a random teacher), if it has one."""
    cls = _detector(method)
    return cls.weights_notes.get(weights) if cls is not None else None


def budget_note(budgets: Iterable[str]) -> str:
    """One line naming the budgets that made a set of numbers, and saying that those of any budget but
    the paper's are not comparable with the paper (tables' captions, figures' subtitles, the HTML
    banner). An empty ``budgets`` (a CSV without a budget column) says the budget is not recorded."""
    names = sorted({b for b in budgets if isinstance(b, str) and b}, key=lambda b: (b != PAPER_BUDGET, b))
    if not names:
        return "budget not recorded: compare with the paper only if it was the paper's settings"
    text = ("budgets " if len(names) > 1 else "budget ") + ", ".join(names)
    others = [b for b in names if b != PAPER_BUDGET]
    if others:
        text += f": {', '.join(others)} numbers are not comparable with the paper"
    return text


@dataclass(frozen=True)
class ReportSpec:
    """The part of a protocol spec that shapes its report."""

    protocol: str
    title: str
    layout: str = "table2"                      # "table2" | "table3" | "table4" | "table5" | "curve"
    methods: tuple[str, ...] = ()               # column order
    reference_method: str | None = None         # tested against every other method (p-value rows)
    display: dict[str, str] = field(default_factory=dict)  # method -> column title in this report
    curve_x: str | None = None                  # the setting on a curve's x axis

    @classmethod
    def from_protocol(cls, spec: ProtocolSpec) -> ReportSpec:
        return cls(spec.name, spec.title, spec.report, tuple(spec.methods), spec.reference_method,
                   dict(spec.display), spec.curve_x)

    def order(self, methods: Iterable[str]) -> list[str]:
        """The spec's method order, then the methods it does not list, sorted."""
        present = set(methods)
        listed = [m for m in self.methods if m in present]
        return listed + sorted(present - set(listed))

    def name(self, method: str) -> str:
        """The column title of ``method``: the spec's ``[display]`` entry, else the detector's name."""
        return self.display.get(method) or display_name(method)

    def names(self, methods: Iterable[str]) -> dict[str, str]:
        return {m: self.name(m) for m in methods}

    def reference_in(self, methods: Iterable[str]) -> str | None:
        """The reference method when it ran beside at least one other method, else None."""
        methods = list(methods)
        return self.reference_method if self.reference_method in methods and len(methods) > 1 else None


@cache
def report_spec(protocol: str) -> ReportSpec:
    """The presentation of a stored protocol name: its packaged spec's; Table 2's (layout, method
    order, reference) titled with the name for anything else."""
    if protocol in packaged_protocols():
        return ReportSpec.from_protocol(load_protocol(protocol))
    table2 = ReportSpec.from_protocol(load_protocol(TABLE2_PROTOCOL))
    return ReportSpec(protocol, protocol, "table2", table2.methods, table2.reference_method)


def table2_spec() -> ReportSpec:
    """Table 2's presentation (the default of a table built without a protocol)."""
    return report_spec(TABLE2_PROTOCOL)
