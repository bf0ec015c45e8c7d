"""The grid: cells = datasets x categories x methods x seeds x settings, fully resolved, with no side
effects.

:func:`resolve_grid` reads the spec, the detectors, the data on disk and the weights cache, and writes
nothing. What a real run must do before its grid exists (prepare ELPV from its installed package,
fetch ImageNet weights that are not cached) comes back as :attr:`Grid.preparations`: ``fsad-bench run``
performs them as printed steps (:func:`prepare`) and resolves again; ``--dry-run`` and the API's plan
only list them. Everything that can be checked without running a cell is checked here, before any
store is opened: names, hyper-parameter types and ranges, image sizes against each method's minimum,
seeds, settings. A method, dataset or seed given twice runs once, and so does any other pair of cells
with the same key.

A method's hyper-parameters: :func:`fsad_bench.config.resolve_method_config` (its ``Config``
defaults, its own budget table, the spec's ``[set.<budget>]``, ``--weights``, ``--set``), resolved once
per method and grid; the protocol's swept hyper-parameters (``[method_settings]``) come on top per
cell. ``--set KEY=V1,V2`` with a KEY of the spec's ``[settings]`` (e.g. ``n_anomaly``) replaces that
setting's values.

Data that cannot hold a setting
-------------------------------
Each (dataset/category, setting, seed) is split here, once, before the grid runs; a split rule that
refuses the data (:class:`~fsad_bench.errors.SkipCell`, e.g. Q2's known class of 3 images, or
:class:`~fsad_bench.errors.SettingDoesNotFit`, e.g. Q1's ``n_anomaly=10`` on a category of 14
anomalies) decides the cell here, so ``--dry-run`` says exactly what a run does:

* **not applicable**: the setting is the spec's and some cells of the grid can hold it. The cells
  that cannot are stored as 'skipped' with the reason (as a SkipCell of a worker is), without loading
  the data or running the detector, and each (dataset/category, setting) is said once, before the
  grid, with the reason and, when the rule says what would fit, the command that fits it
  (``fsad-bench run ... --set n_anomaly=7``).
* **an error** (exit 2, one line, before anything is stored): a value the user gave with ``--set``
  that no (dataset/category) of the grid can hold (they asked for it explicitly; running nothing of
  it would be a silent no), and a grid of which no cell can hold its setting at all, the spec's
  defaults included (a run that only stores 'skipped' rows computes nothing). A split rule's
  plain :class:`~fsad_bench.errors.UserError` (a value that is wrong whatever the data, e.g. Q5's
  ``n_anomaly`` above ``max_anomaly``) is always an error.

Seeds are integers in [0, :data:`MAX_SEED`]: the store keeps them as SQLite INTEGER (signed 64-bit)
and detectors seed a second generator with ``seed + 1``.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

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
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import SettingDoesNotFit, SkipCell, UserError
from fsad_bench.input_size import cell_input_size, img_size_is_explicit
from fsad_bench.paths import data_root
from fsad_bench.protocol import ProtocolSpec, setting_values
from fsad_bench.runner.job import Cell, attach_config_ids, attach_provenance
from fsad_bench.runner.request import RunRequest
from fsad_bench.weights import ensure_weights, weights_cache_path

#: The one real dataset whose images install from PyPI (``pip install "fsad-bench[elpv]"``). When none
#: of a spec's datasets is prepared, the spec lists this one and its package is installed, it is
#: prepared into the data root and run instead of the spec's embedded fallback; ``FSAD_AUTO_ELPV=0``
#: (or an explicit ``--datasets``) turns this off.
AUTO_DATASET = "elpv"
AUTO_DATASET_ENV = "FSAD_AUTO_ELPV"


@dataclass
class Preparation:
    """A step a real run takes before its grid (printed first), never taken while resolving."""

    what: str
    run: Callable[[], None]


@dataclass
class Grid:
    """A request resolved: its cells and everything said or to be done about them."""

    spec: ProtocolSpec
    budget: Budget
    methods: dict[str, ResolvedMethod]
    cells: list[Cell] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # datasets of the spec not present
    notes: list[str] = field(default_factory=list)     # said once before the grid runs
    preparations: list[Preparation] = field(default_factory=list)
    pending: str = ""  # why the cells are not known until the preparations ran ("" = they are)


def elpv_package_installed() -> bool:
    return importlib.util.find_spec("elpv_dataset") is not None


#: the largest seed: the store keeps seeds as SQLite INTEGER (signed 64-bit, at most 2**63 - 1) and
#: detectors seed a second generator with ``seed + 1`` (torch accepts up to 2**64 - 1, numpy any)
MAX_SEED = 2**63 - 2
_SEED = TypeAdapter(Annotated[int, Field(ge=0)])


def checked_seed(raw: Any) -> int:
    """A seed of the grid: an integer in [0, MAX_SEED]; a one-line UserError otherwise."""
    seed = checked_int(raw, "seed", _SEED)
    if seed > MAX_SEED:
        raise UserError(f"seed {seed} is too large: seeds go up to {MAX_SEED} (2**63 - 2; the results store "
                        "keeps a seed as a signed 64-bit integer and detectors also seed with seed + 1)")
    return seed


def _unique(items: list[Any]) -> list[Any]:
    """``items`` without repeats, in their first order (``--seeds 0,0`` runs seed 0 once)."""
    return list(dict.fromkeys(items))


def resolve_methods(spec: ProtocolSpec, req: RunRequest) -> list[str]:
    """``--methods``: names, where ``all`` stands for the spec's methods (``all,dra,patchcore`` adds
    two); none given: the spec's."""
    names = req.methods or ["all"]
    return _unique([m for name in names for m in (spec.methods if name == "all" else [name])])


