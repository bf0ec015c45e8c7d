"""Execute a grid: skip finished cells, run the rest (in the driver, local worker processes or a dask
cluster; see ``executors``), store each result as soon as it arrives. The driver is the only writer
of the store, so a killed driver or worker loses only the cells that were running.

A run reports success only if every result it stored is in the store file on disk at the end
(``ResultStore.verify``); a store that vanished, was replaced or damaged during the run is a one-line
error and the manifest records it.
"""

from __future__ import annotations

from tqdm import tqdm

from fsad_bench.errors import UserError
from fsad_bench.runner.executors import ExecConfig, Execution, resolve_device
from fsad_bench.runner.job import Cell, attach_provenance, not_applicable_result
from fsad_bench.runner.manifest import RunManifest, RunSummary  # RunSummary re-exported: it lived here
from fsad_bench.store import ResultStore, StoreError

__all__ = ["RERUN_CHOICES", "RunSummary", "resolve_device", "run_grid"]

#: --rerun: "failed" recomputes cells without an 'ok' / 'skipped' row, "all" every cell of the grid
RERUN_CHOICES = ("failed", "all")


def run_grid(cells: list[Cell], store: ResultStore, jobs: int | None = None, device: str = "auto",
             progress: bool = True, execution: ExecConfig | Execution | None = None,
             manifest: RunManifest | None = None, rerun: str = "failed") -> RunSummary:
    """Run every cell whose key has no 'ok' row (``rerun="all"``: every cell); failed rows are retried
    and overwritten.

    ``execution`` (default: local, ``jobs`` workers on ``device``) says where cells run; pass a ready
    :class:`Execution` to connect to a cluster before the store is opened. ``manifest``, if given, is
    written before the first cell and again at the end. Cells without provenance get it here
    (:func:`attach_provenance`), so their keys cover data and detector whoever built them.
    """
    if rerun not in RERUN_CHOICES:
        raise UserError(f"unknown --rerun {rerun!r}; choose one of {', '.join(RERUN_CHOICES)}")
    if store.readonly:
        raise StoreError(f"results store {store.path} is read-only; choose a writable --out")
    attach_provenance(cells)
    executor = execution if isinstance(execution, Execution) else \
        Execution(execution or ExecConfig(jobs=jobs, device=device))
    done = store.done_keys() if rerun == "failed" else set()
    todo = [c for c in cells if c.key not in done]
    # cells the grid resolution found not applicable (said once, before the grid): stored as 'skipped'
    # here, in the driver, without loading their data or running a detector
    not_applicable = [c for c in todo if c.not_applicable]
    summary = RunSummary(total=len(cells), skipped=len(cells) - len(todo))
    if manifest is not None:
        manifest.start(executor.info, summary)
    bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    stored: list[str] = []
    error = ""
    try:
        for cell in not_applicable:
            result = not_applicable_result(cell)
            store.put(result)
            stored.append(result.key)
            summary.not_applicable.append(result)
            bar.update(1)
        for result in executor.results([c for c in todo if not c.not_applicable]):
            store.put(result)
            stored.append(result.key)
            if result.status == "ok":
                summary.ok += 1
                bar.set_postfix_str(f"{result.dataset}/{result.category} {result.method} "
                                    f"AUC={result.auc_roc:.3f}", refresh=False)
                if result.flags:
                    summary.flagged.append(result)
                    bar.write(f"FLAGGED {result.dataset}/{result.category} {result.method} "
                              f"seed={result.seed}: " + "; ".join(f"{f['flag']}: {f['reason']}"
                                                                  for f in result.flags))
            elif result.status == "skipped":
                summary.not_applicable.append(result)
                bar.write(f"not applicable: {result.dataset}/{result.category} {result.method} "
                          f"{result.setting}: {result.error}")
            else:
                summary.failed.append(result)
                bar.write(f"FAILED {result.dataset}/{result.category} {result.method} "
                          f"seed={result.seed}: {result.error}")
            bar.update(1)
        store.verify(stored)  # the file on disk holds what this run stored: only then is it a success
    except BaseException as exc:  # Ctrl-C, a store error, ...: the manifest says the run broke off
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise
    finally:
        bar.close()
        executor.close()
        summary.not_run = len(todo) - len(stored)
        summary.worker_deaths = executor.worker_deaths
        summary.stopped = executor.stopped
        if manifest is not None:
            _finish_manifest(manifest, summary, error)
    return summary


def _finish_manifest(manifest: RunManifest, summary: RunSummary, error: str) -> None:
    """Write the final manifest. If the run already broke off, a manifest that cannot be written
    (the same full disk, ...) must not hide why the run broke off: that error goes on."""
    try:
        manifest.finish(summary, error)
    except UserError:
        if not error:
            raise
