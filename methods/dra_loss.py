"""DRA's training targets per head, its loss and its anomaly score (Ding et al., CVPR 2022).

Labels of a training batch: 0 = normal, 1 = labelled (seen) anomaly, 2 = pseudo-anomaly. Each of
the four heads learns one thing, with DevNet's deviation loss (:mod:`fsad_methods.deviation_loss`),
where target 1 pushes a score above the margin and target 0 pulls it to the prior's mean:

==========  =============================  ==================  =====================================
head        trained on                     target 1 for        learns
==========  =============================  ==================  =====================================
holistic    every sample                   label 0 (normals)   normality (a high score = normal)
seen        label != 2 (no pseudo)         label 1             the seen anomalies' abnormality
pseudo      label != 1 (no seen)           label 2             the pseudo-anomalies' abnormality
composite   every sample                   label != 0          latent residuals against normals
==========  =============================  ==================  =====================================

The loss is the sum of the four heads' deviation losses, each the mean over the samples the head is
trained on, each with its own fresh draw of the N(0, 1) reference (the authors' code calls its
criterion, which draws 5000 scores, once per head). The anomaly score negates the holistic (normality)
head and adds the three abnormality heads, unnormalised (the authors' ``normalization`` returns its
input): ``-holistic + seen + pseudo + composite``.

One difference from the authors' code: a head with no sample in the batch (the seen head when every
normal became a pseudo-anomaly and there are no labelled anomalies, only possible with tiny batches)
adds 0 to the loss; the authors' mean over no samples would be NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fsad_methods.deviation_loss import deviation_loss

NORMAL, SEEN, PSEUDO = 0, 1, 2


class HeadScores(NamedTuple):
    """One score per image (B,) from each head (each already averaged over the scales)."""

    holistic: torch.Tensor
    seen: torch.Tensor
    pseudo: torch.Tensor
    composite: torch.Tensor


HEADS = HeadScores._fields


class HeadTarget(NamedTuple):
    """Which samples of the batch a head is trained on (boolean mask) and their 0/1 targets."""

    mask: torch.Tensor
    target: torch.Tensor


def head_targets(labels: torch.Tensor) -> HeadScores:
    """Per head, the :class:`HeadTarget` for batch ``labels`` (0 normal, 1 seen, 2 pseudo): see the
    module's table. Returned in a :class:`HeadScores` tuple (one HeadTarget per field)."""
    labels = labels.long()
    every = torch.ones_like(labels, dtype=torch.bool)
    no_pseudo, no_seen = labels != PSEUDO, labels != SEEN
    return HeadScores(
        holistic=HeadTarget(every, (labels == NORMAL).long()),
        seen=HeadTarget(no_pseudo, (labels[no_pseudo] == SEEN).long()),
        pseudo=HeadTarget(no_seen, (labels[no_seen] == PSEUDO).long()),
        composite=HeadTarget(every, (labels != NORMAL).long()),
    )


def head_losses(scores: HeadScores, labels: torch.Tensor, margin: float = 5.0, n_ref: int = 5000,
                generator: torch.Generator | None = None) -> HeadScores:
    """Each head's deviation loss (a scalar tensor; 0 for a head with no sample in the batch), in
    head order, each with its own reference draw of ``n_ref`` N(0, 1) scores from ``generator``."""
    out = []
    for score, (mask, target) in zip(scores, head_targets(labels)):
        if not bool(mask.any()):
            out.append(score.sum() * 0.0)  # keeps the graph and dtype; no reference draw
            continue
        out.append(deviation_loss(score[mask], target, margin, n_ref, generator))
    return HeadScores(*out)


def summed(losses: HeadScores) -> torch.Tensor:
    """The training loss from the four heads' losses: their sum."""
    return torch.stack(list(losses)).sum()


def dra_loss(scores: HeadScores, labels: torch.Tensor, margin: float = 5.0, n_ref: int = 5000,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The training loss: the sum of the four heads' deviation losses (:func:`head_losses`)."""
    return summed(head_losses(scores, labels, margin, n_ref, generator))


def anomaly_score(scores: HeadScores) -> torch.Tensor:
    """The image's anomaly score: ``-holistic + seen + pseudo + composite`` (B,)."""
    return -scores.holistic + scores.seen + scores.pseudo + scores.composite