def resolve_budget(spec: ProtocolSpec, name: str | None, methods: list[str]) -> Budget:
    """The budget of the grid: ``--budget`` or the spec's default; a known one, or one that a method
    of the run declares."""
    declared = {b for m in methods for b in load_detector(m).budgets}
    return get_budget(name or spec.default_budget, declared)


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


def _weights_step(arch: str) -> Preparation | None:
    """Fetching ``arch``'s ImageNet weights when the torch cache lacks them (None when it has them)."""
    path = weights_cache_path(arch)  # an architecture without ImageNet weights is an error here
    if path.exists():
        return None
    return Preparation(f"ImageNet weights for {arch} are not in the torch cache: fetching them once into "
                       f"{path}", lambda: ensure_weights(arch))


def resolve_grid_methods(spec: ProtocolSpec, budget: Budget, methods: list[str], overrides: dict[str, str],
                         weights: str | None
                         ) -> tuple[dict[str, ResolvedMethod], list[str], list[Preparation]]:
    """Every method's resolved configuration for this grid, the notes to say once (methods without
    the budget) and the weights to fetch; ``--set`` and ``[set.<budget>]`` keys are checked against
    the run's methods."""
    protocol_set = spec.set_at(budget.name)
    resolved = {m: resolve_method_config(budget, m, weights, overrides, protocol_set) for m in methods}
    notes = []
    for m, r in resolved.items():
        check_img_size(m, r.config, r.img_size)
        if not r.budget_declared:
            notes.append(f"method {m} declares no budget {budget.name!r}: it runs on its Config defaults at "
                         f"{r.img_size} px" + (f", weights {r.config.weights}" if hasattr(r.config, "weights")
                                                else ""))
    known_keys = set().union(*(config_fields(r.cls) for r in resolved.values())) | {"img_size"}
    for key in overrides:
        target, dot, name = key.rpartition(".")
        if dot and target not in methods:
            raise UserError(f"--set {key}: method {target!r} is not in this run ({', '.join(methods)})")
        if not dot and name not in known_keys:
            raise UserError(f"--set {key}: no method in this run has a hyper-parameter {name!r}, and "
                            f"protocol {spec.name} has no setting of that name (its settings: "
                            f"{', '.join(spec.settings) or 'none'})")
    for key in protocol_set:
        if key not in known_keys:
            raise UserError(f"protocol {spec.name}: [set.{budget.name}] {key}: no method in this run has a "
                            "hyper-parameter of that name")
    for key in spec.method_settings:
        for m, r in resolved.items():
            if key not in config_fields(r.cls):
                raise UserError(f"protocol {spec.name} sweeps {key!r}, which method {m!r} does not have")
    archs = _unique([a for r in resolved.values() for a in r.cls.required_weights(r.config)])
    steps = [s for s in map(_weights_step, archs) if s is not None]
    return resolved, notes, steps


