"""``fsad-bench bench``: training / evaluation throughput and peak memory of each method per budget,
a method's pipeline against a reference pipeline that works like the authors' code, and (on CUDA)
the fraction of the ResNet-18 roofline and the projected GPU-hours of Table 2.

A benchmark prints figures; it asserts nothing (speed targets never live in tests). It names no
method: what it times comes from each detector's declarations (``Detector.bench_phases``,
``bench_step_overrides``, ``balanced_training``, ``bench_reference``), so a plugin gets the same
figures as a built-in detector.

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

The reference pipeline (``reference_throughput``, detectors that declare ``balanced_training``, i.e.
that train with ``train_balanced``, the paper's method's loop) works like the authors' code at
identical settings (image size, batch, backbone, network, loss, Adam, clipping, StepLR): the
training images are written once as PNG files, a torch ``Dataset`` opens each file with PIL and
applies Resize, RandomRotation(180), ToTensor, Normalize at every access, a ``DataLoader`` draws the
authors' balanced batches (half normals, half anomalies, endless shuffled streams) with
``num_workers`` processes and a fresh iterator (so fresh workers) every epoch of the budget's
``steps_per_epoch``. ``num_workers``: the authors' value is not known to us; we use 4 (the usual
default of such scripts) capped at the CPU count, so the reference never oversubscribes the cores.
The files are written at the training size by default (``ref_file_size``), which favours the
reference: the authors decode full-size originals (MVTec AD: 700-1024 px) before resizing.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tabulate import tabulate
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from fsad_bench.budgets import Budget
from fsad_bench.config import ResolvedMethod, resolve_method_config
from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.errors import UserError
from fsad_bench.protocol import ProtocolSpec, load_protocol
from fsad_bench.runner.generator import resolve_budget
from fsad_methods.training import IMAGENET_MEAN, IMAGENET_STD, BalancedBatches, seed_everything

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


def _sync(device: str) -> None:
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
        _sync(self.device)
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
    PNG sizes, unlike white noise, which would make the reference's PNG decoding unfairly slow."""
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
    reference: list[str] | None = None    # None = the measured methods whose detector sets bench_reference
    ref_workers: int | None = None
    ref_file_size: int | None = None
    repeats: int = 1
    protocol: str = "q1"


@dataclass
class BenchRow:
    """One line of the table: a method's pipeline (ours or reference) at a budget on a device."""

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
    train_ratio: float | None = None
    eval_ratio: float | None = None
    roofline: float | str | None = None
    note: str = ""
    phases: list[dict[str, Any]] = field(default_factory=list)
    train_flops_s: float | None = None    # from the declared FLOPs per image; None = not declared

    def table(self) -> dict[str, Any]:
        ratio = "" if self.train_ratio is None else f"{self.train_ratio:.2f}x / {self.eval_ratio:.2f}x"
        roof = self.roofline if isinstance(self.roofline, str) or self.roofline is None \
            else f"{100 * self.roofline:.1f}%"
        return {"method": self.method, "budget": self.budget, "pipeline": self.pipeline,
                "device": self.device, "img": self.img, "backbone": self.backbone, "batch": self.batch,
                "bf16/CL": f"{'y' if self.bf16 else 'n'}/{'y' if self.channels_last else 'n'}",
                "train img/s": self.train_img_s, "eval img/s": self.eval_img_s,
                "peak MiB": self.peak_mem_mb, "memory": self.mem_kind,
                "s/step": "" if self.s_per_step is None else self.s_per_step,
                "cell min": "" if self.cell_min is None else self.cell_min,
                "ours/ref train / eval": ratio, "roofline": "" if roof is None else roof}


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


def declares_reference(cls: type[Detector]) -> bool:
    """Whether the detector declares that it trains with ``train_balanced`` (``balanced_training``)."""
    return cls.balanced_training is not Detector.balanced_training


def _train_set(size: int, device: str) -> TrainSet:
    images = texture_images(N_NORMAL + N_ANOMALY, size)
    labels = np.r_[np.zeros(N_NORMAL, int), np.ones(N_ANOMALY, int)]
    return TrainSet(images, labels, seed=0, device=device)


