"""The grid: cells = datasets x categories x methods x seeds x settings, fully resolved.

Hyper-parameters of a cell: :func:`fsad_bench.config.resolve_method_config` (the detector's
defaults, the budget's table for the method, ``--weights``, ``--set``), resolved once per method
and grid; the protocol's swept hyper-parameters (``[method_settings]``) come on top per cell.

Everything that can be checked without running a cell is checked here, before the store is opened:
names, hyper-parameter types and ranges, image sizes against each method's minimum, seeds. A method,
dataset or seed given twice runs once, and so does any other pair of cells with the same key.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from fsad_bench.budgets import Budget, get_budget
from fsad_bench.config import (
    ResolvedMethod,
    checked_int,
    config_fields,
    parse_overrides,
    resolve_method_config,
)
from fsad_bench.data.layout import check_utf8_name, scan_category
from fsad_bench.data.registry import categories, data_version, dataset_dir, info, is_present
from fsad_bench.detectors.hparams import NonNegInt
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError
from fsad_bench.input_size import cell_input_size, img_size_is_explicit
from fsad_bench.paths import data_root
from fsad_bench.protocol import ProtocolSpec
from fsad_bench.runner.job import Cell, attach_provenance
from fsad_bench.weights import ensure_weights


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
    prepare_datasets: bool = True  # False (the dry run): never prepare ELPV, see AutoDatasetPending


#: The one real dataset whose images install from PyPI (``pip install "fsad-bench[elpv]"``). When none
#: of a spec's datasets is prepared, the spec lists this one and its package is installed, it is
#: prepared into the data root and run instead of the spec's embedded fallback; ``FSAD_AUTO_ELPV=0``
#: (or an explicit ``--datasets``) turns this off.
AUTO_DATASET = "elpv"
AUTO_DATASET_ENV = "FSAD_AUTO_ELPV"


class AutoDatasetPending(Exception):
    """Raised instead of preparing ELPV when the request must not write (``--dry-run``): the grid
    on it is unknown until it is prepared (its cells' keys cover the prepared files' content)."""


def elpv_package_installed() -> bool:
    return importlib.util.find_spec("elpv_dataset") is not None


_SEED = TypeAdapter(NonNegInt)


def _unique(items: list[Any]) -> list[Any]:
    """``items`` without repeats, in their first order (``--seeds 0,0`` runs seed 0 once)."""
    return list(dict.fromkeys(items))


def resolve_datasets(spec: ProtocolSpec, req: GridRequest) -> tuple[list[str], list[str]]:
    """(datasets to run, real datasets of the spec that are missing).

    Explicit ``--datasets``, else the spec's datasets that are present, else ELPV prepared from its
    installed package (see :data:`AUTO_DATASET`), else the spec's fallback (the embedded
    ``synthetic``). The choice and its reason are printed (stderr), so a changed default is never silent.
    """
    if req.datasets:
        for name in req.datasets:
            info(name, req.data_root)  # unknown name -> UserError
            if not is_present(name, req.data_root):
                categories(name, req.data_root)  # raises the DataError that says how to fix it
        return _unique(req.datasets), []
    present = [d for d in spec.datasets if is_present(d, req.data_root)]
    missing = [d for d in spec.datasets if d not in present]
    if present:
        return present, missing
    root = data_root(req.data_root)
    if AUTO_DATASET in spec.datasets and os.environ.get(AUTO_DATASET_ENV, "1") != "0":
        if elpv_package_installed():
            if not req.prepare_datasets:
                raise AutoDatasetPending(
                    f"no dataset of protocol {spec.name} is prepared under {root}: a real run first "
                    f"prepares ELPV from the installed elpv-dataset package into {root / AUTO_DATASET} "
                    f"(once, about 40 s) and runs on it; `fsad-bench data prepare {AUTO_DATASET}` prepares "
                    f"it now, after which --dry-run shows its grid (--datasets synthetic or "
                    f"{AUTO_DATASET_ENV}=0 runs the embedded dataset instead)")
            _prepare_auto_dataset(spec, root)
            return [AUTO_DATASET], [d for d in missing if d != AUTO_DATASET]
        print(f"no dataset of protocol {spec.name} is prepared under {root}: running on the embedded "
              f"{', '.join(spec.fallback_datasets)}; pip install 'fsad-bench[elpv]' to run on the real "
              f"ELPV dataset instead (README, Set up)", file=sys.stderr)
    return list(spec.fallback_datasets), missing


def _prepare_auto_dataset(spec: ProtocolSpec, root: Path) -> None:
    """Prepare ELPV from its installed package into ``root`` once, saying why and how long it took."""
    from fsad_bench.data.converters import prepare

    print(f"no dataset of protocol {spec.name} is prepared under {root}; the elpv-dataset package is "
          f"installed, so ELPV is prepared into {root / AUTO_DATASET} (once, about a minute) and run "
          f"(--datasets synthetic or {AUTO_DATASET_ENV}=0 runs the embedded dataset instead)",
          file=sys.stderr)
    start = time.perf_counter()
    try:
        folder, _conv = prepare(AUTO_DATASET, None, root)
    except UserError as exc:
        raise type(exc)(f"{exc} (while preparing ELPV from its package because no dataset of "
                        f"{spec.name} is prepared; --datasets synthetic or {AUTO_DATASET_ENV}=0 skips it)"
                        ) from exc
    print(f"elpv ready in {folder} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


def resolve_methods(spec: ProtocolSpec, req: GridRequest) -> list[str]:
    if not req.methods or req.methods == ["all"]:
        return _unique(spec.methods)
    return _unique(req.methods)


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


def resolve_budget(spec: ProtocolSpec, name: str | None, methods: list[str]) -> Budget:
    """The budget of the grid: ``--budget`` or the spec's default; a known one, or one that a method
    of the run declares."""
    declared = {b for m in methods for b in load_detector(m).budgets}
    return get_budget(name or spec.default_budget, declared)


def resolve_grid_methods(spec: ProtocolSpec, budget: Budget, methods: list[str], req: GridRequest
                         ) -> dict[str, ResolvedMethod]:
    """Every method's resolved configuration for this grid (:func:`resolve_method_config`), the
    ``--set`` keys checked against the run's methods and the needed ImageNet weights against the cache."""
    overrides = parse_overrides(req.overrides)
    resolved = {m: resolve_method_config(budget, m, req.weights, overrides, spec.set_at(budget.name))
                for m in methods}
    for m, r in resolved.items():
        check_img_size(m, r.config, r.img_size)
    known_keys = set().union(*(config_fields(r.cls) for r in resolved.values())) | {"img_size"}
    for key in overrides:
        target, dot, name = key.rpartition(".")
        if dot and target not in methods:
            raise UserError(f"--set {key}: method {target!r} is not in this run ({', '.join(methods)})")
        if not dot and name not in known_keys:
            raise UserError(f"--set {key}: no method in this run has a hyper-parameter {name!r}")
    for key in spec.set_at(budget.name):
        if key != "img_size" and not any(key in config_fields(r.cls) for r in resolved.values()):
            raise UserError(f"protocol {spec.name}: [set.{budget.name}] {key}: no method in this run has a "
                            "hyper-parameter of that name")
    for key in spec.method_settings:
        for m, r in resolved.items():
            if key not in config_fields(r.cls):
                raise UserError(f"protocol {spec.name} sweeps {key!r}, which method {m!r} does not have")
    for r in resolved.values():
        for name in r.cls.required_weights(r.config):
            ensure_weights(name)
    return resolved