def split_overrides(spec: ProtocolSpec, overrides: dict[str, str]
                    ) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """``--set`` values that set the spec's split settings (``n_anomaly=1`` or ``n_anomaly=1,10``),
    validated against the split rule; and the rest (hyper-parameters)."""
    settings, rest = {}, {}
    for key, value in overrides.items():
        if key in spec.settings:
            values = [v.strip() for v in value.split(",") if v.strip()]
            settings[key] = setting_values(spec, key, values, f"--set {key}", from_text=True)
        else:
            rest[key] = value
    return settings, rest


def resolve_datasets(spec: ProtocolSpec, req: RunRequest) -> tuple[list[str], list[str], list[str],
                                                                  list[Preparation]]:
    """(datasets to run, real datasets of the spec that are missing, notes, preparations).

    Explicit ``--datasets``, else the spec's datasets that are present, else ELPV prepared from its
    installed package (a preparation; see :data:`AUTO_DATASET`), else the spec's fallback (the
    embedded ``synthetic``). The choice and its reason are a note, so a changed default is never silent.
    """
    if req.datasets:
        for name in req.datasets:
            info(name, req.data_root)  # unknown name -> UserError
            if not is_present(name, req.data_root):
                categories(name, req.data_root)  # raises the DataError that says how to fix it
        return _unique(req.datasets), [], [], []
    present = [d for d in spec.datasets if is_present(d, req.data_root)]
    missing = [d for d in spec.datasets if d not in present]
    if present:
        return present, missing, [], []
    root = data_root(req.data_root)
    if AUTO_DATASET in spec.datasets and os.environ.get(AUTO_DATASET_ENV, "1") != "0":
        if elpv_package_installed():
            step = Preparation(
                f"no dataset of protocol {spec.name} is prepared under {root}; the elpv-dataset package is "
                f"installed, so ELPV is prepared into {root / AUTO_DATASET} (once, about a minute) and run "
                f"(--datasets synthetic or {AUTO_DATASET_ENV}=0 runs the embedded dataset instead)",
                lambda: _prepare_auto_dataset(spec, root))
            return [AUTO_DATASET], [d for d in missing if d != AUTO_DATASET], [], [step]
        note = (f"no dataset of protocol {spec.name} is prepared under {root}: running on the embedded "
                f"{', '.join(spec.fallback_datasets)}; pip install 'fsad-bench[elpv]' to run on the real "
                "ELPV dataset instead (README, Set up)")
        return list(spec.fallback_datasets), missing, [note], []
    return list(spec.fallback_datasets), missing, [], []


