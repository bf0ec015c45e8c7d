"""Execute a grid: skip finished cells, run the rest (in-process or joblib workers), store each
result as soon as it arrives. The driver is the only writer of the store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from joblib import Parallel, delayed
from tqdm import tqdm

from fsad_bench.runner.job import Cell, run_cell
from fsad_bench.store import CellResult, ResultStore


def resolve_device(device: str) -> list[str]:
    """Devices to place cells on: 'auto' = every CUDA GPU, else the CPU."""
    if device == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    if device == "cuda":
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    return [d.strip() for d in device.split(",") if d.strip()]


@dataclass
class RunSummary:
    total: int = 0
    skipped: int = 0
    ok: int = 0
    failed: list[CellResult] = field(default_factory=list)
    not_applicable: list[CellResult] = field(default_factory=list)


def _results(cells: list[Cell], devices: list[str], jobs: int) -> Iterator[CellResult]:
    placed = [(c, devices[i % len(devices)]) for i, c in enumerate(cells)]
    if jobs <= 1:
        for cell, dev in placed:
            yield run_cell(cell, dev)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    yield from Parallel(n_jobs=jobs, return_as="generator_unordered")(
        delayed(run_cell)(cell, dev, threads) for cell, dev in placed)


def run_grid(cells: list[Cell], store: ResultStore, jobs: int = 1, device: str = "auto",
             progress: bool = True) -> RunSummary:
    """Run every cell whose key has no 'ok' row; failed rows are retried and overwritten."""
    done = store.done_keys()
    todo = [c for c in cells if c.key not in done]
    summary = RunSummary(total=len(cells), skipped=len(cells) - len(todo))
    bar = tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    for result in _results(todo, resolve_device(device), jobs):
        store.put(result)
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
            bar.write(f"FAILED {result.dataset}/{result.category} {result.method} seed={result.seed}: "
                      f"{result.error}")
        bar.update(1)
    bar.close()
    return summary
