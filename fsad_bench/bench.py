"""``fsad-bench bench``: training / evaluation throughput and peak memory of each method per budget
through our pipeline, and (on CUDA) the fraction of the ResNet-18 roofline and the projected
GPU-hours of Table 2; ``--grid`` also times the default grid.

A benchmark prints figures; it asserts nothing (speed targets never live in tests). It names no
method: what it times comes from each detector's optional declarations ``bench_phases`` and
``bench_step_overrides`` (documented in one place, the :class:`~fsad_bench.detectors.base.Detector`
docstring), so a plugin gets the same figures as a built-in detector.

What is timed, per method (``measure_method``): the detector's own ``fit`` on a synthetic
:class:`TrainSet` (``N_NORMAL`` normals + ``N_ANOMALY`` labelled anomalies, smooth textures, at the
budget's image size, weights ``none``) with the step counts changed by its ``bench_step_overrides``
and everything else at the budget's settings. A global optimiser-step hook (:class:`StepClock`)
timestamps the end of every optimiser step, so a step's time is the interval between two step ends:
index gather, augmentation, forward, loss, backward, clipping, update and the per-step
``loss.item()`` - the method's real training step. Set-up before the first step (network build,
hypersphere centres, teacher-feature caches) and after the last (BatchNorm recalibration) is left out;
the first ``warmup`` steps of each optimiser are not timed. The optimisers that stepped, and how
often, must match the detector's ``bench_phases`` for the changed config (else an error names the
detector): images per step and the projected cell come from that declaration. A detector that
declares no phases gets its whole ``fit`` timed at the budget's settings (set-up included): train
img/s = training images / fit seconds, no per-step figures, no projected cell.

Evaluation images/s: ``detector.score`` on ``eval_images`` images after a small warm-up call.
Peak memory: CUDA ``max_memory_allocated`` over fit + score; on CPU the growth of the process's
resident set (RSS, sampled every 5 ms from ``/proc/self/statm``) over fit + score.

The comparison with a pipeline that works like the authors' code (PNG files, PIL, a DataLoader) is
not part of the core: ``benchmarks/reference_pipeline.py`` runs it, with this module's instruments
(:class:`StepClock`, :class:`MemoryProbe`, :func:`measure_method`, ...) for our side.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate
from torch.optim.optimizer import register_optimizer_step_post_hook

from fsad_bench.budgets import Budget
from fsad_bench.config import ResolvedMethod, resolve_method_config
from fsad_bench.detectors.base import BenchPhase, TrainSet, TrainShape
from fsad_bench.errors import UserError
from fsad_bench.protocol import ProtocolSpec, load_protocol
from fsad_bench.runner.generator import resolve_budget

#: Synthetic training set of every measurement: 192 is a multiple of every budget's batch (8..64, 48).
N_NORMAL = 192
N_ANOMALY = 10
#: Nominal cell size for the projected cell time (about MVTec AD's mean per category).
NOMINAL_TRAIN = 250
NOMINAL_TEST = 150
#: Table 2: 15 MVTec AD categories + 8 single-category datasets (methods and seeds: the protocol's).
TABLE2_CATEGORIES = 23
#: Dense peak TFLOP/s by GPU name, used only when the matmul measurement fails.
PEAK_TFLOPS = {"H200": {"bf16": 989.0, "tf32": 494.7}, "H100": {"bf16": 989.0, "tf32": 494.7},
               "A100": {"bf16": 312.0, "tf32": 156.0}, "L40S": {"bf16": 362.0, "tf32": 183.0}}
NA_CPU = "n/a (CPU)"


def resolve_bench_device(device: str) -> str:
    """'auto' -> 'cuda' if available else 'cpu'; 'cuda:0,cuda:1' -> the first one."""
    first = device.split(",")[0].strip()
    if first == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if first.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here")
    return first


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on a CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# measuring instruments


class StepClock:
    """Timestamps of every optimiser step's end, per optimiser (in order of their first step).

    Uses torch's global step post-hook, so the method's own training loop is timed unchanged. On
    CUDA it synchronises at each step end (the loops call ``loss.item()`` every step anyway).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        # Keyed by the optimiser object, not id(): holding it keeps a finished phase's optimiser (Deep
        # SVDD's autoencoder) alive, whose id() the next phase's could otherwise reuse, merging both.
        self.stamps: dict[torch.optim.Optimizer, list[float]] = {}
        self._handle: Any = None

    def _hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        sync(self.device)
        self.stamps.setdefault(optimizer, []).append(time.perf_counter())

    def __enter__(self) -> StepClock:
        self._handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def counts(self) -> list[int]:
        """Optimiser steps recorded per optimiser, in order of their first step."""
        return [len(stamps) for stamps in self.stamps.values()]

    def phases(self, warmup: int) -> list[tuple[int, float]]:
        """(timed steps, seconds) per optimiser: step ``k`` is the interval from step k-1's end to
        step k's end; steps 1..warmup are not timed (step 1 never is: it has no start stamp).

        seconds = timed steps x the MEDIAN step time: on shared cores another process can stall a
        few steps by 10x (OpenMP threads waiting at barriers), and one such step would dominate a
        mean over a handful of steps.
        """
        out = []
        for stamps in self.stamps.values():
            start = max(warmup, 1) - 1
            steps = np.diff(stamps[start:])
            if len(steps):
                out.append((len(steps), len(steps) * float(np.median(steps))))
        return out


