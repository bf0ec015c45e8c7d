"""What Deep SVDD and Deep SAD share: the hypersphere centre, distances, and their training loop.

Both methods (Ruff et al., official code ``lukasruff/Deep-SVDD-PyTorch`` and
``lukasruff/Deep-SAD-PyTorch``) map an image to an embedding phi(x) and measure its squared distance
to a fixed centre c, the mean of the initial embeddings with every |c_i| < eps pushed to +-eps
(eps = 0.1, "the 0.1 fix"): a zero unit could otherwise be matched trivially by zero weights.

The loop here differs from :func:`fsad_methods.training.train_balanced` in what the official
code does differently from DevNet: ``MultiStepLR`` milestones (not ``StepLR``), an epoch is one
pass over the training data (``ceil(N / batch)`` steps) unless a step count is given, no gradient
clipping by default, and the loss sees the model and the raw batch (the autoencoder needs its input).
It reuses DevNet's sampler (:class:`BalancedBatches`) and normaliser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fsad_methods.training import BalancedBatches, chunks, optimiser_step

#: The official ``init_center_c(..., eps=0.1)``.
CENTRE_EPS = 0.1


def push_away_from_zero(c: torch.Tensor, eps: float = CENTRE_EPS) -> torch.Tensor:
    """The 0.1 fix: entries with |c_i| < eps become -eps (if negative) or +eps (otherwise).

    The official code moves only strictly negative / strictly positive entries, so an entry that is
    exactly 0 stays 0. We push exact zeros to +eps: a unit that is 0 for every training image (a dead
    ReLU channel of the ResNet, for instance) is exactly the trivial solution the fix exists for.
    """
    c = c.clone()
    small = c.abs() < eps
    c[small & (c < 0)] = -eps
    c[small & (c >= 0)] = eps
    return c


def squared_distance(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """||z_i - c||^2 for each row of ``z`` (B, D): the score and the per-sample loss of both methods."""
    return torch.sum((z - c) ** 2, dim=1)


@torch.no_grad()
def batchstat_embeddings(net: nn.Module, images: torch.Tensor,
                         transform: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> torch.Tensor:
    """Embeddings of uint8 NCHW ``images`` with BatchNorm using batch statistics, buffers untouched.

    Why not eval mode as the official ``init_center_c``: there the BN running statistics came from
    the autoencoder pretraining. Ours may be untrained (random init: mean 0, variance 1) or
    ImageNet's, so the network's initial embedding during training (batch statistics) is the one the
    centre must describe. The running statistics are restored afterwards, so the initial network is
    unchanged.
    """
    buffers = {k: v.clone() for k, v in net.state_dict().items() if "running_" in k or "num_batches" in k}
    was_training = net.training
    net.train()
    out = [net(transform(images[s])) for s in chunks(len(images), batch_size)]
    net.load_state_dict(buffers, strict=False)
    net.train(was_training)
    return torch.cat(out)


def initial_centre(net: nn.Module, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor],
                   batch_size: int, eps: float = CENTRE_EPS) -> torch.Tensor:
    """c = mean of the initial embeddings of ``images``, with the 0.1 fix."""
    return push_away_from_zero(batchstat_embeddings(net, images, transform, batch_size).mean(0), eps)


@dataclass
class LoopSettings:
    """One optimisation phase of the official code: Adam + MultiStepLR(gamma 0.1) over epochs."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_milestones: Sequence[int] = ()
    steps_per_epoch: int = 0  # 0 = one pass over the training data, as the official DataLoader
    grad_clip: float = 0.0    # the official code does not clip
    balanced: bool = False    # the official code draws plain shuffled batches


def parse_milestones(raw: Sequence[int | str] | str) -> tuple[int, ...]:
    """Milestones from TOML (a list) or ``--set key=50,100`` (strings); empty entries ignored."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return tuple(int(float(m)) for m in items if str(m).strip() != "")


def _batches(labels: np.ndarray, s: LoopSettings, seed: int) -> tuple[BalancedBatches, int, int]:
    n = len(labels)
    batch = max(min(s.batch_size, n), 1)  # the official loader never makes a batch larger than N
    steps = s.steps_per_epoch if s.steps_per_epoch > 0 else math.ceil(n / batch)
    return BalancedBatches(labels, batch, seed, balanced=s.balanced), batch, steps


def train_loop(params: Iterator[nn.Parameter] | list[nn.Parameter], module: nn.Module, images: torch.Tensor,
               labels: np.ndarray, s: LoopSettings,
               step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int,
               after_step: Callable[[int, torch.Tensor], None] | None = None,
               step_losses: list[float] | None = None) -> list[float]:
    """Adam + MultiStepLR (stepped after each epoch) over batches of ``images`` (uint8 NCHW).

    ``step_loss(batch_u8, labels)`` returns the batch loss (it normalises the batch itself, so that
    each method keeps its own input transform); ``after_step(epoch, loss)`` runs after each update
    (Deep SVDD's soft-boundary radius). Returns the mean loss of each epoch and appends every step's
    loss to ``step_losses`` if given; a non-finite loss raises :class:`TrainingDivergedError`.
    """
    params = list(params)
    device = images.device
    sampler, _, steps = _batches(labels, s, seed)
    labels_t = torch.as_tensor(labels, device=device)
    opt = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(s.lr_milestones), gamma=0.1)
    history: list[float] = []
    module.train()
    for epoch in range(s.epochs):
        total = 0.0
        for _ in range(steps):
            idx = torch.as_tensor(sampler.next(), device=device)
            loss = step_loss(images[idx], labels_t[idx])
            value = optimiser_step(loss, opt, params, s.grad_clip, epoch)
            if after_step is not None:
                after_step(epoch, loss)
            total += value
            if step_losses is not None:
                step_losses.append(value)
        sched.step()
        history.append(total / max(steps, 1))
    return history


@torch.no_grad()
def embed(net: nn.Module, images: np.ndarray, to_tensor: Callable[[np.ndarray], torch.Tensor],
          batch_size: int) -> torch.Tensor:
    """Eval-mode embeddings of uint8 (N,H,W,3) ``images`` (``to_tensor`` normalises a slice)."""
    net.eval()
    out = [net(to_tensor(images[s])) for s in chunks(len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)
