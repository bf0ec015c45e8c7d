"""The settings behind the paper's published numbers, and which of them a run of ours differs in.

``results/paper/settings.csv`` (shipped as ``fsad_bench.published``) declares, per method of Tables
2-5, every hyper-parameter (and the image size) with which the published numbers were made, with
its source: the authors' code where it exists, else the paper's text. Numbers of ours are
comparable with the published ones only where :func:`published_settings_differ` returns nothing;
``fsad-bench report --compare-paper`` marks every other method.

Only settings that change the numbers are declared (not batch sizes of evaluation, cache sizes or
memory layouts). A declared setting that a row does not record counts as a difference: a row made
before the setting existed was made without it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fsad_bench.errors import UserError
from fsad_bench.input_size import cell_input_size

SETTINGS_FILE = "settings.csv"


@dataclass(frozen=True)
class PublishedSetting:
    """One setting behind a method's published numbers: ``value`` as written in settings.csv."""

    method: str
    setting: str
    value: str
    source: str


@cache
def published_settings() -> dict[str, tuple[PublishedSetting, ...]]:
    """method -> its declared settings, in file order."""
    res = resources.files("fsad_bench.published") / SETTINGS_FILE
    if not res.is_file():
        raise UserError(f"no {SETTINGS_FILE} in results/paper (fsad_bench.published); reinstall fsad-bench")
    out: dict[str, list[PublishedSetting]] = {}
    for row in csv.DictReader(io.StringIO(res.read_text())):
        out.setdefault(row["method"], []).append(
            PublishedSetting(row["method"], row["setting"], row["value"], row["source"]))
    return {m: tuple(rows) for m, rows in out.items()}


def _same(declared: str, actual: Any) -> bool:
    """Whether ``actual`` (a resolved hyper-parameter) equals ``declared`` (settings.csv text),
    compared as the type of ``actual``: bools by name, numbers with a relative tolerance of 1e-9,
    sequences as ';'-separated numbers ("" = empty), everything else as text."""
    text = declared.strip()
    if isinstance(actual, bool):
        return text.lower() == str(actual).lower()
    if isinstance(actual, (int, float)):
        try:
            return math.isclose(float(text), float(actual), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            return False
    if isinstance(actual, Sequence) and not isinstance(actual, str):
        items = [t for t in text.split(";") if t.strip()]
        return len(items) == len(actual) and all(_same(t, a) for t, a in zip(items, actual))
    return text == str(actual)


def published_settings_differ(method: str, params: Mapping[str, Any], img_size: int | None = None,
                              dataset: str | None = None) -> list[str]:
    """How a row's settings differ from those behind the published numbers of ``method``.

    ``params``: the row's resolved hyper-parameters (``CellResult.params``, the ``params`` column
    of the store); ``img_size``: the row's image size (or an ``img_size`` key in ``params``);
    ``dataset``: the row's dataset, for the published size of datasets fed at their native
    resolution (Mastcam: 64 px, :mod:`fsad_bench.input_size`); without it the declared size is used.
    Returns one line per difference, e.g. ``"logit = signed (published: authors, authors' FLOS
    code)"``; an empty list means every declared setting matches. A method without published
    settings gives one line saying so (never an empty list), so it can never pass for the paper's.
    """
    declared = published_settings().get(method)
    if declared is None:
        return [f"{method}: the paper has no published numbers for this method"]
    values = dict(params)
    if img_size is not None:
        values["img_size"] = img_size
    out = []
    for s in declared:
        value = s.value
        if s.setting == "img_size" and dataset is not None:
            value = str(cell_input_size(dataset, int(value)))
        if s.setting not in values:
            out.append(f"{s.setting} not recorded (published: {value}, {s.source})")
        elif not _same(value, values[s.setting]):
            out.append(f"{s.setting} = {values[s.setting]} (published: {value}, {s.source})")
    return out