class MemoryProbe:
    """Peak memory over a block: CUDA max_memory_allocated, or the growth of the CPU RSS."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        self.kind = "CUDA max allocated" if self.cuda else "CPU RSS growth"
        self.peak_mb = float("nan")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss_bytes() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):  # not Linux: the lifetime peak is all we have
            import resource
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return rss * (1 if sys.platform == "darwin" else 1024)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self.rss_bytes())

    @staticmethod
    def release_freed_memory() -> None:
        """Return freed heap pages to the OS (glibc ``malloc_trim``), so that memory an earlier
        measurement freed but kept resident does not hide this one's growth."""
        import ctypes
        import gc

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: growth may be under-reported
            pass

    def __enter__(self) -> MemoryProbe:
        if not self.cuda:
            self.release_freed_memory()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = self.rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._peak = max(self._peak, self.rss_bytes())
        self.peak_mb = (self._peak - self._base) / 2**20


# --------------------------------------------------------------------------------------------------
# the measurements


def texture_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3) smooth textures (coarse noise upsampled + fine noise): photo-like
    PNG sizes, unlike white noise, which would make decoding them as PNG files (the reference
    pipeline of ``benchmarks/reference_pipeline.py``) unfairly slow."""
    rng = np.random.default_rng(seed)
    cell = max(size // 8, 1)
    coarse = rng.normal(110, 20, (n, -(-size // cell), -(-size // cell), 3))
    img = np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :size, :size]
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class BenchSettings:
    """What one ``fsad-bench bench`` run measures."""

    methods: list[str] | None = None      # None = the protocol's methods
    budgets: list[str] = field(default_factory=lambda: ["quick"])
    steps: int = 10
    warmup: int = 1
    device: str = "auto"
    eval_images: int = 128
    amp_bf16: bool = False
    channels_last: bool = False
    repeats: int = 1
    protocol: str = "q1"


@dataclass
class BenchRow:
    """One line of the table: a method's pipeline at a budget on a device."""

    method: str
    budget: str
    pipeline: str
    device: str
    img: int
    backbone: str
    batch: str
    bf16: bool
    channels_last: bool
    train_img_s: float
    eval_img_s: float
    peak_mem_mb: float
    mem_kind: str
    s_per_step: float | None              # None: the whole fit was timed (no declared phases)
    cell_min: float | None = None
    roofline: float | str | None = None
    note: str = ""
    phases: list[dict[str, Any]] = field(default_factory=list)
    train_flops_s: float | None = None    # from the declared FLOPs per image; None = not declared

    def table(self) -> dict[str, Any]:
        roof = self.roofline if isinstance(self.roofline, str) or self.roofline is None \
            else f"{100 * self.roofline:.1f}%"
        return {"method": self.method, "budget": self.budget, "pipeline": self.pipeline,
                "device": self.device, "img": self.img, "backbone": self.backbone, "batch": self.batch,
                "bf16/CL": f"{'y' if self.bf16 else 'n'}/{'y' if self.channels_last else 'n'}",
                "train img/s": self.train_img_s, "eval img/s": self.eval_img_s,
                "peak MiB": self.peak_mem_mb, "memory": self.mem_kind,
                "s/step": "" if self.s_per_step is None else self.s_per_step,
                "cell min": "" if self.cell_min is None else self.cell_min,
                "roofline": "" if roof is None else roof}


