"""The training pipeline shared by DevNet and the baselines that use DevNet's optimisation.

Why it looks like this: the authors' code decodes and resizes every image with PIL at every step
through a DataLoader whose workers restart each epoch. Here the decoded, resized uint8 images sit
in one tensor on the training device; a step gathers a balanced batch by index, rotates it on the
tensor (one batched ``grid_sample``) and normalises it. Same augmentation, no decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fsad_bench.detectors.hparams import (
    BatchSize,
    Degrees,
    Fraction,
    NonNegFloat,
    PositiveFloat,
    PositiveInt,
)
from fsad_bench.errors import TrainingDivergedError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def seed_everything(seed: int) -> None:
    """Seed torch's global generator so model initialisation is reproducible."""
    torch.manual_seed(seed)


def to_uint8_tensor(images: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """uint8 (N,H,W,3) numpy -> uint8 (N,3,H,W) tensor on ``device`` (kept there for all steps)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def normalise(batch_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW with ImageNet mean/std (authors' ToTensor + Normalize)."""
    return _standardise(batch_u8.float().div_(255.0))


def random_rotation(x: torch.Tensor, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image by its own angle ~ U(-max_degrees, max_degrees), nearest, zero fill.

    Matches torchvision ``RandomRotation(180)`` (nearest interpolation, fill 0 before
    normalisation) applied to [0,1] images, done for the whole batch at once.
    """
    if max_degrees <= 0:
        return x
    n = x.shape[0]
    angles = (torch.rand(n, generator=generator, device=generator.device) * 2 - 1) * max_degrees
    theta = angles.to(x.device) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zeros = torch.zeros_like(cos)
    mat = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(mat.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def augment_and_normalise(batch_u8: torch.Tensor, rotation: float,
                          generator: torch.Generator) -> torch.Tensor:
    """Training transform: rotation on [0,1] images (zero fill), then ImageNet normalisation."""
    return _standardise(random_rotation(batch_u8.float().div_(255.0), rotation, generator))


class BalancedBatches:
    """Endless balanced batches: half normals, half labelled anomalies (DevNet's oversampling).

    Each class is an endless stream of seeded permutations of its indices, as in the authors'
    sampler (which was not seeded). With no labelled anomalies (or ``balanced=False``) batches are
    drawn from all training images alike.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int, balanced: bool = True) -> None:
        self.rng = np.random.default_rng(seed)
        normal = np.flatnonzero(labels == 0)
        anomal = np.flatnonzero(labels == 1)
        if balanced and len(anomal) > 0:
            half = batch_size // 2
            self.streams = [(self._stream(normal), batch_size - half), (self._stream(anomal), half)]
        else:
            self.streams = [(self._stream(np.arange(len(labels))), batch_size)]

    def _stream(self, idx: np.ndarray):
        while True:
            yield from self.rng.permutation(idx)

    def next(self) -> np.ndarray:
        return np.array([next(stream) for stream, count in self.streams for _ in range(count)])


@dataclass
class Schedule:
    """Optimisation settings shared by DevNet, FLOS and MINNS (authors' code defaults).

    The annotations are the valid ranges (checked before a grid runs): a balanced batch needs one
    normal and one labelled anomaly, so ``batch_size >= 2``; ``grad_clip = 0`` turns clipping off.
    """

    epochs: PositiveInt = 50
    steps_per_epoch: PositiveInt = 20
    batch_size: BatchSize = 48
    lr: PositiveFloat = 2e-4
    weight_decay: NonNegFloat = 1e-5
    lr_step_epochs: PositiveInt = 10
    lr_gamma: Fraction = 0.1
    grad_clip: NonNegFloat = 1.0
    rotation: Degrees = 180.0


@dataclass
class SpeedOptions:
    """Numerics/layout switches that change speed, not the method (both off = the authors' fp32 NCHW).

    amp_bf16: forward passes under ``torch.autocast(dtype=bfloat16)`` (CUDA, or CPUs with AMX /
    AVX512-BF16); the loss is computed in float32 outside autocast, and bf16 needs no loss scaling.
    channels_last: model and inputs in NHWC memory format (faster convolutions with cuDNN/oneDNN).
    """

    amp_bf16: bool = False
    channels_last: bool = False

    def autocast(self, device: torch.device | str) -> torch.autocast:
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=self.amp_bf16)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


@dataclass
class BalancedTraining:
    """What :func:`train_balanced` trains for a detector (its ``balanced_training``, e.g. DevNet's).

    model:           the module whose output ``loss`` takes (e.g. DevNet's training view of its network).
    network:         the scoring network: ``network(x)`` is the image score (B,), used for evaluation.
    loss:            ``loss(model_output, labels)``, with whatever random state the detector's loss keeps
                     (DevNet's reference generator) already seeded.
    schedule:        the optimisation settings.
    eval_batch_size: images per batch when scoring.
    """

    model: nn.Module
    network: nn.Module
    loss: Callable[[Any, torch.Tensor], torch.Tensor]
    schedule: Schedule
    eval_batch_size: int = 64


def schedule_of(config: Any) -> Schedule:
    """The :class:`Schedule` fields of a config that extends it (DevNet's, MINNS's)."""
    return Schedule(**{k: getattr(config, k) for k in Schedule.__dataclass_fields__})


def to_float32(outputs: Any) -> Any:
    """Model outputs (a tensor or a list of tensors, e.g. Patch-DS's cell scores) in float32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    return [to_float32(o) for o in outputs]


def optimiser_step(loss: torch.Tensor, opt: torch.optim.Optimizer, parameters: Any, grad_clip: float,
                   epoch: int) -> float:
    """One update of every training loop: a non-finite loss ends the run (diverged), else backpropagate,
    clip the gradient norm of ``parameters`` when ``grad_clip`` > 0, step; returns the loss's value."""
    if not torch.isfinite(loss):
        raise TrainingDivergedError(f"non-finite loss {loss.item()} at epoch {epoch}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(parameters, grad_clip)
    opt.step()
    return loss.item()


def train_balanced(model: nn.Module, images: torch.Tensor, labels: np.ndarray, sched: Schedule,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   seed: int, speed: SpeedOptions | None = None, step_losses: list[float] | None = None
                   ) -> list[float]:
    """Adam + StepLR (stepped per epoch) + grad-norm clipping over balanced, rotated batches.

    ``images`` is the uint8 NCHW training tensor on the model's device; ``loss_fn(model_output,
    labels_tensor)`` gives the loss. Returns the mean loss of each epoch; every step's loss is appended
    to ``step_losses`` if given (for :func:`divergence`). A non-finite loss raises
    :class:`TrainingDivergedError`. ``speed``: bf16 autocast / channels_last (default: neither).

    No DataLoader, no decoding: a step is an index gather, one batched rotation and the model.
    """
    speed = speed or SpeedOptions()
    speed.prepare_model(model)
    device = images.device
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = BalancedBatches(labels, sched.batch_size, seed)
    labels_t = torch.as_tensor(labels, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=sched.lr, weight_decay=sched.weight_decay)
    lr_sched = torch.optim.lr_scheduler.StepLR(opt, step_size=sched.lr_step_epochs, gamma=sched.lr_gamma)
    history: list[float] = []
    model.train()
    for epoch in range(sched.epochs):
        total = 0.0
        for _ in range(sched.steps_per_epoch):
            idx = torch.as_tensor(batches.next(), device=device)
            x = speed.prepare_input(augment_and_normalise(images[idx], sched.rotation, gen))
            with speed.autocast(device):
                out = model(x)
            # the loss in float32: the deviation loss standardises by a reference std, which bf16
            # would round to 3 significant digits
            loss = loss_fn(to_float32(out), labels_t[idx])
            value = optimiser_step(loss, opt, model.parameters(), sched.grad_clip, epoch)
            total += value
            if step_losses is not None:
                step_losses.append(value)
        lr_sched.step()
        history.append(total / max(sched.steps_per_epoch, 1))
    return history


#: A finite training run is flagged ``diverged`` when the mean loss of its last steps exceeds this many
#: times its loss at initialisation (see :func:`divergence`).
DIVERGENCE_FACTOR = 10.0


def divergence(step_losses: Sequence[float], factor: float = DIVERGENCE_FACTOR) -> str | None:
    """Why a training run whose losses stayed finite diverged, or None when it did not.

    Criterion: the mean loss of the last 10 % of the steps (at least one) is more than ``factor`` times
    the loss of the first step, i.e. the loss at initialisation (computed before the first update).
    Why this is sound for every loss trained here: each is bounded below by 0 (deviation loss, focal
    loss, cross-entropy, squared distances, distillation losses) and is minimised from its value at
    initialisation (DevNet's deviation loss starts near margin / 2 = 2.5 with balanced batches), so a
    healthy run ends at or below where it started, up to batch noise, which averaging a tenth of the
    steps and the factor 10 absorb. An optimiser that overshoots drives the outputs and the loss up by
    orders of magnitude without reaching inf: DevNet with ``lr=1e6`` at the quick budget went from 2.3
    to 1.6e13 within its first epoch and still ended at 3.9e10, so its first epochs are no reference;
    the loss before the first update is. A run of one step cannot be judged (None).
    """
    n = len(step_losses)
    if n < 2:
        return None
    k = max(1, n // 10)
    initial = float(step_losses[0])
    last = float(np.mean(step_losses[-k:]))
    if last > factor * initial:
        return (f"training loss rose from {initial:.4g} at initialisation to {last:.4g} (mean of the last "
                f"{k} of {n} steps), more than {factor:g}x: the optimisation diverged (learning rate too "
                "high?)")
    return None


def divergence_flags(step_losses: Sequence[float], phase: str = "") -> list[dict[str, str]]:
    """``[{"flag": "diverged", "reason": ...}]`` when :func:`divergence` finds one, else ``[]``."""
    reason = divergence(step_losses)
    if reason is None:
        return []
    return [{"flag": "diverged", "reason": f"{phase}: {reason}" if phase else reason}]


def chunks(n: int, size: int) -> list[slice]:
    """Slices covering range(n) in steps of ``size``; a last chunk of one item joins the one before.

    BatchNorm in training mode cannot normalise a single sample whose feature map is 1x1.
    """
    bounds = list(range(0, n, max(size, 1))) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        bounds.pop(-2)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, images: torch.Tensor,
                          transform: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> None:
    """Set every BatchNorm's running statistics to the training data's under the final weights.

    Why: BN's running statistics are an exponential average (momentum 0.1) over the training steps.
    After the official 150 epochs they have converged, but after the few steps of a short budget
    they are still partly the initial ones (mean 0, variance 1), and eval-mode scores are then
    meaningless (on our tiny test sets they even rank anomalies below normals). One pass in training
    mode with a cumulative average (``momentum=None``) replaces them by the data's statistics.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = net.training
    net.train()
    for s in chunks(len(images), batch_size):
        net(transform(images[s]))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    net.train(was_training)


@torch.inference_mode()
def predict(model: nn.Module, images: np.ndarray, device: str, batch_size: int = 64,
            speed: SpeedOptions | None = None) -> np.ndarray:
    """Model outputs (float32) for uint8 (N,H,W,3) images, in eval mode, batch by batch.

    Under ``inference_mode`` (no autograd bookkeeping at all). Batches go to the device as uint8
    (4x less transfer than float) from pinned memory on CUDA; results stay on the device until the
    end, so the host never waits for a batch it does not need yet.
    """
    speed = speed or SpeedOptions()
    model.eval()
    speed.prepare_model(model)
    cuda = torch.device(device).type == "cuda"
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).permute(0, 3, 1, 2)
        if cuda:
            batch = batch.contiguous().pin_memory().to(device, non_blocking=True)
        else:
            batch = batch.contiguous().to(device)
        x = speed.prepare_input(normalise(batch))
        with speed.autocast(device):
            out.append(model(x).float())
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, dtype=np.float32)
