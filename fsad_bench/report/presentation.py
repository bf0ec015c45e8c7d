"""How one protocol's results are shown, and where that comes from: the results store.

A :class:`Presentation` is the protocol's resolved spec (its layout, column order, reference method,
column titles, curve axis, published tables) and each method's :class:`~fsad_bench.detectors.base.
MethodInfo` (display name, paper column, weights notes), both as the run recorded them in the store.
The report never asks the installed detectors or the packaged specs: a folder reports the same
tomorrow, on another machine, with other plugins installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fsad_bench.budgets import PAPER_BUDGET
from fsad_bench.detectors.base import MethodInfo
from fsad_bench.protocol import ProtocolSpec


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
class Presentation:
    """One protocol's spec and its methods' metadata, as the results store recorded them."""

    spec: ProtocolSpec
    methods: Mapping[str, MethodInfo] = field(default_factory=dict)

    @classmethod
    def from_store(cls, spec: Mapping[str, Any], methods: Mapping[str, Mapping[str, Any]]) -> Presentation:
        """From the JSON a store holds (``ResultStore.descriptions``); keys a later spec model does not
        know are dropped, so a folder written by another version still reports."""
        known = {f.alias or n for n, f in ProtocolSpec.model_fields.items()}
        data = {k: v for k, v in spec.items() if k in known}
        return cls(ProtocolSpec.model_validate(data, strict=False),
                   {m: MethodInfo.from_json(info) for m, info in methods.items()})

    @property
    def protocol(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.title or self.spec.name

    @property
    def layout(self) -> Any:
        """The protocol's report layout (:class:`fsad_bench.report.layouts.Layout`)."""
        return self.spec.layout()

    def order(self, methods: Iterable[str]) -> list[str]:
        """The spec's method order, then the methods it does not list, sorted."""
        present = set(methods)
        listed = [m for m in self.spec.methods if m in present]
        return listed + sorted(present - set(listed))

    def name(self, method: str) -> str:
        """The column title of ``method``: the spec's ``[display]`` entry, else the method's recorded
        display name, else the name it ran under."""
        info = self.methods.get(method)
        return self.spec.display.get(method) or (info.display_name if info else "") or method

    def names(self, methods: Iterable[str]) -> dict[str, str]:
        return {m: self.name(m) for m in methods}

    def paper_column(self, method: str) -> str | None:
        info = self.methods.get(method)
        return info.paper_column if info else None

    def weights_note(self, method: str, weights: str) -> str | None:
        info = self.methods.get(method)
        return info.weights_notes.get(weights) if info else None

    def reference_in(self, methods: Iterable[str]) -> str | None:
        """The reference method when it ran beside at least one other method, else None."""
        methods = list(methods)
        ref = self.spec.reference_method
        return ref if ref in methods and len(methods) > 1 else None
