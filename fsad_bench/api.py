"""The Python API: ``fsad_bench.run(...) -> DataFrame`` and ``fsad_bench.load_results(dir)``.

``fsad-bench run`` parses its arguments into a :class:`~fsad_bench.runner.request.RunRequest` and calls
:func:`execute` (or :func:`plan` for ``--dry-run``); :func:`run` builds the same request from keyword
arguments, and both resolve it through the one pure grid resolution
(:func:`fsad_bench.runner.generator.resolve_grid`), so the CLI and the API share one code path (same
cells, keys, store, manifest and exit rules). A real run first takes the grid's preparations (ELPV,
ImageNet weights), printed; a dry run lists them.

A detector *class* may be passed in ``methods`` instead of a name: it runs under ``cls.name`` (or its
class name in lower case), which is its column in every table. Cells carry its import path
('module:Class') so worker processes can import it; a class that a worker cannot import (defined in
``__main__`` or inside a function) is refused before the grid when cells would leave this process.
"""

from __future__ import annotations

import dataclasses
import importlib
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fsad_bench.errors import UserError
from fsad_bench.runner.executors import ClusterOptions, ExecConfig
from fsad_bench.runner.request import RunRequest

if TYPE_CHECKING:
    from fsad_bench.budgets import Budget
    from fsad_bench.detectors.base import Detector
    from fsad_bench.protocol import ProtocolSpec
    from fsad_bench.runner.generator import Grid
    from fsad_bench.runner.job import Cell
    from fsad_bench.runner.manifest import RunSummary
    from fsad_bench.store import ResultStore

#: Where the detectors' ``seconds_per_cell`` (used by ``--dry-run`` when the store has no finished cell
#: of the method at that budget and image size) were measured: every q1 cell of the embedded synthetic
#: dataset run by ``run_cell`` with one torch thread, the median over the categories of the process CPU
#: time, i.e. about the wall time on one free core. A real dataset with more images takes somewhat
#: longer (scoring, BatchNorm recalibration); a GPU is faster at the paper budget.
DEFAULTS_MEASURED_ON = "synthetic, one CPU thread"


@dataclass
class RunOutcome:
    """What :func:`execute` did: the grid's cells, the summary counts, where the results are."""

    out: Path
    cells: list[Cell]
    summary: RunSummary
    mlflow_failures: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return grid_frame(self.out, self.cells)


@dataclass
class _Grid:
    grid: Grid
    out: Path
    run_classes: dict[str, type[Detector]]  # name and 'module:Class' -> class, for registered_for_run

    @property
    def spec(self) -> ProtocolSpec:
        return self.grid.spec

    @property
    def cells(self) -> list[Cell]:
        return self.grid.cells


# --- methods given as classes ---------------------------------------------------------------------

def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _split_methods(methods: Sequence[str | type] | None) -> tuple[list[str] | None, dict[str, type]]:
    """Method names for the grid, and the classes passed directly by name (entry points excluded)."""
    from fsad_bench.detectors.base import Detector
    from fsad_bench.detectors.registry import available_detectors

    if methods is None:
        return None, {}
    if isinstance(methods, (str, type)):
        methods = [methods]
    names: list[str] = []
    classes: dict[str, type] = {}
    plugins: dict[str, type] | None = None
    for m in methods:
        if isinstance(m, str):
            names.append(m)
            continue
        if not (isinstance(m, type) and issubclass(m, Detector)):
            raise UserError(f"methods: {m!r} is neither a method name nor a fsad_bench Detector subclass")
        name = m.name or m.__name__.lower()
        if plugins is None:
            plugins = available_detectors(warn=False)
        if plugins.get(name) is m:  # the class of an entry point: run it under that name
            names.append(name)
            continue
        if name in plugins or (name in classes and classes[name] is not m):
            raise UserError(f"detector class {_class_path(m)} is named {name!r}, which another detector "
                            "already has; set a different 'name' on the class")
        classes[name] = m
        names.append(name)
    return names, classes


