"""Our pipeline against a reference pipeline that works like the authors' code, side by side.

``fsad-bench bench`` times our pipeline alone (see :mod:`fsad_bench.bench`). This script times, per
method and budget, our pipeline exactly as ``bench`` does (``fsad_bench.bench.measure_method``: the
detector's own ``fit`` under the optimiser-step clock, then ``score``) and a reference pipeline that
works like the authors' code, and prints both rows with the ratio ours / reference. Ours and the
reference alternate within each repeat and the ratio is the median of the per-repeat ratios: on a
shared machine the speed drifts between minutes, and timing all of one pipeline and then all of the
other would put the drift into the ratio. It asserts nothing; it prints figures.

Which detectors: those trained by ``fsad_methods.training.train_balanced`` (DevNet's loop) that
have a ``balanced_training(device, seed)`` method returning their freshly built network, loss and
schedule (``fsad_methods.training.BalancedTraining``, as ``fit`` trains them); found by duck
typing, neither is part of the core ``Detector`` contract. ``--methods`` defaults to the protocol's
methods whose detector class sets the plain class attribute ``bench_reference = True`` (DevNet: the
authors' code fed it through a PIL/DataLoader pipeline; FLOS, which derives from DevNet, sets it back
to False, but ``--methods flos`` still times it through that pipeline).

The reference (``reference_throughput``) works like the authors' code at identical settings (image
size, batch, backbone, network, loss, Adam, clipping, StepLR): the training images are written once
as PNG files, a torch ``Dataset`` opens each file with PIL and applies Resize, RandomRotation(180),
ToTensor, Normalize at every access, a ``DataLoader`` draws the authors' balanced batches (half
normals, half anomalies, endless shuffled streams) with ``num_workers`` processes and a fresh
iterator (so fresh workers) every epoch of the budget's ``steps_per_epoch``; its step time is
charged as the budget would, one epoch-start step (worker start, empty queue) per
``steps_per_epoch`` steps. ``--ref-workers``: the authors' value is not known to us; we use 4 (the
usual default of such scripts) capped at the CPU count, so the reference never oversubscribes the
cores. The files are written at the training size by default (``--ref-file-size``), which favours
the reference: the authors decode full-size originals (MVTec AD: 700-1024 px) before resizing. The
reference runs in float32 NCHW; ours takes ``--amp-bf16`` / ``--channels-last`` where the method has
them. Its peak memory is the main process's (workers not counted).

Usage::

    python benchmarks/reference_pipeline.py                               # q1: DevNet, quick budget
    python benchmarks/reference_pipeline.py --methods devnet --budgets quick --repeats 5 --steps 20
    python benchmarks/reference_pipeline.py --methods devnet --budgets quick --ref-file-size 1024
    python benchmarks/reference_pipeline.py --budgets paper --steps 2 --eval-images 48 --json ref.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fsad_bench import bench
from fsad_bench.config import ResolvedMethod
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError
from fsad_bench.protocol import ProtocolSpec, load_protocol
from fsad_methods.training import IMAGENET_MEAN, IMAGENET_STD, BalancedBatches, seed_everything


@dataclass
class ReferenceSettings(bench.BenchSettings):
    """``fsad-bench bench``'s settings (``methods``: None = the protocol's methods whose detector sets
    ``bench_reference``) and the reference's DataLoader workers and PNG file side."""

    ref_workers: int | None = None        # None = min(4, CPU count)
    ref_file_size: int | None = None      # None = the training size


@dataclass
class ComparedRow(bench.BenchRow):
    """A row of ``fsad-bench bench``'s table with ours / reference (on our rows)."""

    train_ratio: float | None = None
    eval_ratio: float | None = None

    @classmethod
    def of(cls, row: bench.BenchRow, **ratios: float) -> ComparedRow:
        return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(row)}, **ratios)

    def table(self) -> dict[str, Any]:
        out = super().table()
        roofline = out.pop("roofline")
        ratio = "" if self.train_ratio is None else f"{self.train_ratio:.2f}x / {self.eval_ratio:.2f}x"
        return {**out, "ours/ref train / eval": ratio, "roofline": roofline}


