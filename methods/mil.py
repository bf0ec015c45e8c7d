"""Top-K multiple-instance pooling of patch (feature-map cell) scores."""

from __future__ import annotations

import torch


def topk_count(n_cells: int, ratio: float) -> int:
    """k = max(int(n_cells * ratio), 1), as in the authors' code (448 px -> 14x14 map -> k = 19)."""
    return max(int(n_cells * ratio), 1)


def topk_mil(cell_scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Image score from cell scores (B, n_cells): mean of the top-k of |score|.

    The absolute value is taken before top-k (authors' code). ``ratio == 0`` reproduces their
    ``topk=0`` switch: the plain mean of the raw cell scores.
    """
    flat = cell_scores.flatten(1)
    if ratio == 0:
        return flat.mean(dim=1)
    k = topk_count(flat.shape[1], ratio)
    return flat.abs().topk(k, dim=1).values.mean(dim=1)
