"""DevNet's deviation loss (Pang et al., Eq. 4-6)."""

from __future__ import annotations

import torch


def deviation_loss(scores: torch.Tensor, labels: torch.Tensor, margin: float = 5.0,
                   n_ref: int = 5000, generator: torch.Generator | None = None,
                   reference: torch.Tensor | None = None) -> torch.Tensor:
    """mean((1-y)|dev| + y max(0, margin - dev)) with dev = (score - mu_R) / sigma_R.

    mu_R and sigma_R come from a fresh draw of ``n_ref`` N(0,1) reference scores per call (the
    authors' code draws 5000 per step); pass ``reference`` to fix them (tests).
    """
    if reference is None:
        reference = torch.randn(n_ref, generator=generator, device=scores.device)
    dev = (scores - reference.mean()) / reference.std()
    y = labels.to(scores.dtype)
    inlier = (1 - y) * dev.abs()
    outlier = y * torch.clamp(margin - dev, min=0)
    return (inlier + outlier).mean()
