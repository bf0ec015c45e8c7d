"""MIL pooling, deep-supervision loss and score of MINNS (MI-Net with DS, Wang et al. 2018).

Pure functions on tensors. MIL pooling turns a bag of instance features into one bag feature:

* max:  max_k x_k
* mean: (1/K) sum_k x_k
* LSE:  (1/r) log((1/K) sum_k exp(r x_k)) - between mean (r -> 0) and max (r -> inf). The
  authors' code (``mil_nets/pooling_method.py``) computes log(mean(exp(x))), i.e. r = 1; the paper
  writes the general r. Computed as (logsumexp(r x) - log K) / r, stable for large r x.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

POOLINGS = ("max", "mean", "lse")


def max_pool(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Max over the instance axis ``dim``."""
    return x.amax(dim=dim)


def mean_pool(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean over the instance axis ``dim``."""
    return x.mean(dim=dim)


def lse_pool(x: torch.Tensor, r: float = 1.0, dim: int = 1) -> torch.Tensor:
    """Log-sum-exp pooling (1/r) log(mean_k exp(r x_k)) over the instance axis ``dim`` (r > 0)."""
    if r <= 0:
        raise ValueError(f"LSE pooling needs r > 0, got {r}")
    return (torch.logsumexp(r * x, dim=dim) - math.log(x.shape[dim])) / r


def mil_pool(x: torch.Tensor, mode: str = "max", r: float = 1.0, dim: int = 1) -> torch.Tensor:
    """MIL pooling selected by name: "max" | "mean" | "lse" (``r`` used by "lse" only)."""
    if mode == "max":
        return max_pool(x, dim)
    if mode == "mean":
        return mean_pool(x, dim)
    if mode == "lse":
        return lse_pool(x, r, dim)
    raise ValueError(f"unknown MIL pooling {mode!r}; use one of {', '.join(POOLINGS)}")


def deep_supervision_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the outputs (columns of ``logits`` (B, L)) of each output's mean binary CE.

    The authors' Keras model sums the per-output losses (loss weights 1, 1, 1, and 0 for the
    averaged output); the mean is the same objective divided by L, which keeps the loss (and so
    DevNet's gradient-norm clip at 1) on the scale of a single classifier.
    """
    if logits.ndim == 1:
        logits = logits[:, None]
    y = labels.to(logits.dtype)[:, None].expand_as(logits)
    per_output = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=0)
    return per_output.mean()


def deep_supervision_score(logits: torch.Tensor, mode: str = "prob") -> torch.Tensor:
    """Bag score from the outputs' logits (B, L): mean of their sigmoids ("prob", MI-Net with DS's
    averaged prediction) or mean of the logits ("logit"). Computed in float64 so that confident
    outputs do not all saturate to the same probability (ties would blur the ranking)."""
    if logits.ndim == 1:
        logits = logits[:, None]
    z = logits.double()
    if mode == "prob":
        return torch.sigmoid(z).mean(dim=1)
    if mode == "logit":
        return z.mean(dim=1)
    raise ValueError(f"unknown score mode {mode!r}; use prob or logit")