def _not_importable(cls: type) -> str:
    """Why a spawned or remote worker could not import ``cls`` ('' when it can)."""
    if cls.__module__ in ("__main__", "__mp_main__"):
        return "it is defined in __main__ (a script, notebook or python -c), which workers do not import"
    if "<locals>" in cls.__qualname__:
        return "it is defined inside a function"
    try:
        obj: Any = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        return f"importing it fails here ({type(exc).__name__}: {exc})"
    return "" if obj is cls else f"{_class_path(cls)} is another object"


# --- the grid -------------------------------------------------------------------------------------

def _grid(req: RunRequest, prepare: bool = False) -> _Grid:
    """Resolve the request into its grid (validating every name and hyper-parameter); with ``prepare``
    the grid's preparations are taken first, each announced (a real run), else only listed."""
    from fsad_bench.detectors.registry import registered_for_run
    from fsad_bench.paths import check_output_dir, default_results_dir
    from fsad_bench.protocol import load_protocol
    from fsad_bench.runner.generator import prepare as take
    from fsad_bench.runner.generator import resolve_grid
    from fsad_bench.runner.runner import RERUN_CHOICES
    from fsad_bench.store import check_store

    spec = load_protocol(req.protocol)
    req.execution.validate()  # before any cell is built or the store touched
    if req.rerun not in RERUN_CHOICES:
        raise UserError(f"unknown --rerun {req.rerun!r}; choose one of {', '.join(RERUN_CHOICES)}")
    out = check_output_dir(Path(req.out) if req.out is not None else default_results_dir(spec.name))
    # an empty, damaged, foreign or read-only results.sqlite, or a finished row that cannot be trusted:
    # refused by a run and its dry run alike, before anything is resolved, printed or written
    check_store(out, check_done=req.rerun == "failed")
    names, classes = _split_methods(req.methods)
    _check_importable(classes, req.execution)
    if req.mlflow:
        from fsad_bench.tracking import _mlflow

        _mlflow()  # the package is there (a real run also connects to the URI, which a dry run does not)
    run_classes = {**classes, **{_class_path(c): c for c in classes.values()}}
    named = dataclasses.replace(req, methods=names)
    with registered_for_run(run_classes):
        grid = resolve_grid(spec, named)
        if prepare and take(grid, _say):
            grid = resolve_grid(spec, named)
    for cell in grid.cells:
        if cell.method in classes:
            cell.detector = _class_path(classes[cell.method])
    return _Grid(grid, out, run_classes)


def _check_importable(classes: dict[str, type], execution: ExecConfig) -> None:
    """Detector classes given directly must be importable by worker processes when cells leave this
    process (a cluster, or more than one local worker)."""
    if not classes:
        return
    from fsad_bench.runner.executors import plan_slots, resolve_device

    leaves_process = execution.executor != "local" or plan_slots(
        resolve_device(execution.device), execution.jobs, execution.cells_per_gpu).limit > 1
    for cls in classes.values():
        reason = _not_importable(cls) if leaves_process else ""
        if reason:
            raise UserError(f"detector class {_class_path(cls)} cannot run in worker processes: "
                            f"{reason}; move it into a module on the path (e.g. my_detectors.py) or "
                            "run with jobs=1 (cells then run in this process)")


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _open_store(out: Path) -> ResultStore:
    """The results store of ``out``; a folder the file system refuses, or a results.sqlite that is no
    SQLite database, is one UserError line."""
    import sqlite3

    from fsad_bench.store import ResultStore

    try:
        return ResultStore(out)
    except (OSError, sqlite3.Error) as exc:
        raise UserError(f"cannot open the results store in {out}: {exc}") from None