def _eval_rate(score: Any, images: np.ndarray, device: str) -> float:
    score(images[: min(8, len(images))])  # warm-up (allocator, cuDNN autotuning)
    _sync(device)
    t0 = time.perf_counter()
    score(images)
    _sync(device)
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
    train = _train_set(size, device)
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
    train = _train_set(resolved.img_size, device)
    eval_images = texture_images(s.eval_images, resolved.img_size, seed=1)
    det = resolved.detector()
    with MemoryProbe(device) as mem:
        _sync(device)
        t0 = time.perf_counter()
        det.fit(train)
        _sync(device)
        fit_s = time.perf_counter() - t0
        eval_rate = _eval_rate(det.score, eval_images, device)
    return BenchRow(method=resolved.method, budget=budget_name, pipeline="ours (whole fit)", device=device,
                    img=resolved.img_size, backbone=str(resolved.params.get("backbone", "-")), batch="-",
                    bf16=s.amp_bf16 and speed, channels_last=s.channels_last and speed,
                    train_img_s=len(train.images) / fit_s, eval_img_s=eval_rate, peak_mem_mb=mem.peak_mb,
                    mem_kind=mem.kind, s_per_step=None, note=WHOLE_FIT_NOTE,
                    phases=[{"name": "whole fit", "seconds": fit_s, "images": len(train.images)}])


# ------------------------------------------------------------------ the authors'-style reference


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


def reference_throughput(resolved: ResolvedMethod, budget_name: str, s: BenchSettings, device: str,
                         folder: Path) -> BenchRow:
    """The authors'-style pipeline for a detector that declares ``balanced_training`` (``train_balanced``)
    at its budget's settings (fp32, NCHW): the same network, loss and schedule ``fit`` trains."""
    size = resolved.img_size
    seed_everything(0)
    parts = resolved.detector().balanced_training(device, seed=0)
    if parts is None:
        raise BenchDeclarationError(f"no reference pipeline for {resolved.method}: its balanced_training "
                                    "returned None (the reference trains what train_balanced trains)")
    c = parts.schedule
    workers = s.ref_workers if s.ref_workers is not None else default_ref_workers()
    file_size = s.ref_file_size or size
    train = _train_set(file_size, "cpu")
    files = []
    for i, img in enumerate(train.images):  # written once, decoded at every access
        files.append(str(folder / f"{i:04d}.png"))
        Image.fromarray(img).save(files[-1])
    eval_files = []
    for i, img in enumerate(texture_images(s.eval_images, file_size, seed=1)):
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
    with MemoryProbe(device) as mem:
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
            _sync(device)
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(loader):  # a fresh iterator per epoch: workers restart, as theirs
                step(x, y)
                _sync(device)
                t1 = time.perf_counter()
                (first if i == 0 else steady).append(t1 - t0)
                t0 = t1
                done += 1
                if done >= s.steps:
                    break
            lr_sched.step()
        # A budget epoch is one first step and steps_per_epoch - 1 steady ones. Timing only a few
        # steps must not charge the worker start to fewer steps than the authors' epoch has.
        # medians, as for our pipeline (StepClock.phases)
        steady_s = float(np.median(steady)) if steady else float(np.median(first))
        epoch_s = float(np.median(first)) + (c.steps_per_epoch - 1) * steady_s
        step_s = epoch_s / c.steps_per_epoch

        net = parts.network.eval()
        eval_loader = torch.utils.data.DataLoader(
            FileDataset(eval_files, np.zeros(len(eval_files), int), size, 0.0),
            batch_size=parts.eval_batch_size, shuffle=False, num_workers=workers, pin_memory=cuda)
        with torch.no_grad():
            net(torch.zeros(2, 3, size, size, device=device))  # warm-up of the model, not the loader
            _sync(device)
            t0 = time.perf_counter()
            for x, _ in eval_loader:
                net(x.to(device, non_blocking=True)).float().cpu()
            _sync(device)
            eval_s = time.perf_counter() - t0
    return BenchRow(method=resolved.method, budget=budget_name, pipeline=f"reference ({workers} workers)",
                    device=device, img=size, backbone=str(resolved.params.get("backbone", "-")),
                    batch=str(c.batch_size), bf16=False, channels_last=False,
                    train_img_s=c.batch_size / step_s,
                    eval_img_s=len(eval_files) / eval_s, peak_mem_mb=mem.peak_mb,
                    mem_kind=mem.kind + (" (main process)" if not cuda else ""), s_per_step=step_s,
                    note=f"reference: PNG files of {file_size} px",
                    phases=[{"first_step_s": float(np.median(first)), "steady_step_s": steady_s,
                             "steps_per_epoch": c.steps_per_epoch, "timed_steps": done}])


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
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        _sync(device)
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


