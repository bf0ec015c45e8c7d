"""Execute a grid: skip finished cells, run the rest (in the driver, local worker processes or a dask
cluster; see ``executors``), store each result as soon as it arrives. The driver is the only writer
of the store, so a killed driver or worker loses only the cells that were running."""

from __future__ import annotations

from tqdm import tqdm

from fsad_bench.runner.executors import ExecConfig, Execution, resolve_device
from fsad_bench.runner.job import Cell
from fsad_bench.runner.manifest import RunManifest, RunSummary  # RunSummary re-exported: it lived here
from fsad_bench.store import ResultStore

__all__ = ["RunSummary", "resolve_device", "run_grid"]


def run_grid(cells: list[Cell], store: ResultStore, jobs: int | None = None, device: str = "auto",
             progress: bool = True, execution: ExecConfig | Execution | None = None,
             manifest: RunManifest | None = None) -> RunSummary:
    """Run every cell whose key has no 'ok' row; failed rows are retried and overwritten.

    ``execution`` (default: local, ``jobs`` workers on ``device``) says where cells run; pass a ready
    :class:`Execution` to connect to a cluster before the store is opened. ``manifest``, if given, is
    written before the first cell and again at the end.
    """
    executor = execution if isinstance(execution, Execution) else \
        Execution(execution or ExecConfig(jobs=jobs, device=device))
    done = store.done_keys()
    todo = [c for c in cells if c.key not in done]
    summary = RunSummary(total=len(cells), skipped=len(cells) - len(todo))
    if manifest is not None:
        manifest.start(executor.info, summary)
    bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    stored, error = 0, ""
    try:
        for result in executor.results(todo):
            store.put(result)
            stored += 1
            if result.status == "ok":
                summary.ok += 1
                bar.set_postfix_str(f"{result.dataset}/{result.category} {result.method} "
                                    f"AUC={result.auc_roc:.3f}", refresh=False)
            elif result.status == "skipped":
                summary.not_applicable.append(result)
                bar.write(f"not applicable: {result.dataset}/{result.category} {result.method} "
                          f"{result.setting}: {result.error}")
            else:
                summary.failed.append(result)
                bar.write(f"FAILED {result.dataset}/{result.category} {result.method} "
                          f"seed={result.seed}: {result.error}")
            bar.update(1)
    except BaseException as exc:  # Ctrl-C, a store error, ...: the manifest says the run broke off
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise
    finally:
        bar.close()
        executor.close()
        summary.not_run = len(todo) - stored
        summary.worker_deaths = executor.worker_deaths
        summary.stopped = executor.stopped
        if manifest is not None:
            manifest.finish(summary, error)
    return summary