SPEED_OPTIONS = ("amp_bf16", "channels_last")


class BenchDeclarationError(UserError):
    """A detector's bench declaration disagrees with what its ``fit`` ran: that method's figures would
    be wrong, so it gets none (the other methods are still measured and printed)."""


def resolve_for_bench(budget: Budget, method: str, amp_bf16: bool = False, channels_last: bool = False
                      ) -> ResolvedMethod:
    """The method's configuration at ``budget`` as a run resolves it, with weights ``none`` (speed does
    not depend on the weights' values, and nothing is downloaded) and bench's speed options for a
    config that has them."""
    return resolve_method_config(budget, method, weights="none",
                                 overrides={"amp_bf16": amp_bf16, "channels_last": channels_last})


def has_speed_options(resolved: ResolvedMethod) -> bool:
    return set(SPEED_OPTIONS) <= set(resolved.params)


def synthetic_train_set(size: int, device: str) -> TrainSet:
    """The training set of every measurement: ``N_NORMAL`` normals + ``N_ANOMALY`` anomalies."""
    images = texture_images(N_NORMAL + N_ANOMALY, size)
    labels = np.r_[np.zeros(N_NORMAL, int), np.ones(N_ANOMALY, int)]
    return TrainSet(images, labels, seed=0, device=device)


def _eval_rate(score: Any, images: np.ndarray, device: str) -> float:
    score(images[: min(8, len(images))])  # warm-up (allocator, cuDNN autotuning)
    sync(device)
    t0 = time.perf_counter()
    score(images)
    sync(device)
    return len(images) / (time.perf_counter() - t0)


def _per_step(phases: list[BenchPhase]) -> str:
    return "/".join(f"{p.images_per_step:g}" for p in phases)