def execute(req: RunRequest) -> RunOutcome:
    """Run the grid of ``req``: skip finished cells, store each result as it arrives (and log it to
    MLflow with ``req.mlflow``). Bad input raises UserError before the store is touched."""
    from fsad_bench.detectors.registry import registered_for_run
    from fsad_bench.runner.executors import Execution
    from fsad_bench.runner.manifest import RunManifest
    from fsad_bench.runner.runner import run_grid

    g = _grid(req, prepare=True)
    grid = g.grid
    for note in grid.notes:
        _say(note)
    if grid.missing:
        used = sorted({c.dataset for c in g.cells})
        _say(f"datasets not present under the data root: {', '.join(grid.missing)}; running on "
             f"{', '.join(used)} ('fsad-bench list' says how to prepare them)")
    _say(f"protocol {g.spec.name}, budget {grid.budget.name} ({grid.budget.description}); {len(g.cells)} "
         f"cells -> {g.out}")
    manifest = RunManifest(g.out, req.argv or sys.argv, g.spec, g.cells, grid.budget.name)
    executor = Execution(req.execution)  # connects to a cluster: an unreachable one fails before the store
    tracker = None
    try:
        if req.mlflow:
            from fsad_bench.tracking import MlflowTracker, TrackedStore, default_experiment

            experiment = req.mlflow_experiment or default_experiment(g.spec.name, g.out)
            tracker = MlflowTracker(req.mlflow, experiment)
            _say(f"mlflow: experiment {experiment!r} in {tracker.target.where}")
        with registered_for_run(g.run_classes), _open_store(g.out) as store:
            if not store.readonly:  # (a read-only store is refused by run_grid, with one line)
                store.describe({g.spec.name: g.spec.stored()},
                               {m: asdict(r.cls.describe(m)) for m, r in grid.methods.items()})
            target = TrackedStore(store, tracker, g.out) if tracker else store
            summary = run_grid(g.cells, target, progress=req.progress, execution=executor, manifest=manifest,
                               rerun=req.rerun)
    finally:
        executor.close()
    flagged = f" ({len(summary.flagged)} FLAGGED, see above)" if summary.flagged else ""
    _say(f"{summary.ok} cells ran ok{flagged}, {summary.skipped} already finished, {len(summary.failed)} "
         f"failed, {len(summary.not_applicable)} not applicable; results in {g.out} "
         f"('fsad-bench report {g.out}')")
    if summary.worker_deaths or summary.stopped:
        _say(f"{summary.worker_deaths} cell(s) lost their worker process"
             + (f"; {summary.stopped}" if summary.stopped else "")
             + ": finished cells are stored, rerun the same command to run the rest")
    if tracker is not None:
        _say(f"mlflow: {tracker.logged} cell(s) logged to experiment {tracker.experiment!r} at {tracker.uri}"
             + (f"; {len(tracker.failures)} not logged, first: {tracker.failures[0]}" if tracker.failures
                else "") + f"; to browse: {tracker.target.browse}")
    return RunOutcome(g.out, g.cells, summary, tracker.failures if tracker else [])


# --- reading results ------------------------------------------------------------------------------

def _stored(folder: Path, with_blobs: bool = False) -> pd.DataFrame | None:
    """The store's rows, or None when the folder has no store; read as it is (nothing is created or
    changed). A file that is empty or no results store is a StoreError, as a run would refuse it."""
    from fsad_bench.store import STORE_NAME, ResultStore

    if not (Path(folder) / STORE_NAME).exists():
        return None
    with ResultStore(folder, create=False) as store:
        return store.dataframe(with_blobs=with_blobs)


def load_results(folder: str | Path, with_blobs: bool = False) -> pd.DataFrame:
    """Every stored cell of a results folder, one row each (raw, per seed): key, protocol, dataset,
    category, method, seed, setting (dict), budget, img_size, status, error, auc_roc, auc_pr, metrics
    (dict), manifest_hash, wall_s, peak_mem_mb, device, weights, params (dict), info (dict),
    code_version, finished_at. ``with_blobs`` adds the split manifest and the test scores."""
    from fsad_bench.store import STORE_NAME

    df = _stored(Path(folder), with_blobs)
    if df is None:
        raise UserError(f"no results in {folder} (no {STORE_NAME}); run 'fsad-bench run --out {folder}' "
                        "first")
    return df


FIRST_COLUMNS = ["dataset", "category", "method", "seed", "setting", "status", "auc_roc", "auc_pr"]