def _median_row(rows: list[BenchRow]) -> BenchRow:
    """The repeat with the median training throughput, its evaluation rate replaced by the median
    over the repeats (the two are measured separately), its peak memory by the largest."""
    row = sorted(rows, key=lambda r: r.train_img_s)[len(rows) // 2]
    return dataclasses.replace(row, eval_img_s=float(np.median([r.eval_img_s for r in rows])),
                               peak_mem_mb=max(r.peak_mem_mb for r in rows))


@dataclass
class BenchPlan:
    """Everything a bench run measures, resolved and validated before the first measurement (a bad
    method, budget or hyper-parameter stops the run before anything is timed)."""

    spec: ProtocolSpec
    methods: list[str]
    budgets: list[Budget]                               # resolved once for the run
    ours: dict[tuple[str, str], ResolvedMethod]         # (budget, method) -> with bench's speed options
    reference: dict[tuple[str, str], ResolvedMethod]    # (budget, method) -> fp32 NCHW, for the reference
    errors: list[str] = field(default_factory=list)     # methods refused for a wrong bench declaration


def plan_bench(s: BenchSettings) -> BenchPlan:
    spec = load_protocol(s.protocol)
    if not s.budgets:
        raise UserError("bench needs at least one budget (--budgets quick,paper)")
    methods = list(s.methods or spec.methods)
    budgets = [resolve_budget(spec, b, methods) for b in s.budgets]
    ours = {(b.name, m): resolve_for_bench(b, m, s.amp_bf16, s.channels_last)
            for b in budgets for m in methods}
    classes = {m: ours[budgets[0].name, m].cls for m in methods}
    reference = [m for m in methods if classes[m].bench_reference] if s.reference is None else s.reference
    for m in reference:
        if m not in methods:
            raise UserError(f"--reference {m}: not among the measured --methods")
        if not declares_reference(classes[m]):
            raise UserError(f"--reference {m}: no reference pipeline for it; its detector declares no "
                            "balanced_training (the reference trains what train_balanced trains)")
    return BenchPlan(spec, methods, budgets, ours,
                     {(b.name, m): resolve_for_bench(b, m) for b in budgets for m in reference})


def bench_rows(s: BenchSettings, device: str, plan: BenchPlan | None = None) -> list[BenchRow]:
    plan = plan or plan_bench(s)
    rows: list[BenchRow] = []
    cuda = device.startswith("cuda")
    peaks: dict[str, tuple[float, str]] = {}
    for budget in plan.budgets:
        for method in plan.methods:
            key = (budget.name, method)
            # ours and the reference alternate within each repeat and the ratio is the median of the
            # per-repeat ratios: on a shared machine the speed drifts between minutes, and timing
            # all of one pipeline and then all of the other would put the drift into the ratio
            pairs = []
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    for _ in range(s.repeats):
                        mine = measure_method(plan.ours[key], budget.name, s, device)
                        theirs = (reference_throughput(plan.reference[key], budget.name, s, device, Path(tmp))
                                  if key in plan.reference else None)
                        pairs.append((mine, theirs))
            except BenchDeclarationError as exc:
                print(f"  not measured: {exc}", file=sys.stderr)
                plan.errors.append(str(exc))
                continue
            ours = _median_row([m for m, _ in pairs])
            if cuda:
                dtype = "bf16" if ours.bf16 else "tf32"
                if ours.train_flops_s is not None:
                    peaks.setdefault(dtype, peak_flops(device, dtype))
                    ours.roofline = ours.train_flops_s / peaks[dtype][0]
                    ours.note = (ours.note + f" roofline: {peaks[dtype][1]}").strip()
                else:
                    ours.roofline = "n/a (FLOPs not declared)"
            else:
                ours.roofline = NA_CPU
            rows.append(ours)
            if key in plan.reference:
                ref = _median_row([r for _, r in pairs])
                ours.train_ratio = float(np.median([m.train_img_s / r.train_img_s for m, r in pairs]))
                ours.eval_ratio = float(np.median([m.eval_img_s / r.eval_img_s for m, r in pairs]))
                rows.append(ref)
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


def run_bench(s: BenchSettings, grid: bool = False, json_path: Path | None = None) -> list[BenchRow]:
    """Measure, print the table (and the GPU projections on CUDA), optionally write JSON."""
    device = resolve_bench_device(s.device)
    if s.steps < 1 or s.warmup < 0 or s.repeats < 1 or s.eval_images < 1:
        raise UserError("bench needs --steps >= 1, --warmup >= 0, --repeats >= 1, --eval-images >= 1")
    if s.amp_bf16 and not device.startswith("cuda"):
        raise UserError(f"--amp-bf16 on {device}: {CPU_BF16}")
    plan = plan_bench(s)
    hw = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{os.cpu_count()} CPUs"
    header = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device} ({hw}); "
              f"{s.steps} timed steps after {s.warmup} warm-up, {s.eval_images} eval images, "
              f"median of {s.repeats} repeat(s)")
    print(header)
    rows = bench_rows(s, device, plan)
    print(tabulate([r.table() for r in rows], headers="keys", floatfmt=".2f", tablefmt="github"))
    notes = sorted({r.note for r in rows if r.note})
    for n in notes:
        print(f"note: {n}")
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