def measure_method(resolved: ResolvedMethod, budget_name: str, s: BenchSettings, device: str) -> BenchRow:
    """Our pipeline: the detector's real ``fit`` (step counts overridden) and ``score``."""
    cls, size = resolved.cls, resolved.img_size
    shape = TrainShape(N_NORMAL + N_ANOMALY, N_NORMAL, size)
    # the budget's phases in a real cell of the nominal size, for the projected cell time
    nominal = cls.bench_phases(resolved.config, TrainShape(NOMINAL_TRAIN, NOMINAL_TRAIN - N_ANOMALY, size))
    if nominal is None:
        return measure_whole_fit(resolved, budget_name, s, device)
    timed = resolved.with_params(cls.bench_step_overrides(resolved.config, s.warmup + s.steps, shape))
    declared = cls.bench_phases(timed.config, shape) or []
    speed = has_speed_options(resolved)
    train = synthetic_train_set(size, device)
    eval_images = texture_images(s.eval_images, size, seed=1)
    det = timed.detector()
    with MemoryProbe(device) as mem:
        with StepClock(device) as clock:
            det.fit(train)
        eval_rate = _eval_rate(det.score, eval_images, device)
    ran, name = clock.counts(), resolved.method
    if ran != [p.steps for p in declared]:
        raise BenchDeclarationError(f"bench: {name} declares optimiser phases "
                                    f"{[(p.name, p.steps) for p in declared]} but its fit ran {ran} steps "
                                    "per optimiser; fix its bench_phases / bench_step_overrides")
    if [p.name for p in nominal] != [p.name for p in declared]:
        raise BenchDeclarationError(f"bench: {name} declares phases {[p.name for p in nominal]} at the "
                                    f"budget but {[p.name for p in declared]} after its bench_step_overrides")
    phases = clock.phases(s.warmup)
    if any(n == 0 for n, _ in phases):
        raise BenchDeclarationError(f"bench: {name} ran {ran} optimiser steps per phase, none left to time "
                                    f"after {s.warmup} warm-up step(s); its bench_step_overrides must give "
                                    "every phase more steps")
    images = [n * p.images_per_step for (n, _), p in zip(phases, declared)]
    seconds = sum(t for _, t in phases)
    flops = None
    if all(p.flops_per_image is not None for p in declared):
        flops = sum(i * p.flops_per_image for i, p in zip(images, declared)) / seconds
    # projected time of a real cell at this budget: its step counts x the measured s/step, + scoring
    cell_s = sum(p.steps * t / n for p, (n, t) in zip(nominal, phases)) + NOMINAL_TEST / eval_rate
    return BenchRow(method=resolved.method, budget=budget_name, pipeline="ours", device=device, img=size,
                    backbone=str(resolved.params.get("backbone", "-")), batch=_per_step(declared),
                    bf16=s.amp_bf16 and speed, channels_last=s.channels_last and speed,
                    train_img_s=sum(images) / seconds, eval_img_s=eval_rate, peak_mem_mb=mem.peak_mb,
                    mem_kind=mem.kind, s_per_step=seconds / sum(n for n, _ in phases), cell_min=cell_s / 60,
                    note="" if speed or not (s.amp_bf16 or s.channels_last)
                    else "no bf16/channels_last option",
                    phases=[{"name": p.name, "steps": n, "seconds": t, "images_per_step": p.images_per_step}
                            for (n, t), p in zip(phases, declared)],
                    train_flops_s=flops)


WHOLE_FIT_NOTE = ("whole fit: the detector declares no bench_phases; train img/s = training images / "
                  "seconds of its whole fit at the budget's settings (set-up included); no s/step, "
                  "no cell min")


def measure_whole_fit(resolved: ResolvedMethod, budget_name: str, s: BenchSettings, device: str) -> BenchRow:
    """A detector without a bench declaration: its whole ``fit`` at the budget's settings, timed."""
    speed = has_speed_options(resolved)
    train = synthetic_train_set(resolved.img_size, device)
    eval_images = texture_images(s.eval_images, resolved.img_size, seed=1)
    det = resolved.detector()
    with MemoryProbe(device) as mem:
        sync(device)
        t0 = time.perf_counter()
        det.fit(train)
        sync(device)
        fit_s = time.perf_counter() - t0
        eval_rate = _eval_rate(det.score, eval_images, device)
    return BenchRow(method=resolved.method, budget=budget_name, pipeline="ours (whole fit)", device=device,
                    img=resolved.img_size, backbone=str(resolved.params.get("backbone", "-")), batch="-",
                    bf16=s.amp_bf16 and speed, channels_last=s.channels_last and speed,
                    train_img_s=len(train.images) / fit_s, eval_img_s=eval_rate, peak_mem_mb=mem.peak_mb,
                    mem_kind=mem.kind, s_per_step=None, note=WHOLE_FIT_NOTE,
                    phases=[{"name": "whole fit", "seconds": fit_s, "images": len(train.images)}])


# ------------------------------------------------------------------------------ GPU roofline


