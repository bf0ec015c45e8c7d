"""Binary focal loss on logits (Lin et al., ICCV 2017), as FLOS uses it.

FL = -alpha (1 - p_t)^gamma log(p_t), with p = sigmoid(logit), p_t = p for y = 1 and 1 - p for y = 0.

``alpha`` is a plain multiplier of every sample's loss (the authors' FLOS code: alpha = 1,
gamma = 2), NOT Lin et al.'s class-balancing weight (alpha for positives, 1 - alpha for
negatives): with that convention alpha = 1 would give normals zero loss. Class balance comes from
DevNet's balanced batches instead. ``torchvision.ops.sigmoid_focal_loss`` with ``alpha < 0`` (its
switch for "no balancing") equals this loss with alpha = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def binary_focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0,
                      gamma: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """Focal loss of ``logits`` (any shape) against 0/1 ``labels`` (same shape).

    Computed from ``binary_cross_entropy_with_logits`` (= -log p_t, stable for large |logit|);
    1 - p_t = -expm1(-BCE), exact also for well-classified samples (p_t near 1).
    ``reduction``: "mean" | "sum" | "none".
    """
    y = labels.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    one_minus_pt = -torch.expm1(-ce)
    loss = alpha * one_minus_pt ** gamma * ce
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}; use mean, sum or none")
