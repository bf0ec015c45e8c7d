"""A result row's configuration: what makes rows seeds of one experiment, or rows of two.

Each row is stored with a configuration id (:func:`config_id`), computed when the cell is built from
its resolved configuration, so a report pools rows by what they were computed with, never by what
their columns happen to look like. The id covers

- the protocol's part (``shared`` keys, one value per table): the budget, the fsad-bench version and
  every setting but the layout's axis (a curve's x, Table 3's known class), which varies within a
  table;
- the method's part (``method`` keys, one value per table column): the image size, every
  hyper-parameter but the axis, the weights, and the detector's identity (its code: target,
  distribution, version, source digest).

A dataset fed at its native size because the budget asked for more (Mastcam, see
:mod:`fsad_bench.input_size`) records its size as ``>=N``: it fits any size of at least N, so Mastcam at
64 px beside the others at 448 px is one configuration. The data a row read (its category's content
fingerprint) is not part of the id: it is per category, and reports split on it separately.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from fsad_bench.input_size import NATIVE_INPUT_SIZE

SHARED, METHOD = "shared", "method"
AT_LEAST = ">="  # img_size of a row at its dataset's native size: what any size at least this gives
#: provenance columns of a row's detector
DETECTOR_COLUMNS = ("detector_target", "detector_dist", "detector_version", "detector_source")


class ConfigKey(NamedTuple):
    scope: str  # SHARED (every row of a table) or METHOD (the rows of one method)
    name: str   # as printed: "n_anomaly", "lr", "img_size"


def canonical(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def config_items(dataset: str, budget: str | None, code_version: str | None, setting: Mapping[str, Any],
                 img_size: int | None, params: Mapping[str, Any], weights: str | None,
                 axis: Iterable[str] = ()) -> dict[ConfigKey, str]:
    """Every configuration key of a row, as canonical text (``None`` values are not recorded: a
    column an old store lacks)."""
    axis = set(axis)
    native = img_size is not None and NATIVE_INPUT_SIZE.get(dataset) == int(img_size)
    out: dict[ConfigKey, str] = {}
    for name, value in (("budget", budget), ("code_version", code_version)):
        if value is not None:
            out[ConfigKey(SHARED, name)] = canonical(value)
    for k, v in setting.items():
        if k not in axis:
            out[ConfigKey(SHARED, k)] = canonical(v)
    if img_size is not None:
        out[ConfigKey(METHOD, "img_size")] = f"{AT_LEAST}{int(img_size)}" if native else str(int(img_size))
    for k, v in params.items():
        if k not in axis and k != "img_size":
            out[ConfigKey(METHOD, k)] = canonical(v)
    if weights is not None and "weights" not in params:
        out[ConfigKey(METHOD, "weights")] = canonical(weights)
    return out


def config_id(method: str, items: Mapping[ConfigKey, str], detector: Iterable[str]) -> str:
    """The id of a row's configuration: its method, its items and its detector's identity."""
    blob = json.dumps({"method": method, "items": sorted((k.scope, k.name, v) for k, v in items.items()),
                       "detector": list(detector)})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
