"""Does training matter? Each method's AUC trained as configured beside its untrained network.

For a protocol, budget and dataset this runs every cell of the grid twice, on the SAME split
(checked by the split manifest's hash): once as configured ("trained"), once "untrained", and prints
per method the mean AUC-ROC of both, their difference with its seed spread, and the wall time. It
uses the runner's own code path (``build_cells`` -> ``run_cell``), so the trained numbers are those
``fsad-bench run`` stores for the same grid. It asserts nothing about the numbers; it prints them.

**Untrained** is method-agnostic: during ``fit`` every ``torch.optim`` optimiser step is disabled
by a global step pre-hook that sets the gradients of the optimiser's parameters to ``None`` (all of
torch's optimisers skip a parameter without a gradient, weight decay included). Everything else of
``fit`` runs unchanged: the network is built and initialised with the cell's seed, the training
loop's forward and backward passes run (so BatchNorm running statistics move as in training), and
the post-training steps run. After each untrained cell the script checks that every parameter the
optimisers held is bit-identical to its value at the first step, and counts the disabled steps. Per
method at the quick budget this means:

* ``devnet``, ``flos``, ``minns``: the seeded random ResNet-18 (1/4 width) and scoring head, BN
  statistics recalibrated on the training images (``bn_recalibration``); the score is a random
  linear read-out of random features, so its AUC can fall on either side of 0.5.
* ``deepsad``: the random ResNet embedding; the centre c is the mean initial embedding of the
  training data (as in training, where c is fixed before the first step), BN recalibrated; score =
  distance to c.
* ``dsvdd``: the autoencoder "pretraining" leaves the Xavier-initialised encoder as it is, which is
  then copied into phi (as after real pretraining); c = mean initial embedding of the normals; BN
  recalibrated; score = distance to c.
* ``kdad``: the seeded random student against the same frozen teacher (random with ``--weights
  none``); BN statistics as the training loop's forward passes leave them; score = discrepancy.

A detector that never calls a ``torch.optim`` step shows 0 disabled steps: its "untrained" run is
then the trained one, and the table says so.

Spreads: per seed, the mean AUC over the grid's datasets/categories/settings; the "seed sd" is the
population std over seeds of those means (as in the report's tables), and the difference's sd is
that of the per-seed paired differences (trained - untrained on the same splits).

Usage::

    python benchmarks/trained_vs_untrained.py                      # q1, quick budget, its datasets
    python benchmarks/trained_vs_untrained.py --set steps_per_epoch=20 --set img_size=96 --json out.json
    python benchmarks/trained_vs_untrained.py --budget smoke --methods dsvdd --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate
from torch.optim.optimizer import register_optimizer_step_pre_hook

from fsad_bench.errors import UserError
from fsad_bench.protocol import load_protocol
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.job import Cell, run_cell
from fsad_bench.runner.request import RunRequest
from fsad_bench.store import CellResult


@dataclass
class StepsDisabled:
    """What the untrained mode did in one cell: optimiser steps disabled, parameters watched."""

    steps: int = 0
    initial: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # id -> (param, copy)

    def changed_parameters(self) -> int:
        """How many watched parameters differ from their value at the first step (should be 0)."""
        return sum(not torch.equal(p.detach(), copy) for p, copy in self.initial.values())


@contextmanager
def optimiser_steps_disabled() -> Iterator[StepsDisabled]:
    """Within the block every torch.optim step leaves the parameters as they are (see module doc)."""
    record = StepsDisabled()

    def drop_gradients(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        record.steps += 1
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in record.initial:
                    record.initial[id(p)] = (p, p.detach().clone())
                p.grad = None  # torch's optimisers skip parameters without a gradient

    handle = register_optimizer_step_pre_hook(drop_gradients)
    try:
        yield record
    finally:
        handle.remove()


@dataclass
class CellPair:
    """One cell of the grid, trained and untrained on the same split."""

    method: str
    dataset: str
    category: str
    seed: int
    setting: dict[str, Any]
    auc_trained: float | None
    auc_untrained: float | None
    wall_trained_s: float
    wall_untrained_s: float
    steps_disabled: int
    error: str = ""


@dataclass
class MethodFigures:
    """Per method: mean AUCs over the grid, the paired difference and its seed spread, wall time."""

    method: str
    img_size: int
    cells: int
    seeds: int
    auc_trained: float
    auc_trained_seed_sd: float
    auc_untrained: float
    auc_untrained_seed_sd: float
    difference: float
    difference_seed_sd: float
    wall_trained_s: float
    wall_untrained_s: float
    steps_disabled: int

    @property
    def sds_above(self) -> float | None:
        """The difference in units of its seed spread; None with one seed (no spread to compare with)."""
        if self.seeds < 2:
            return None
        if self.difference_seed_sd > 0:
            return self.difference / self.difference_seed_sd
        return float("inf") if self.difference > 0 else 0.0


def run_pair(cell: Cell, device: str, threads: int | None = None) -> CellPair:
    """``run_cell`` trained, then untrained; the same split or an error."""
    trained = run_cell(cell, device, threads)
    with optimiser_steps_disabled() as record:
        untrained = run_cell(cell, device, threads)
    changed = record.changed_parameters()
    error = _error(trained, "trained") or _error(untrained, "untrained")
    if not error and trained.manifest_hash != untrained.manifest_hash:
        error = "the trained and untrained runs got different splits"
    if not error and changed:
        error = f"{changed} parameter(s) changed although every optimiser step was disabled"
    return CellPair(cell.method, cell.dataset, cell.category, cell.seed, cell.setting,
                    trained.auc_roc, untrained.auc_roc, trained.wall_s, untrained.wall_s, record.steps, error)


def _error(result: CellResult, which: str) -> str:
    return "" if result.status == "ok" else f"{which} run {result.status}: {result.error}"


def method_figures(method: str, img_size: int, pairs: list[CellPair]) -> MethodFigures:
    """Aggregate one method's (all successful) pairs: seed means first, then over seeds."""
    seeds = sorted({p.seed for p in pairs})
    tr = np.array([np.mean([p.auc_trained for p in pairs if p.seed == s]) for s in seeds])
    un = np.array([np.mean([p.auc_untrained for p in pairs if p.seed == s]) for s in seeds])
    diff = tr - un
    return MethodFigures(method, img_size, len(pairs), len(seeds), float(tr.mean()), float(tr.std()),
                         float(un.mean()), float(un.std()), float(diff.mean()), float(diff.std()),
                         sum(p.wall_trained_s for p in pairs), sum(p.wall_untrained_s for p in pairs),
                         sum(p.steps_disabled for p in pairs))