def has_reference(cls: type) -> bool:
    """Whether the detector has a reference pipeline: it trains with ``train_balanced`` and says what
    (``balanced_training``)."""
    return callable(getattr(cls, "balanced_training", None))


def default_methods(spec: ProtocolSpec) -> list[str]:
    """The protocol's methods whose detector class sets ``bench_reference = True``."""
    return [m for m in spec.methods if getattr(load_detector(m), "bench_reference", False)]


# ------------------------------------------------------------------------------ the authors'-style reference


class FileDataset(torch.utils.data.Dataset):
    """The authors' dataset: open the file with PIL and transform it at every access."""

    def __init__(self, files: list[str], labels: np.ndarray, size: int, rotation: float) -> None:
        from torchvision import transforms

        self.files, self.labels = files, labels
        steps: list[Any] = [transforms.Resize((size, size))]
        if rotation > 0:
            steps.append(transforms.RandomRotation(rotation))
        steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self.transform = transforms.Compose(steps)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = Image.open(self.files[i]).convert("RGB")
        return self.transform(image), int(self.labels[i])


class BalancedEpochSampler(torch.utils.data.Sampler):
    """The authors' balanced batch sampler: ``steps_per_epoch`` batches of half normals, half
    anomalies per epoch, drawn from endless shuffled streams of each class."""

    def __init__(self, labels: np.ndarray, batch_size: int, steps_per_epoch: int, seed: int = 0) -> None:
        self.batches = BalancedBatches(labels, batch_size, seed)
        self.steps_per_epoch = steps_per_epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps_per_epoch):
            yield self.batches.next().tolist()


