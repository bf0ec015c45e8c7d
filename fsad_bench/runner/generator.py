"""The grid: cells = datasets x categories x methods x seeds x settings, fully resolved.

Hyper-parameters of a cell = the detector's defaults, overridden by the budget's table for that
method, then by ``--weights`` and ``--set`` from the command line. ``--set key=value`` applies to
every method that has ``key``; ``--set method.key=value`` to one method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsad_bench.data.registry import categories, info, is_present
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError
from fsad_bench.protocol import ProtocolSpec
from fsad_bench.runner.job import Cell


@dataclass
class GridRequest:
    """What the user asked for on the command line (None = the protocol's default)."""

    methods: list[str] | None = None
    datasets: list[str] | None = None
    seeds: list[int] | None = None
    budget: str | None = None
    weights: str | None = None
    overrides: list[str] = field(default_factory=list)  # raw "key=value" strings
    data_root: Path | None = None


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --set {item!r}: expected key=value or method.key=value")
        out[key.strip()] = value.strip()
    return out


def resolve_datasets(spec: ProtocolSpec, req: GridRequest) -> tuple[list[str], list[str]]:
    """(datasets to run, real datasets of the spec that are missing)."""
    if req.datasets:
        for name in req.datasets:
            info(name)  # unknown name -> UserError
            if not is_present(name, req.data_root):
                categories(name, req.data_root)  # raises the DataError that says how to fix it
        return list(req.datasets), []
    present = [d for d in spec.datasets if is_present(d, req.data_root)]
    missing = [d for d in spec.datasets if d not in present]
    return (present or list(spec.fallback_datasets)), missing


def resolve_methods(spec: ProtocolSpec, req: GridRequest) -> list[str]:
    if not req.methods or req.methods == ["all"]:
        return list(spec.methods)
    return list(req.methods)


def method_params(spec: ProtocolSpec, budget_name: str | None, method: str, req: GridRequest
                  ) -> tuple[int, dict[str, Any]]:
    """(image size, validated hyper-parameters) of ``method`` for this grid."""
    budget = spec.budget(budget_name)
    cls = load_detector(method)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    params = budget.method_params(method)
    img_size = int(params.pop("img_size", budget.img_size))
    if "weights" in fields:
        params.setdefault("weights", budget.weights)
        if req.weights:
            params["weights"] = req.weights
    for key, value in parse_overrides(req.overrides).items():
        target, dot, name = key.rpartition(".")
        if dot and target != method:
            continue
        if name == "img_size":
            img_size = int(value)
        elif name in fields or dot:
            params[name] = value
    config = cls.config_from_params(params)  # validates names and types
    resolved = dataclasses.asdict(config)
    for name in cls.required_weights(config):
        from fsad_bench.models.backbones import ensure_weights
        ensure_weights(name, "imagenet")
    return img_size, resolved


def build_cells(spec: ProtocolSpec, req: GridRequest) -> tuple[list[Cell], list[str]]:
    """All cells of the grid, and the spec's datasets that are missing."""
    methods = resolve_methods(spec, req)
    budget = spec.budget(req.budget).name
    known_keys: set[str] = set()
    per_method = {}
    for m in methods:
        per_method[m] = method_params(spec, budget, m, req)
        known_keys |= {f.name for f in dataclasses.fields(load_detector(m).Config)} | {"img_size"}
    for key in parse_overrides(req.overrides):
        target, dot, name = key.rpartition(".")
        if dot and target not in methods:
            raise UserError(f"--set {key}: method {target!r} is not in this run ({', '.join(methods)})")
        if not dot and name not in known_keys:
            raise UserError(f"--set {key}: no method in this run has a hyper-parameter {name!r}")
    datasets, missing = resolve_datasets(spec, req)
    seeds = req.seeds if req.seeds is not None else spec.seeds
    cells = []
    for dataset in datasets:
        for category in categories(dataset, req.data_root):
            for method in methods:
                img_size, params = per_method[method]
                for setting in spec.setting_grid():
                    for seed in seeds:
                        cells.append(Cell(spec.name, spec.split, dataset, category, method, seed, setting,
                                          budget, img_size, params,
                                          str(req.data_root) if req.data_root else None))
    return cells, missing