def table(rows: list[MethodFigures], failed: dict[str, str]) -> str:
    body = [[r.method, r.img_size, r.cells, f"{r.auc_trained:.3f} ± {r.auc_trained_seed_sd:.3f}",
             f"{r.auc_untrained:.3f} ± {r.auc_untrained_seed_sd:.3f}",
             f"{r.difference:+.3f} ± {r.difference_seed_sd:.3f}",
             "n/a (1 seed)" if r.sds_above is None else f"{r.sds_above:.1f}",
             f"{r.wall_trained_s:.1f}", f"{r.wall_untrained_s:.1f}",
             r.steps_disabled if r.steps_disabled else "0 (untrained = trained)"] for r in rows]
    body += [[m, "", "", f"failed: {err}", "", "", "", "", "", ""] for m, err in failed.items()]
    headers = ["method", "img", "cells", "AUC trained (seed sd)", "AUC untrained (seed sd)",
               "difference (seed sd)", "diff/sd", "wall trained s", "wall untrained s", "steps disabled"]
    return tabulate(body, headers=headers, tablefmt="github")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Each method's AUC trained vs. untrained (optimiser steps "
                                            "disabled) on the same splits, through the runner's code path.")
    p.add_argument("--protocol", default="q1", help="packaged protocol name or path to a .toml spec")
    p.add_argument("--methods", default=None, help="comma-separated (default: the protocol's)")
    p.add_argument("--datasets", default=None, help="comma-separated (default: the protocol's choice)")
    p.add_argument("--seeds", default=None, help="e.g. 0,1,2 (default: the protocol's)")
    p.add_argument("--budget", default=None, help="paper | quick | smoke (default: the protocol's)")
    p.add_argument("--weights", choices=["imagenet", "none"], default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter override, as fsad-bench run --set (repeatable)")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--device", default="cpu", help="cpu | cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 avoids thrashing on a loaded machine)")
    p.add_argument("--json", type=Path, default=None, help="also write settings, per-method and per-cell "
                                                            "figures to this JSON file")
    return p


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and np.isfinite(x) else None  # JSON has no Infinity


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        seeds = [int(s) for s in _csv(args.seeds)] if args.seeds else None
    except ValueError:
        print(f"trained_vs_untrained: error: --seeds {args.seeds!r}: expected integers like 0,1,2",
              file=sys.stderr)
        return 2
    try:
        spec = load_protocol(args.protocol)
        req = RunRequest(methods=_csv(args.methods), datasets=_csv(args.datasets), seeds=seeds,
                         budget=args.budget, weights=args.weights, overrides=args.overrides,
                         data_root=args.data_root)
        cells, missing = build_cells(spec, req)
    except UserError as exc:
        print(f"trained_vs_untrained: error: {exc}", file=sys.stderr)
        return exc.exit_code
    budget = cells[0].budget
    datasets = sorted({c.dataset for c in cells})
    load_start = os.getloadavg()
    print(f"protocol {spec.name}, budget {budget}, datasets {', '.join(datasets)}"
          + (f" ({', '.join(missing)} not present)" if missing else "")
          + f", {len(cells)} cells x 2 runs on {args.device}; load average {load_start[0]:.2f}",
          file=sys.stderr)
    start = time.perf_counter()
    pairs: list[CellPair] = []
    for i, cell in enumerate(cells, 1):
        pair = run_pair(cell, args.device, args.threads)
        pairs.append(pair)
        status = pair.error or (f"AUC trained {pair.auc_trained:.3f} ({pair.wall_trained_s:.1f} s), "
                                f"untrained {pair.auc_untrained:.3f} ({pair.wall_untrained_s:.1f} s)")
        print(f"[{i}/{len(cells)}] {cell.label}: {status}", file=sys.stderr)
    elapsed = time.perf_counter() - start

    rows, failed = [], {}
    for method in dict.fromkeys(c.method for c in cells):
        mine = [p for p in pairs if p.method == method]
        errors = [p.error for p in mine if p.error]
        if errors:
            failed[method] = f"{len(errors)} of {len(mine)} cells, first: {errors[0]}"
            continue
        img_size = next(c.img_size for c in cells if c.method == method)
        rows.append(method_figures(method, img_size, mine))
    load_end = os.getloadavg()
    print(table(rows, failed))
    print(f"\n{len(cells)} cells x 2 in {elapsed:.1f} s; load average at start {load_start[0]:.2f}, "
          f"at end {load_end[0]:.2f} (1 min), {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    if args.json:
        doc = {"protocol": spec.name, "budget": budget, "datasets": datasets, "overrides": args.overrides,
               "seeds": sorted({c.seed for c in cells}), "device": args.device,
               "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "load_average_start": load_start,
               "load_average_end": load_end, "elapsed_s": elapsed,
               "methods": [{**asdict(r), "sds_above": _finite_or_none(r.sds_above)}
                           for r in rows], "failed": failed,
               "cells": [asdict(p) for p in pairs]}
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
