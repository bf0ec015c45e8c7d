"""Deep SAD objective (Ruff et al., ICLR 2020; official ``optim/DeepSAD_trainer.py``).

Per sample, with dist = ||phi(x) - c||^2 and the official semi-supervised target y~:
    y~ =  0 (unlabelled):          dist
    y~ = +1 (labelled normal):     eta * (dist + eps)
    y~ = -1 (labelled anomaly):    eta * (dist + eps)^-1
i.e. ``where(y~ == 0, dist, eta * (dist + eps) ** y~)``, averaged over the batch.
"""

from __future__ import annotations

import torch

ETA = 1.0
EPS = 1e-6


def semi_targets(labels: torch.Tensor) -> torch.Tensor:
    """Benchmark labels (0 = unlabelled normal, 1 = labelled anomaly) -> official targets (0, -1)."""
    return -(labels.long() != 0).long()


def deepsad_sample_losses(dist: torch.Tensor, targets: torch.Tensor, eta: float = ETA,
                          eps: float = EPS) -> torch.Tensor:
    """Per-sample Deep SAD losses for official targets ``targets`` in {-1, 0, +1}."""
    labelled = eta * (dist + eps) ** targets.to(dist.dtype)
    return torch.where(targets == 0, dist, labelled)


def deepsad_loss(dist: torch.Tensor, labels: torch.Tensor, eta: float = ETA,
                 eps: float = EPS) -> torch.Tensor:
    """Batch loss for benchmark labels (0 unlabelled normal, 1 labelled anomaly): mean per-sample loss."""
    return deepsad_sample_losses(dist, semi_targets(labels), eta, eps).mean()
