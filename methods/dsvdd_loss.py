"""Deep SVDD objectives (Ruff et al., ICML 2018; official ``optim/deepSVDD_trainer.py``).

All functions take the squared distances ``dist = ||phi(x) - c||^2`` of a batch (shape (B,)).
"""

from __future__ import annotations

import torch


def one_class_loss(dist: torch.Tensor) -> torch.Tensor:
    """One-class Deep SVDD: mean squared distance to the centre."""
    return dist.mean()


def soft_boundary_loss(dist: torch.Tensor, radius: torch.Tensor | float, nu: float) -> torch.Tensor:
    """Soft-boundary Deep SVDD: R^2 + (1/nu) * mean(max(0, dist - R^2)).

    R is not a parameter of the optimiser (the official code solves for it, see
    :func:`radius_from_distances`), so R^2 only shifts the loss value.
    """
    r2 = torch.as_tensor(radius, dtype=dist.dtype, device=dist.device) ** 2
    return r2 + torch.clamp(dist - r2, min=0).mean() / nu


def radius_from_distances(dist: torch.Tensor, nu: float) -> float:
    """R = the (1 - nu)-quantile of the distances ||phi(x) - c|| (square roots of ``dist``).

    The official ``get_radius`` (numpy's linear-interpolation quantile, as ``torch.quantile``).
    """
    return float(torch.quantile(dist.detach().float().sqrt(), 1.0 - nu))


def soft_boundary_score(dist: torch.Tensor, radius: float) -> torch.Tensor:
    """Anomaly score of the soft-boundary objective: dist - R^2 (positive = outside the sphere)."""
    return dist - radius ** 2


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Autoencoder pretraining loss: per-sample sum of squared errors, averaged over the batch.

    As the official ``optim/ae_trainer.py`` (``torch.mean(torch.sum((outputs - inputs) ** 2, dim=(1,2,3)))``);
    an early version of that file used ``nn.MSELoss`` (the per-element mean), which differs only by
    the constant factor C*H*W (Adam is invariant to it apart from the weight-decay balance).
    """
    return torch.sum((x_hat - x) ** 2, dim=tuple(range(1, x.dim()))).mean()
