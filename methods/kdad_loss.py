"""KDAD's distillation loss and anomaly score (Salehi et al., CVPR 2021), as pure tensor functions.

Both are built from two per-sample distances between a student feature map ``s`` and the teacher's
``t`` at one layer, each taken as in the authors' ``MseDirectionLoss`` / ``detection_test``:

* direction: ``1 - cos(s, t)`` with both maps flattened per sample (C*H*W values), i.e. ONE cosine
  over the whole map, not a per-position cosine over channels (``torch.nn.CosineSimilarity()`` on
  ``view(B, -1)``, eps 1e-8);
* magnitude: the mean squared difference over the sample's C*H*W values.

Training loss = sum over layers of [batch-mean direction + lamda * MSE]. The authors' ``nn.MSELoss``
averages over all B*C*H*W values, which equals the batch mean of the per-sample MSE because every
sample has the same number of values, so the loss is simply the batch mean of the per-sample
distance below. The test score is the same per-sample sum (lamda included, as in their
``detection_test`` without ``direction_loss_only``), over the test layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: eps of ``torch.nn.CosineSimilarity()`` (the authors' default).
COS_EPS = 1e-8


def direction_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(B,) ``1 - cos`` between the per-sample flattened feature maps."""
    return 1.0 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1, eps=COS_EPS)


def magnitude_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared difference over each sample's C*H*W values."""
    return (student - teacher).pow(2).flatten(1).mean(1)


def layer_distances(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
                    lamda: float) -> torch.Tensor:
    """(B,) sum over layers of direction + lamda * magnitude: KDAD's per-sample discrepancy."""
    if len(students) != len(teachers) or not students:
        raise ValueError(f"need matching, non-empty layer lists (got {len(students)} and {len(teachers)})")
    total = students[0].new_zeros(students[0].shape[0])
    for s, t in zip(students, teachers):
        if s.shape != t.shape:
            raise ValueError(f"student {tuple(s.shape)} and teacher {tuple(t.shape)} maps differ")
        total = total + direction_distance(s, t) + lamda * magnitude_distance(s, t)
    return total


def kdad_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
              lamda: float) -> torch.Tensor:
    """Scalar training loss: sum_l [mean_b (1 - cos_l) + lamda * MSE_l]."""
    return layer_distances(students, teachers, lamda).mean()


def kdad_score(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
               lamda: float) -> torch.Tensor:
    """(B,) anomaly scores, higher = more anomalous (the authors' ``detection_test`` total)."""
    return layer_distances(students, teachers, lamda)