def default_ref_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def reference_throughput(resolved: ResolvedMethod, budget_name: str, s: ReferenceSettings, device: str,
                         folder: Path) -> bench.BenchRow:
    """The authors'-style pipeline for a detector that has ``balanced_training`` (``train_balanced``)
    at its budget's settings (fp32, NCHW): the same network, loss and schedule ``fit`` trains."""
    size = resolved.img_size
    seed_everything(0)
    parts = resolved.detector().balanced_training(device, seed=0)
    if parts is None:
        raise bench.BenchDeclarationError(f"no reference pipeline for {resolved.method}: its "
                                          "balanced_training returned None (the reference trains what "
                                          "train_balanced trains)")
    c = parts.schedule
    workers = s.ref_workers if s.ref_workers is not None else default_ref_workers()
    file_size = s.ref_file_size or size
    train = bench.synthetic_train_set(file_size, "cpu")
    files = []
    for i, img in enumerate(train.images):  # written once, decoded at every access
        files.append(str(folder / f"{i:04d}.png"))
        Image.fromarray(img).save(files[-1])
    eval_files = []
    for i, img in enumerate(bench.texture_images(s.eval_images, file_size, seed=1)):
        eval_files.append(str(folder / f"test{i:04d}.png"))
        Image.fromarray(img).save(eval_files[-1])

    model = parts.model
    opt = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    lr_sched = torch.optim.lr_scheduler.StepLR(opt, step_size=c.lr_step_epochs, gamma=c.lr_gamma)
    cuda = device.startswith("cuda")
    loader = torch.utils.data.DataLoader(
        FileDataset(files, train.labels, size, c.rotation), num_workers=workers, pin_memory=cuda,
        batch_sampler=BalancedEpochSampler(train.labels, c.batch_size, c.steps_per_epoch))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = parts.loss(model(x.to(device, non_blocking=True)), y.to(device))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        opt.step()
        loss.item()

    model.train()
    with bench.MemoryProbe(device) as mem:
        done = 0
        for x, y in loader:  # warm-up steps, on their own iterator (its worker start is not timed)
            step(x, y)
            done += 1
            if done >= s.warmup:
                break
        first: list[float] = []   # first step of an epoch: worker start + an empty prefetch queue
        steady: list[float] = []
        done = 0
        while done < s.steps:
            bench.sync(device)
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(loader):  # a fresh iterator per epoch: workers restart, as theirs
                step(x, y)
                bench.sync(device)
                t1 = time.perf_counter()
                (first if i == 0 else steady).append(t1 - t0)
                t0 = t1
                done += 1
                if done >= s.steps:
                    break
            lr_sched.step()
        # A budget epoch is one first step and steps_per_epoch - 1 steady ones. Timing only a few
        # steps must not charge the worker start to fewer steps than the authors' epoch has.
        # medians, as for our pipeline (bench.StepClock.phases)
        steady_s = float(np.median(steady)) if steady else float(np.median(first))
        epoch_s = float(np.median(first)) + (c.steps_per_epoch - 1) * steady_s
        step_s = epoch_s / c.steps_per_epoch

        net = parts.network.eval()
        eval_loader = torch.utils.data.DataLoader(
            FileDataset(eval_files, np.zeros(len(eval_files), int), size, 0.0),
            batch_size=parts.eval_batch_size, shuffle=False, num_workers=workers, pin_memory=cuda)
        with torch.no_grad():
            net(torch.zeros(2, 3, size, size, device=device))  # warm-up of the model, not the loader
            bench.sync(device)
            t0 = time.perf_counter()
            for x, _ in eval_loader:
                net(x.to(device, non_blocking=True)).float().cpu()
            bench.sync(device)
            eval_s = time.perf_counter() - t0
    pipeline = f"reference ({workers} workers)"
    return bench.BenchRow(method=resolved.method, budget=budget_name, pipeline=pipeline,
                          device=device, img=size, backbone=str(resolved.params.get("backbone", "-")),
                          batch=str(c.batch_size), bf16=False, channels_last=False,
                          train_img_s=c.batch_size / step_s,
                          eval_img_s=len(eval_files) / eval_s, peak_mem_mb=mem.peak_mb,
                          mem_kind=mem.kind + (" (main process)" if not cuda else ""), s_per_step=step_s,
                          note=f"reference: PNG files of {file_size} px",
                          phases=[{"first_step_s": float(np.median(first)), "steady_step_s": steady_s,
                                   "steps_per_epoch": c.steps_per_epoch, "timed_steps": done}])


# ------------------------------------------------------------------------------ the comparison


@dataclass
class ReferencePlan:
    """Ours (``fsad-bench bench``'s plan) and, per (budget, method), the fp32 NCHW configuration the
    reference trains; all resolved and validated before the first measurement."""

    ours: bench.BenchPlan
    reference: dict[tuple[str, str], ResolvedMethod]


def plan_reference(s: ReferenceSettings) -> ReferencePlan:
    methods = s.methods if s.methods is not None else default_methods(load_protocol(s.protocol))
    if not methods:
        raise UserError(f"no method to compare: none of protocol {s.protocol}'s detectors sets "
                        "bench_reference; name them with --methods")
    ours = bench.plan_bench(dataclasses.replace(s, methods=methods))
    for m in ours.methods:
        if not has_reference(ours.ours[ours.budgets[0].name, m].cls):
            raise UserError(f"--methods {m}: no reference pipeline for it; its detector has no "
                            "balanced_training (the reference trains what train_balanced trains)")
    return ReferencePlan(ours, {(b.name, m): bench.resolve_for_bench(b, m)
                                for b in ours.budgets for m in ours.methods})