def build_cells(spec: ProtocolSpec, req: GridRequest) -> tuple[list[Cell], list[str]]:
    """All cells of the grid, and the spec's datasets that are missing."""
    methods = resolve_methods(spec, req)
    budget = resolve_budget(spec, req.budget, methods)  # once per grid
    per_method = resolve_grid_methods(spec, budget, methods, req)
    datasets, missing = resolve_datasets(spec, req)
    seeds = req.seeds if req.seeds is not None else spec.seeds
    seeds = _unique([checked_int(s, "seed", _SEED) for s in seeds])
    cells = []
    for dataset in datasets:
        cats = categories(dataset, req.data_root)
        for cat in cats:  # the store and reports hold category names as UTF-8 text
            check_utf8_name(dataset_dir(dataset, req.data_root) / cat)
        if dataset in spec.categories:
            cats = [c for c in cats if c in spec.categories[dataset]]
        version = data_version(dataset)  # synthetic's generator; the files' content: attach_provenance
        for category in cats:
            for setting in _expand_settings(spec, dataset, category, req.data_root):
                split_kwargs = {k: v for k, v in setting.items() if k not in spec.method_settings}
                swept = {k: v for k, v in setting.items() if k in spec.method_settings}
                for method in methods:
                    resolved = per_method[method]
                    # Mastcam is never upsampled (its native 64 px, as the paper's); see input_size
                    img_size = cell_input_size(dataset, resolved.img_size,
                                               img_size_is_explicit(parse_overrides(req.overrides), method))
                    if img_size != resolved.img_size:  # capped to the dataset's native size
                        check_img_size(method, resolved.config, img_size, dataset)
                    for seed in seeds:
                        cells.append(Cell(
                            spec.name, spec.split, dataset, category, method, seed, setting, budget.name,
                            img_size, {**resolved.params, **swept},
                            str(req.data_root) if req.data_root else None,
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
