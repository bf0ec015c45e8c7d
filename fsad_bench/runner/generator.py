"""The grid: cells = datasets x categories x methods x seeds x settings, fully resolved.

Hyper-parameters of a cell = the detector's defaults, overridden by the budget's table for that
method, then by ``--weights`` and ``--set`` from the command line. ``--set key=value`` applies to
every method that has ``key``; ``--set method.key=value`` to one method.

Everything that can be checked without running a cell is checked here, before the store is opened:
names, hyper-parameter types and ranges, image sizes against each method's minimum, seeds. A method,
dataset or seed given twice runs once, and so does any other pair of cells with the same key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from fsad_bench.data.layout import check_utf8_name, scan_category
from fsad_bench.data.registry import categories, data_version, dataset_dir, info, is_present
from fsad_bench.detectors.hparams import NonNegInt, PositiveInt, validate_value
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError
from fsad_bench.input_size import cell_input_size, img_size_is_explicit
from fsad_bench.models.backbones import ensure_weights
from fsad_bench.protocol import ProtocolSpec
from fsad_bench.runner.job import Cell, attach_provenance


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


def _checked_int(raw: Any, what: str, adapter: TypeAdapter) -> int:
    try:
        return validate_value(adapter, raw, False)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise UserError(f"bad {what} {raw!r}: {msg[:1].lower()}{msg[1:]}") from None


_IMG_SIZE = TypeAdapter(PositiveInt)
_SEED = TypeAdapter(NonNegInt)


def _unique(items: list[Any]) -> list[Any]:
    """``items`` without repeats, in their first order (``--seeds 0,0`` runs seed 0 once)."""
    return list(dict.fromkeys(items))


def resolve_datasets(spec: ProtocolSpec, req: GridRequest) -> tuple[list[str], list[str]]:
    """(datasets to run, real datasets of the spec that are missing)."""
    if req.datasets:
        for name in req.datasets:
            info(name, req.data_root)  # unknown name -> UserError
            if not is_present(name, req.data_root):
                categories(name, req.data_root)  # raises the DataError that says how to fix it
        return _unique(req.datasets), []
    present = [d for d in spec.datasets if is_present(d, req.data_root)]
    missing = [d for d in spec.datasets if d not in present]
    return (present or list(spec.fallback_datasets)), missing


def resolve_methods(spec: ProtocolSpec, req: GridRequest) -> list[str]:
    if not req.methods or req.methods == ["all"]:
        return _unique(spec.methods)
    return _unique(req.methods)


def method_params(spec: ProtocolSpec, budget_name: str | None, method: str, req: GridRequest
                  ) -> tuple[int, dict[str, Any]]:
    """(image size, validated hyper-parameters) of ``method`` for this grid."""
    budget = spec.budget(budget_name)
    cls = load_detector(method)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    params = budget.method_params(method)
    img_size = _checked_int(params.pop("img_size", budget.img_size), f"img_size of {method}", _IMG_SIZE)
    if "weights" in fields:
        params.setdefault("weights", budget.weights)
        if req.weights:
            params["weights"] = req.weights
    for key, value in parse_overrides(req.overrides).items():
        target, dot, name = key.rpartition(".")
        if dot and target != method:
            continue
        if name == "img_size":
            img_size = _checked_int(value, f"--set {key}", _IMG_SIZE)
        elif name in fields or dot:
            params[name] = value
    config = cls.config_from_params(params)  # validates names, types and ranges
    check_img_size(method, config, img_size)
    resolved = dataclasses.asdict(config)
    for name in cls.required_weights(config):
        ensure_weights(name, "imagenet")
    return img_size, resolved


def check_img_size(method: str, config: Any, img_size: int, dataset: str = "") -> None:
    """UserError when ``img_size`` is below what ``method`` needs with ``config`` (its backbone's
    minimum at every scale, see ``Detector.min_img_size``); ``dataset``: the size is that dataset's
    native one (the budget's was capped to it)."""
    need = load_detector(method).min_img_size(config)
    if img_size >= need:
        return
    arch = ", ".join(f"{k} {getattr(config, k)}" for k in ("backbone", "n_scales") if hasattr(config, k))
    where = f" ({dataset} runs at its native {img_size} px)" if dataset else ""
    raise UserError(f"img_size {img_size} is below {method}'s minimum of {need} px"
                    f"{f' ({arch})' if arch else ''}{where}; use --set {method}.img_size={need} or larger")


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
    for key in spec.method_settings:
        for m in methods:
            if key not in {f.name for f in dataclasses.fields(load_detector(m).Config)}:
                raise UserError(f"protocol {spec.name} sweeps {key!r}, which method {m!r} does not have")
    datasets, missing = resolve_datasets(spec, req)
    seeds = req.seeds if req.seeds is not None else spec.seeds
    seeds = _unique([_checked_int(s, "seed", _SEED) for s in seeds])
    cells = []
    for dataset in datasets:
        cats = categories(dataset, req.data_root)
        for cat in cats:  # the store and reports hold category names as UTF-8 text
            check_utf8_name(dataset_dir(dataset, req.data_root) / cat)
        if dataset in spec.categories:
            cats = [c for c in cats if c in spec.categories[dataset]]
        for category in cats:
            version = data_version(dataset, category, req.data_root)  # user data: a file fingerprint
            for setting in _expand_settings(spec, dataset, category, req.data_root):
                split_kwargs = {k: v for k, v in setting.items() if k not in spec.method_settings}
                swept = {k: v for k, v in setting.items() if k in spec.method_settings}
                for method in methods:
                    img_size, params = per_method[method]
                    # Mastcam is never upsampled (its native 64 px, as the paper's); see input_size
                    capped = cell_input_size(dataset, img_size,
                                             img_size_is_explicit(parse_overrides(req.overrides), method))
                    if capped != img_size:
                        cls = load_detector(method)
                        check_img_size(method, cls.config_from_params(params), capped, dataset)
                        img_size = capped
                    for seed in seeds:
                        cells.append(Cell(
                            spec.name, spec.split, dataset, category, method, seed, setting, budget,
                            img_size, {**params, **swept}, str(req.data_root) if req.data_root else None,
                            {**split_kwargs, **spec.split_args}, spec.pixel_metrics,
                            version))
    cells = attach_provenance(cells)  # keys cover the data's content and the detector's code
    unique = list({c.key: c for c in cells}.values())  # e.g. a setting listed twice in a spec
    if not unique:
        raise UserError(f"the grid of protocol {spec.name} has no cells (seeds: {seeds}, methods: {methods}, "
                        f"datasets: {datasets}); check --seeds, --methods, --datasets and the spec's "
                        "[categories]")
    return unique, missing


def _expand_settings(spec: ProtocolSpec, dataset: str, category: str, root: Path | None
                     ) -> list[dict[str, Any]]:
    """The setting grid of one category; ``known_class = "*"`` becomes each of its anomaly classes
    (or the spec's list for the dataset / category)."""
    grid = spec.setting_grid()
    if "known_class" not in spec.settings:
        return grid
    # a per-category list (MVTec AD's carpet) is the paper's; a user's category of that name is not it
    by_category = spec.known_classes.get(category) if info(dataset, root).kind == "builtin" else None
    listed = by_category or spec.known_classes.get(dataset)
    if listed is None:
        listed = scan_category(dataset_dir(dataset, root) / category).defect_classes
    out = []
    for setting in grid:
        classes = listed if setting["known_class"] == "*" else [setting["known_class"]]
        out += [{**setting, "known_class": c} for c in classes]
    return out