def compare_rows(s: ReferenceSettings, device: str, plan: ReferencePlan) -> list[ComparedRow]:
    """Per budget and method: our row (with the ratios) and the reference's, each the median repeat."""
    rows: list[ComparedRow] = []
    peaks: dict[str, tuple[float, str]] = {}
    for budget in plan.ours.budgets:
        for method in plan.ours.methods:
            key = (budget.name, method)
            # ours and the reference alternate within each repeat (see the module docstring)
            pairs = []
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    for _ in range(s.repeats):
                        mine = bench.measure_method(plan.ours.ours[key], budget.name, s, device)
                        theirs = reference_throughput(plan.reference[key], budget.name, s, device, Path(tmp))
                        pairs.append((mine, theirs))
            except bench.BenchDeclarationError as exc:
                print(f"  not measured: {exc}", file=sys.stderr)
                plan.ours.errors.append(str(exc))
                continue
            ours = ComparedRow.of(
                bench.median_row([m for m, _ in pairs]),
                train_ratio=float(np.median([m.train_img_s / r.train_img_s for m, r in pairs])),
                eval_ratio=float(np.median([m.eval_img_s / r.eval_img_s for m, r in pairs])))
            bench.add_roofline(ours, device, peaks)
            rows += [ours, ComparedRow.of(bench.median_row([r for _, r in pairs]))]
            print(f"  measured {method} @ {budget.name}: {ours.train_img_s:.1f} train img/s, "
                  f"{ours.train_ratio:.2f}x the reference's", file=sys.stderr)
    return rows


def run(s: ReferenceSettings, json_path: Path | None = None) -> list[ComparedRow]:
    """Measure, print the table, optionally write JSON."""
    device = bench.resolve_bench_device(s.device)
    bench.check_settings(s, device)
    if s.ref_workers is not None and s.ref_workers < 0:
        raise UserError("--ref-workers must be >= 0")
    plan = plan_reference(s)
    header = bench.bench_header(s, device)
    print(header)
    rows = compare_rows(s, device, plan)
    bench.print_rows(rows)
    if json_path is not None:
        json_path.write_text(json.dumps({"header": header, "settings": dataclasses.asdict(s),
                                         "rows": [dataclasses.asdict(r) for r in rows],
                                         "errors": plan.ours.errors}, indent=1))
    if plan.ours.errors:
        raise bench.BenchDeclarationError(f"{len(plan.ours.errors)} method(s) not measured (the others are "
                                          f"printed above), first: {plan.ours.errors[0]}")
    return rows


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", type=_csv_list, default=None,
                   help="detectors trained by train_balanced (with balanced_training); default: the "
                   "protocol's methods whose detector sets bench_reference (q1: devnet)")
    p.add_argument("--protocol", default="q1",
                   help="whose budget tables and default methods (packaged name or .toml path)")
    p.add_argument("--budgets", type=_csv_list, default=["quick"], help="e.g. quick,paper")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    p.add_argument("--eval-images", type=int, default=128, help="images scored in the eval timing")
    p.add_argument("--repeats", type=int, default=1,
                   help="repeat each pair of measurements; the median row, the median of per-repeat ratios")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp-bf16", action="store_true",
                   help="ours only: bf16 autocast (CUDA; methods with the option)")
    p.add_argument("--channels-last", action="store_true",
                   help="ours only: channels_last (methods with the option)")
    p.add_argument("--ref-workers", type=int, default=None,
                   help="reference DataLoader workers (default min(4, CPU count))")
    p.add_argument("--ref-file-size", type=int, default=None,
                   help="side of the reference's PNG files (default: the training size)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = ReferenceSettings(methods=args.methods, budgets=args.budgets, steps=args.steps,
                                 warmup=args.warmup, device=args.device, eval_images=args.eval_images,
                                 amp_bf16=args.amp_bf16, channels_last=args.channels_last,
                                 repeats=args.repeats, protocol=args.protocol, ref_workers=args.ref_workers,
                                 ref_file_size=args.ref_file_size)
    try:
        run(settings, args.json)
    except UserError as exc:
        print(f"reference_pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