def grid_frame(out: Path, cells: list[Cell]) -> pd.DataFrame:
    """One row per cell of ``cells`` (in grid order) with its stored result; cells the store lacks
    (a run that stopped early) have status 'not run'."""
    stored = _stored(out)
    by_key = {} if stored is None else {r["key"]: r for r in stored.to_dict("records")}
    rows = []
    for cell in cells:
        row = by_key.get(cell.key) or {"key": cell.key, "protocol": cell.protocol, "budget": cell.budget,
                                       "img_size": cell.img_size, "status": "not run"}
        rows.append({**row, "dataset": cell.dataset, "category": cell.category, "method": cell.method,
                     "seed": cell.seed, "setting": cell.setting})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=FIRST_COLUMNS)
    for col in ("auc_roc", "auc_pr"):
        if col not in df:
            df[col] = float("nan")
    return df[FIRST_COLUMNS + [c for c in df.columns if c not in FIRST_COLUMNS]]


# --- dry run ----------------------------------------------------------------------------------------

@dataclass
class Estimate:
    seconds: float | None  # per cell; None = unknown
    source: str


@dataclass
class GridPlan:
    """The grid a request would run (the same resolution a run makes), what the store already holds,
    and an estimated time."""

    grid: Grid
    out: Path
    state: dict[str, str]          # key -> stored status ('ok', 'skipped', 'failed'); absent: never run
    estimates: dict[tuple[str, str], Estimate]  # (method, dataset) -> per-cell estimate
    workers: int | None            # local worker processes; None on a cluster

    @property
    def spec(self) -> ProtocolSpec:
        return self.grid.spec

    @property
    def budget(self) -> Budget:
        return self.grid.budget

    @property
    def cells(self) -> list[Cell]:
        return self.grid.cells

    @property
    def missing(self) -> list[str]:
        return self.grid.missing

    @property
    def pending(self) -> str:
        """Why the grid is not known yet (a dataset a real run would prepare first); "" when it is."""
        return self.grid.pending

    def to_run(self) -> list[Cell]:
        """The cells a run would compute (not those it stores as not applicable without running)."""
        return [c for c in self.cells
                if self.state.get(c.key) not in ("ok", "skipped") and not c.not_applicable]

    def not_applicable(self) -> list[Cell]:
        """The cells a run would store as not applicable ('skipped') without running them."""
        return [c for c in self.cells if self.state.get(c.key) not in ("ok", "skipped") and c.not_applicable]

    def frame(self) -> pd.DataFrame:
        """One row per cell: dataset, category, method, seed, setting, status ('to run', 'skipped' for a
        cell whose data cannot hold its setting, or the stored one), est_s (the per-cell estimate)."""
        rows = [{"dataset": c.dataset, "category": c.category, "method": c.method, "seed": c.seed,
                 "setting": c.setting,
                 "status": self.state.get(c.key, "skipped" if c.not_applicable else "to run"),
                 "est_s": self.estimates[c.method, c.dataset].seconds, "key": c.key} for c in self.cells]
        return pd.DataFrame(rows, columns=["dataset", "category", "method", "seed", "setting", "status",
                                           "est_s", "key"])

    def text(self) -> str:
        from tabulate import tabulate

        df = self.frame()
        methods = list(dict.fromkeys(c.method for c in self.cells))
        cells = "grid not known yet" if self.pending else f"{len(self.cells)} cells"
        lines = [f"dry run (nothing is run or written): protocol {self.spec.name}, budget "
                 f"{self.budget.name}, {cells} -> {self.out}"]
        lines += self.grid.notes
        lines += [f"a real run first: {step.what}" for step in self.grid.preparations
                  if not self.pending or not step.what.startswith("no dataset")]
        if self.missing:
            lines.append(f"datasets not present under the data root: {', '.join(self.missing)}")
        if self.pending:
            return "\n".join(lines + [self.pending]) + "\n"
        if df.empty:
            return "\n".join(lines + ["the grid is empty"]) + "\n"
        settings = sorted({",".join(f"{k}={v}" for k, v in sorted(c.setting.items())) for c in self.cells})
        seeds = sorted({c.seed for c in self.cells})
        lines.append(f"seeds: {', '.join(map(str, seeds))}; settings ({len(settings)}): "
                     f"{'; '.join(s or '(none)' for s in settings)}")
        table = []
        for ds, sub in df.groupby("dataset", sort=False):
            counts = sub.groupby("method").size()
            table.append([ds, sub["category"].nunique(), *[int(counts.get(m, 0)) for m in methods], len(sub)])
        table.append(["total", "", *[int((df["method"] == m).sum()) for m in methods], len(df)])
        lines.append(tabulate(table, headers=["cells", "categories", *methods, "total"], tablefmt="github"))
        todo = self.to_run()
        state = pd.Series([self.state.get(c.key, "") for c in self.cells])
        n = state.value_counts()
        skip = self.not_applicable()
        lines.append(f"in the store: {int(n.get('ok', 0))} finished, {int(n.get('skipped', 0))} not "
                     f"applicable, {int(n.get('failed', 0))} failed (rerun); to run: {len(todo)}"
                     + (f"; not applicable, stored without running: {len(skip)}" if skip else ""))
        lines.append(self._time_text(todo))
        return "\n".join(lines) + "\n"

    def _time_text(self, todo: list[Cell]) -> str:
        known = [self.estimates[c.method, c.dataset].seconds for c in todo]
        total = sum(s for s in known if s is not None)
        unknown = sorted({c.method for c, s in zip(todo, known) if s is None})
        per = []
        for (method, dataset), est in self.estimates.items():
            if any(c.method == method and c.dataset == dataset for c in todo):
                secs = "unknown" if est.seconds is None else f"{est.seconds:.1f} s"
                per.append(f"  {method} on {dataset}: {secs} per cell ({est.source})")
        head = f"estimated time (an estimate, not a measurement): {_duration(total)} of cell time"
        if unknown:
            head = (f"estimated time (an estimate): at least {_duration(total)}; unknown for "
                    f"{', '.join(unknown)}")
        if self.workers and self.workers > 1 and todo:
            head += f", about {_duration(total / min(self.workers, len(todo)))} with {self.workers} workers"
        return "\n".join([head] + per)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _estimates(cells: list[Cell], stored: pd.DataFrame | None) -> dict[tuple[str, str], Estimate]:
    """Per (method, dataset): the median wall time of finished cells of the method at the same budget
    and image size in the store (same dataset first, then any), else the measured default."""
    out: dict[tuple[str, str], Estimate] = {}
    ok = stored[stored["status"] == "ok"] if stored is not None and not stored.empty else None
    for c in cells:
        if (c.method, c.dataset) in out:
            continue
        est = None
        if ok is not None:
            same = ok[(ok["method"] == c.method) & (ok["budget"] == c.budget)
                      & (ok["img_size"] == c.img_size)]
            for rows, where in ((same[same["dataset"] == c.dataset], f" on {c.dataset}"), (same, "")):
                if len(rows):
                    est = Estimate(float(statistics.median(rows["wall_s"])),
                                   f"median of {len(rows)} finished cell(s){where} in this store")
                    break
        if est is None:
            default = _method_class(c).seconds_per_cell.get(c.budget)
            est = Estimate(default, f"default measured on {DEFAULTS_MEASURED_ON}") if default is not None \
                else Estimate(None, "no finished cell in this store, no measured default")
        out[c.method, c.dataset] = est
    return out