def measured_peak_flops(device: str, dtype: str) -> float:
    """FLOP/s of a large square matmul (the roofline): bf16, or fp32 with TF32 tensor cores (cuDNN
    runs fp32 convolutions in TF32 by default, ``torch.backends.cudnn.allow_tf32``)."""
    n, iters = 8192, 20
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        dt = torch.bfloat16 if dtype == "bf16" else torch.float32
        a = torch.randn(n, n, device=device, dtype=dt)
        b = torch.randn(n, n, device=device, dtype=dt)
        for _ in range(3):
            a @ b
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync(device)
        return 2 * n**3 * iters / (time.perf_counter() - t0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def peak_flops(device: str, dtype: str) -> tuple[float, str]:
    try:
        return measured_peak_flops(device, dtype), f"measured {dtype} matmul"
    except RuntimeError:
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAK_TFLOPS.items():
            if key in name:
                return peaks[dtype] * 1e12, f"{key} datasheet {dtype} dense"
        raise


def project_table2_hours(rows: list[BenchRow], methods: list[str], n_seeds: int) -> tuple[float, list[str]]:
    """GPU-hours of Table 2 (23 categories x the methods x the seeds) from the paper-budget rows, and
    the methods without a projected cell (not measured, or timed as a whole fit)."""
    cell = {r.method: r.cell_min for r in rows if r.pipeline == "ours" and r.budget == "paper"}
    missing = [m for m in methods if cell.get(m) is None]
    minutes = sum(cell.get(m) or 0.0 for m in methods)
    return minutes * TABLE2_CATEGORIES * n_seeds / 60, missing


# ------------------------------------------------------------------------------ the command


def median_row(rows: list[BenchRow]) -> BenchRow:
    """The repeat with the median training throughput, its evaluation rate replaced by the median
    over the repeats (the two are measured separately), its peak memory by the largest."""
    row = sorted(rows, key=lambda r: r.train_img_s)[len(rows) // 2]
    return dataclasses.replace(row, eval_img_s=float(np.median([r.eval_img_s for r in rows])),
                               peak_mem_mb=max(r.peak_mem_mb for r in rows))


def add_roofline(row: BenchRow, device: str, peaks: dict[str, tuple[float, str]]) -> None:
    """On CUDA: the row's training FLOP/s over the device's peak (measured once per dtype and kept in
    ``peaks``), or why there is none; on a CPU ``n/a (CPU)``."""
    if not device.startswith("cuda"):
        row.roofline = NA_CPU
        return
    dtype = "bf16" if row.bf16 else "tf32"
    if row.train_flops_s is None:
        row.roofline = "n/a (FLOPs not declared)"
        return
    peaks.setdefault(dtype, peak_flops(device, dtype))
    row.roofline = row.train_flops_s / peaks[dtype][0]
    row.note = (row.note + f" roofline: {peaks[dtype][1]}").strip()


@dataclass
class BenchPlan:
    """Everything a bench run measures, resolved and validated before the first measurement (a bad
    method, budget or hyper-parameter stops the run before anything is timed)."""

    spec: ProtocolSpec
    methods: list[str]
    budgets: list[Budget]                               # resolved once for the run
    ours: dict[tuple[str, str], ResolvedMethod]         # (budget, method) -> with bench's speed options
    errors: list[str] = field(default_factory=list)     # methods refused for a wrong bench declaration


def plan_bench(s: BenchSettings) -> BenchPlan:
    spec = load_protocol(s.protocol)
    if not s.budgets:
        raise UserError("bench needs at least one budget (--budgets quick,paper)")
    methods = list(s.methods or spec.methods)
    budgets = [resolve_budget(spec, b, methods) for b in s.budgets]
    ours = {(b.name, m): resolve_for_bench(b, m, s.amp_bf16, s.channels_last)
            for b in budgets for m in methods}
    return BenchPlan(spec, methods, budgets, ours)


def bench_rows(s: BenchSettings, device: str, plan: BenchPlan | None = None) -> list[BenchRow]:
    plan = plan or plan_bench(s)
    rows: list[BenchRow] = []
    peaks: dict[str, tuple[float, str]] = {}
    for budget in plan.budgets:
        for method in plan.methods:
            try:
                repeats = [measure_method(plan.ours[budget.name, method], budget.name, s, device)
                           for _ in range(s.repeats)]
            except BenchDeclarationError as exc:
                print(f"  not measured: {exc}", file=sys.stderr)
                plan.errors.append(str(exc))
                continue
            ours = median_row(repeats)
            add_roofline(ours, device, peaks)
            rows.append(ours)
            print(f"  measured {method} @ {budget.name}: {ours.train_img_s:.1f} train img/s", file=sys.stderr)
    return rows


def time_default_grid(protocol: str) -> float:
    """Wall time of 'fsad-bench run --protocol PROTOCOL --methods all' into a fresh folder."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fsad_bench.cli", "run", "--protocol", protocol,
                               "--methods", "all", "--out", out, "--no-progress"])
        wall = time.perf_counter() - t0
        subprocess.run([sys.executable, "-m", "fsad_bench.cli", "report", out])
    if proc.returncode:
        print(f"default grid exited {proc.returncode}")
    return wall


#: Why bench refuses --amp-bf16 off CUDA: oneDNN's bfloat16 convolutions returned NaN for finite inputs
#: on our CPU (torch 2.14.1, Xeon with AMX) in a quarter of seeded fits of the paper's method.
CPU_BF16 = ("bf16 autocast is benchmarked on CUDA only: on CPUs oneDNN's bfloat16 convolutions gave NaN for "
            "finite inputs in our tests; drop --amp-bf16 (--channels-last is fine on a CPU)")


def check_settings(s: BenchSettings, device: str) -> None:
    """Refuse settings that cannot be measured, before anything is resolved or timed."""
    if s.steps < 1 or s.warmup < 0 or s.repeats < 1 or s.eval_images < 1:
        raise UserError("bench needs --steps >= 1, --warmup >= 0, --repeats >= 1, --eval-images >= 1")
    if s.amp_bf16 and not device.startswith("cuda"):
        raise UserError(f"--amp-bf16 on {device}: {CPU_BF16}")


def bench_header(s: BenchSettings, device: str) -> str:
    """torch version, threads, device and what is timed: the first line of the output."""
    hw = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{os.cpu_count()} CPUs"
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device} ({hw}); "
            f"{s.steps} timed steps after {s.warmup} warm-up, {s.eval_images} eval images, "
            f"median of {s.repeats} repeat(s)")


def print_rows(rows: list[BenchRow]) -> None:
    """The table and, under it, each distinct note once."""
    print(tabulate([r.table() for r in rows], headers="keys", floatfmt=".2f", tablefmt="github"))
    for n in sorted({r.note for r in rows if r.note}):
        print(f"note: {n}")


def run_bench(s: BenchSettings, grid: bool = False, json_path: Path | None = None) -> list[BenchRow]:
    """Measure, print the table (and the GPU projections on CUDA), optionally write JSON."""
    device = resolve_bench_device(s.device)
    check_settings(s, device)
    plan = plan_bench(s)
    header = bench_header(s, device)
    print(header)
    rows = bench_rows(s, device, plan)
    print_rows(rows)
    extra: dict[str, Any] = {}
    if device.startswith("cuda"):
        n_seeds = len(plan.spec.seeds)
        hours, missing = project_table2_hours(rows, plan.spec.methods, n_seeds)
        if "paper" in s.budgets:
            extra["table2_gpu_hours"] = hours
            extra["table2_missing_methods"] = missing
            print(f"projected Table 2 at the paper budget ({TABLE2_CATEGORIES} categories x "
                  f"{len(plan.spec.methods)} methods x {n_seeds} seeds, {NOMINAL_TRAIN} train / "
                  f"{NOMINAL_TEST} test images per cell): {hours:.2f} GPU-hours"
                  + (f" (without {', '.join(missing)}: no projected cell)" if missing else ""))
        else:
            print("projected Table 2 GPU-hours: measure --budgets paper")
    else:
        print(f"roofline fraction and Table 2 GPU-hours: {NA_CPU}")
    if grid:
        extra["default_grid_s"] = time_default_grid(s.protocol)
        print(f"default grid wall time: {extra['default_grid_s']:.1f} s")
    if json_path is not None:
        json_path.write_text(json.dumps({"header": header, "settings": dataclasses.asdict(s), **extra,
                                         "rows": [dataclasses.asdict(r) for r in rows],
                                         "errors": plan.errors}, indent=1))
    if plan.errors:
        raise BenchDeclarationError(f"{len(plan.errors)} method(s) not measured (the others are printed "
                                    f"above), first: {plan.errors[0]}")
    return rows