def _prepare_auto_dataset(spec: ProtocolSpec, root: Path) -> None:
    """Prepare ELPV from its installed package into ``root``, saying how long it took."""
    from fsad_bench.data.converters import prepare as prepare_dataset

    start = time.perf_counter()
    try:
        folder, _conv = prepare_dataset(AUTO_DATASET, None, root)
    except UserError as exc:
        raise type(exc)(f"{exc} (while preparing ELPV from its package because no dataset of "
                        f"{spec.name} is prepared; --datasets synthetic or {AUTO_DATASET_ENV}=0 skips it)"
                        ) from exc
    print(f"elpv ready in {folder} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


def resolve_grid(spec: ProtocolSpec, req: RunRequest) -> Grid:
    """The request's grid, resolved and validated, without side effects (see the module docstring)."""
    methods = resolve_methods(spec, req)
    budget = resolve_budget(spec, req.budget, methods)  # once per grid
    overrides = parse_overrides(req.overrides)
    settings, params = split_overrides(spec, overrides)
    per_method, notes, steps = resolve_grid_methods(spec, budget, methods, params, req.weights)
    seeds = req.seeds if req.seeds is not None else spec.seeds
    seeds = _unique([checked_seed(s) for s in seeds])
    datasets, missing, data_notes, data_steps = resolve_datasets(spec, req)
    grid = Grid(spec, budget, per_method, [], missing, notes + data_notes, data_steps + steps)
    if data_steps:
        target = data_root(req.data_root) / AUTO_DATASET
        grid.pending = (f"{data_steps[0].what.split(';')[0]}: a real run first prepares ELPV from the "
                        f"installed elpv-dataset package into {target} (once, about 40 s) and runs on "
                        f"it; `fsad-bench data prepare {AUTO_DATASET}` prepares it now, after which "
                        f"--dry-run shows its grid (--datasets synthetic or {AUTO_DATASET_ENV}=0 runs the "
                        "embedded dataset instead)")
        return grid
    cells = []
    for dataset in datasets:
        cats = categories(dataset, req.data_root)
        for cat in cats:  # the store and reports hold category names as UTF-8 text
            check_utf8_name(dataset_dir(dataset, req.data_root) / cat)
        if dataset in spec.categories:
            cats = [c for c in cats if c in spec.categories[dataset]]
        version = data_version(dataset)  # synthetic's generator; the files' content: attach_provenance
        for category in cats:
            for setting in _expand_settings(spec, settings, dataset, category, req.data_root):
                split_kwargs = {k: v for k, v in setting.items() if k not in spec.method_settings}
                swept = {k: v for k, v in setting.items() if k in spec.method_settings}
                for method, resolved in per_method.items():
                    # Mastcam is never upsampled (its native 64 px, as the paper's); see input_size
                    img_size = cell_input_size(dataset, resolved.img_size,
                                               img_size_is_explicit(overrides, method))
                    if img_size != resolved.img_size:  # capped to the dataset's native size
                        check_img_size(method, resolved.config, img_size, dataset)
                    for seed in seeds:
                        cells.append(Cell(
                            spec.name, spec.split, dataset, category, method, seed, setting, budget.name,
                            img_size, {**resolved.params, **swept},
                            str(req.data_root) if req.data_root else None,
                            {**split_kwargs, **spec.split_args}, spec.pixel_metrics, version))
    refusals: dict[str, Exception] = {}
    cells = attach_provenance(cells, refusals)  # keys cover the data's content and the detector's code
    attach_config_ids(cells, spec.layout().axis(spec))
    grid.cells = list({c.key: c for c in cells}.values())  # e.g. a setting listed twice in a spec
    if not grid.cells:
        raise UserError(f"the grid of protocol {spec.name} has no cells (seeds: {seeds}, methods: {methods}, "
                        f"datasets: {datasets}); check --seeds, --methods, --datasets and the spec's "
                        "[categories]")
    grid.notes += _not_applicable(grid.cells, refusals, spec, settings, req)
    return grid


def _setting_text(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(setting.items())) or "(no setting)"


def _fits(refusals: list[Exception]) -> dict[str, Any]:
    """The setting values that fit every one of ``refusals`` (the smallest of what each would hold),
    for the keys every refusal names; {} when a refusal does not say what would fit."""
    fits = [r.fits for r in refusals if isinstance(r, SettingDoesNotFit)]
    if len(fits) < len(refusals) or not fits:
        return {}
    out = {}
    for key in set.intersection(*(set(f) for f in fits)):
        values = [f[key] for f in fits]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = min(values)
        elif all(v == values[0] for v in values):
            out[key] = values[0]
    return out


def _fitting_values(grid_cells: list[Cell], fits: dict[str, Any], refused: set[Any], key: str) -> list[Any]:
    """The grid's values of setting ``key`` with the ``refused`` ones replaced by what fits."""
    values = _unique([c.setting[key] for c in grid_cells if key in c.setting])
    return _unique([fits[key] if v in refused else v for v in values])


def fitting_command(req: RunRequest, changes: dict[str, list[Any]]) -> str:
    """The request as the command that sets ``changes`` (``{"n_anomaly": [7]}``) instead: the user's own
    ``fsad-bench run`` command line with those ``--set`` (and without ``--dry-run``), or one built from
    the request (the Python API says ``overrides=``)."""
    sets = [f"{k}={','.join(map(str, v))}" for k, v in changes.items()]
    argv = list(req.argv or [])
    if argv[:1] == ["fsad_bench.run"]:
        return "fsad_bench.run(..., overrides={" + ", ".join(
            f"{k!r}: {v[0]!r}" if len(v) == 1 else f"{k!r}: {','.join(map(str, v))!r}"
            for k, v in changes.items()) + "})"
    if len(argv) >= 2 and Path(argv[0]).name == "fsad-bench" and argv[1] == "run":
        words, rest = ["fsad-bench", "run"], argv[2:]
        i = 0
        while i < len(rest):
            word = rest[i]
            value = rest[i + 1] if word == "--set" and i + 1 < len(rest) else \
                word.removeprefix("--set=") if word.startswith("--set=") else None
            if word == "--dry-run":
                i += 1
            elif value is not None and value.split("=", 1)[0].strip() in changes:
                i += 2 if word == "--set" else 1
            else:
                words.append(word)
                i += 1
    else:
        words = ["fsad-bench", "run", "--protocol", str(req.protocol)]
        lists = (("--methods", req.methods), ("--datasets", req.datasets), ("--seeds", req.seeds))
        for flag, values in lists:
            if values:
                words += [flag, ",".join(str(v) if isinstance(v, str | int) else
                                         f"{v.__module__}:{v.__qualname__}" for v in values)]
        for flag, value in (("--budget", req.budget), ("--weights", req.weights),
                            ("--data-root", req.data_root), ("--out", req.out)):
            if value is not None:
                words += [flag, str(value)]
        for o in req.overrides:
            if o.split("=", 1)[0].strip() not in changes:
                words += ["--set", o]
    for text in sets:
        words += ["--set", text]
    return shlex.join(words)


def _not_applicable(cells: list[Cell], refusals: dict[str, Exception], spec: ProtocolSpec,
                    explicit: dict[str, list[Any]], req: RunRequest) -> list[str]:
    """Decide the cells whose split rule refuses their data (see the module docstring): raise for what
    is an error, else mark them not applicable and return the notes that say so, one per
    (dataset/category, setting)."""
    refused = [c for c in cells if c.key in refusals]
    if not refused:
        return []
    for cell in refused:
        exc = refusals[cell.key]
        if not isinstance(exc, SkipCell | SettingDoesNotFit):  # wrong whatever the data
            raise UserError(str(exc)) from None
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in refused:
        groups.setdefault((cell.dataset, cell.category, _setting_text(cell.setting)), []).append(cell)

    def first_reason(group_cells: list[Cell]) -> str:
        cell = group_cells[0]
        return f"{cell.dataset}/{cell.category} {_setting_text(cell.setting)}: {refusals[cell.key]}"

    def command(group_cells: list[Cell]) -> str:
        fits = {k: v for k, v in _fits([refusals[c.key] for c in group_cells]).items()
                if k in spec.settings}  # what --set can change (a [split_args] constant it cannot)
        if not fits:
            return ""
        changes = {k: _fitting_values(cells, fits, {c.setting.get(k) for c in group_cells}, k) for k in fits}
        return f"; {fitting_command(req, changes)} fits it"

    for key, values in explicit.items():
        for value in values:
            of_value = [c for c in cells if c.setting.get(key) == value]
            if of_value and all(c.key in refusals for c in of_value):
                raise UserError(f"--set {key}={value}: no category of the grid can hold it ("
                                f"{first_reason(of_value)}){command(of_value)}")
    if len(refused) == len(cells):
        more = (f"; {len(groups) - 1} more (dataset/category, setting) cannot either" if len(groups) > 1
                else "")
        raise UserError(f"no cell of the grid of protocol {spec.name} can run: its data cannot hold the "
                        f"setting ({first_reason(refused)}){more}{command(refused)}")
    notes = []
    for group in groups.values():
        for cell in group:
            cell.not_applicable = str(refusals[cell.key])
        notes.append(f"not applicable (stored as 'skipped', not run; {len(group)} cell(s)): "
                     f"{first_reason(group)}{command(group)}")
    return notes


def prepare(grid: Grid, say: Callable[[str], None]) -> bool:
    """Take the grid's preparations, each announced by ``say``; True when there were any (the grid
    must then be resolved again: prepared data changes its cells' keys)."""
    for step in grid.preparations:
        say(step.what)
        step.run()
    return bool(grid.preparations)


def build_cells(spec: ProtocolSpec, req: RunRequest) -> tuple[list[Cell], list[str]]:
    """The cells of a real run of ``req`` (preparations taken, notes printed) and the spec's datasets
    that are missing: for scripts and tests that run cells themselves."""
    def say(text: str) -> None:
        print(text, file=sys.stderr)

    grid = resolve_grid(spec, req)
    if prepare(grid, say):
        grid = resolve_grid(spec, req)
    for note in grid.notes:
        say(note)
    return grid.cells, grid.missing


def _expand_settings(spec: ProtocolSpec, settings: dict[str, list[Any]], dataset: str, category: str,
                     root: Path | None) -> list[dict[str, Any]]:
    """The setting grid of one category (``settings``: values ``--set`` gave instead of the spec's);
    ``known_class = "*"`` becomes each of its anomaly classes (or the spec's list for the dataset /
    category)."""
    grid = spec.setting_grid(settings)
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