def _method_class(cell: Cell) -> type[Detector]:
    from fsad_bench.detectors.registry import load_detector

    return load_detector(cell.detector or cell.method)


def plan(req: RunRequest) -> GridPlan:
    """The dry run: resolve the grid and read the store, without running, creating or writing anything
    (no results folder, store, manifest, cluster connection or MLflow run)."""
    from fsad_bench.runner.executors import plan_slots, resolve_device

    g = _grid(req)  # a dry run only lists the preparations: it writes nothing, not even a prepared dataset
    if g.grid.pending:
        return GridPlan(g.grid, g.out, {}, {}, None)
    stored = _stored(g.out)
    keys = {c.key for c in g.cells}
    state = {} if stored is None else {k: s for k, s in zip(stored["key"], stored["status"]) if k in keys}
    workers = None
    if req.execution.executor == "local":
        workers = plan_slots(resolve_device(req.execution.device), req.execution.jobs,
                             req.execution.cells_per_gpu).limit
    from fsad_bench.detectors.registry import registered_for_run

    with registered_for_run(g.run_classes):
        estimates = _estimates(g.cells, stored)
    return GridPlan(g.grid, g.out, state, estimates, workers)


# --- the keyword API ------------------------------------------------------------------------------

def _overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{k}={_value_text(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _call_text(**kwargs: Any) -> list[str]:
    """The call as the run manifest's 'argv' (classes by import path)."""
    def show(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(show(x) for x in v) + "]"
        return _class_path(v) if isinstance(v, type) else repr(v)
    return ["fsad_bench.run", *(f"{k}={show(v)}" for k, v in kwargs.items() if v is not None)]


def run(protocol: str = "q1", methods: Sequence[str | type[Detector]] | None = None,
        datasets: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
        budget: str | None = None, out: str | Path | None = None, *, weights: str | None = None,
        overrides: Mapping[str, Any] | Sequence[str] | None = None, data_root: str | Path | None = None,
        jobs: int | None = None, device: str = "auto", cells_per_gpu: int = 1, executor: str = "local",
        scheduler: str | None = None, cluster: ClusterOptions | None = None, progress: bool = True,
        mlflow: str | None = None, mlflow_experiment: str | None = None, dry_run: bool = False,
        rerun: str = "failed") -> pd.DataFrame:
    """Run a protocol's grid, as ``fsad-bench run`` does, and return one row per cell.

    ``methods``: names (entry points, 'package.module:Class') or Detector subclasses; ``overrides``:
    ``{"epochs": 3, "devnet.lr": 1e-3}`` or ``["epochs=3"]`` (as ``--set``). Columns: dataset,
    category, method, seed, setting, status ('ok', 'failed', 'skipped' = not applicable, 'not run'),
    auc_roc, auc_pr, then the stored record (error, metrics, wall_s, key, ...). ``df.attrs`` holds
    ``out`` and the summary counts. With ``dry_run`` nothing runs: the rows are the grid with the
    stored status ('to run' if never run) and an estimated ``est_s`` per cell.
    Bad input raises :class:`fsad_bench.errors.UserError` before anything is written.
    """
    req = RunRequest(
        protocol=protocol, methods=list(methods) if methods is not None else None,
        datasets=list(datasets) if datasets is not None else None,
        seeds=[int(s) for s in seeds] if seeds is not None else None, budget=budget, weights=weights,
        overrides=_overrides(overrides), data_root=Path(data_root) if data_root is not None else None,
        out=Path(out) if out is not None else None,
        execution=ExecConfig(executor, jobs, device, cells_per_gpu, scheduler, cluster or ClusterOptions()),
        progress=progress, mlflow=mlflow, mlflow_experiment=mlflow_experiment, rerun=rerun,
        argv=_call_text(protocol=protocol, methods=methods, datasets=datasets, seeds=seeds, budget=budget,
                        out=out, weights=weights, overrides=overrides, data_root=data_root, jobs=jobs,
                        device=device, executor=executor, rerun=rerun))
    if dry_run:
        p = plan(req)
        df = p.frame()
        df.attrs.update(out=str(p.out), to_run=len(p.to_run()), pending=p.pending)
        return df
    outcome = execute(req)
    df = outcome.frame()
    s = outcome.summary
    df.attrs.update(out=str(outcome.out), ok=s.ok, already_finished=s.skipped, failed=len(s.failed),
                    not_applicable=len(s.not_applicable), flagged=len(s.flagged), not_run=s.not_run,
                    stopped=s.stopped,
                    mlflow_failures=list(outcome.mlflow_failures))
    return df
