"""The grid: cells = datasets x categories x methods x seeds x settings, fully resolved.

Hyper-parameters of a cell: :func:`fsad_bench.config.resolve_method_config` (the detector's
defaults, the budget's table for the method, ``--weights``, ``--set``), resolved once per method
and grid; the protocol's swept hyper-parameters (``[method_settings]``) come on top per cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsad_bench.config import ResolvedMethod, config_fields, parse_overrides, resolve_method_config
from fsad_bench.data import synthetic
from fsad_bench.data.layout import scan_category
from fsad_bench.data.registry import categories, dataset_dir, info, is_present
from fsad_bench.errors import UserError
from fsad_bench.models.backbones import ensure_weights
from fsad_bench.protocol import Budget, ProtocolSpec
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


def resolve_grid_methods(spec: ProtocolSpec, budget: Budget, methods: list[str], req: GridRequest
                         ) -> dict[str, ResolvedMethod]:
    """Every method's resolved configuration for this grid (:func:`resolve_method_config`), the
    ``--set`` keys checked against the run's methods and the needed ImageNet weights against the cache."""
    overrides = parse_overrides(req.overrides)
    resolved = {m: resolve_method_config(budget, m, req.weights, overrides) for m in methods}
    known_keys = set().union(*(config_fields(r.cls) for r in resolved.values())) | {"img_size"}
    for key in overrides:
        target, dot, name = key.rpartition(".")
        if dot and target not in methods:
            raise UserError(f"--set {key}: method {target!r} is not in this run ({', '.join(methods)})")
        if not dot and name not in known_keys:
            raise UserError(f"--set {key}: no method in this run has a hyper-parameter {name!r}")
    for key in spec.method_settings:
        for m, r in resolved.items():
            if key not in config_fields(r.cls):
                raise UserError(f"protocol {spec.name} sweeps {key!r}, which method {m!r} does not have")
    for r in resolved.values():
        for name in r.cls.required_weights(r.config):
            ensure_weights(name, "imagenet")
    return resolved


def build_cells(spec: ProtocolSpec, req: GridRequest) -> tuple[list[Cell], list[str]]:
    """All cells of the grid, and the spec's datasets that are missing."""
    methods = resolve_methods(spec, req)
    budget = spec.budget(req.budget)  # once per grid
    per_method = resolve_grid_methods(spec, budget, methods, req)
    datasets, missing = resolve_datasets(spec, req)
    seeds = req.seeds if req.seeds is not None else spec.seeds
    data_version = {"synthetic": synthetic.SYNTHETIC_VERSION}
    cells = []
    for dataset in datasets:
        cats = categories(dataset, req.data_root)
        if dataset in spec.categories:
            cats = [c for c in cats if c in spec.categories[dataset]]
        for category in cats:
            for setting in _expand_settings(spec, dataset, category, req.data_root):
                split_kwargs = {k: v for k, v in setting.items() if k not in spec.method_settings}
                swept = {k: v for k, v in setting.items() if k in spec.method_settings}
                for method in methods:
                    resolved = per_method[method]
                    for seed in seeds:
                        cells.append(Cell(
                            spec.name, spec.split, dataset, category, method, seed, setting, budget.name,
                            resolved.img_size, {**resolved.params, **swept},
                            str(req.data_root) if req.data_root else None,
                            {**split_kwargs, **spec.split_args}, spec.pixel_metrics,
                            data_version.get(dataset, "")))
    return cells, missing


def _expand_settings(spec: ProtocolSpec, dataset: str, category: str, root: Path | None
                     ) -> list[dict[str, Any]]:
    """The setting grid of one category; ``known_class = "*"`` becomes each of its anomaly classes
    (or the spec's list for the dataset / category)."""
    grid = spec.setting_grid()
    if "known_class" not in spec.settings:
        return grid
    listed = spec.known_classes.get(category) or spec.known_classes.get(dataset)
    if listed is None:
        listed = scan_category(dataset_dir(dataset, root) / category).defect_classes
    out = []
    for setting in grid:
        classes = listed if setting["known_class"] == "*" else [setting["known_class"]]
        out += [{**setting, "known_class": c} for c in classes]
    return out
