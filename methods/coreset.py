"""Greedy k-center coreset of a patch-feature memory bank (PatchCore, Roth et al. 2022, sec. 3.2).

The paper's Algorithm 1 picks, one at a time, the feature farthest from the features already picked
(``argmax_m min_n ||psi(m) - psi(n)||``, the greedy approximation of the minimax facility location
problem), where ``psi`` is a random linear projection to ``d* < d`` dimensions (Johnson-Lindenstrauss)
so that each step is cheap. The selected rows of the *unprojected* features are the memory bank.

What the official code (amazon-science/patchcore-inspection, ``ApproximateGreedyCoresetSampler``, the
``approx_greedy_coreset`` of every published run) does, and this module does too:

* ``psi``: a bias-free linear map to 128 dimensions with weights ~ U(-1/sqrt(d), 1/sqrt(d)) (the
  default initialisation of ``torch.nn.Linear``, which the official code uses); skipped when the
  features already have 128 dimensions.
* Start: Algorithm 1 begins with an empty coreset, where "the distance to the coreset" is undefined.
  The official code starts every feature's distance at its mean Euclidean distance to 10 random
  features (``number_of_starting_points``), which are *not* added to the coreset; the first pick is
  therefore the feature farthest on average from those 10.
* Step: pick the argmax of the running distances (first index on ties, ``torch.argmax``), then
  lower every running distance to its Euclidean distance to the pick if that is smaller.
* Size: ``int(n * fraction)`` features (the floor).

Differences (decisions, with why):

* Seeded: the projection and the 10 start features are drawn from generators seeded with the cell's
  seed (the official code draws them from the global torch / numpy generators).
* Size: at least one feature (the floor of a tiny bank's fraction can be 0, which would leave an empty
  memory bank); ``fraction = 1`` keeps every feature, as the official ``identity`` sampler
  ("PatchCore-100%").
* No projection to *more* dimensions: when the features have at most ``projection_dim`` dimensions the
  distances are computed on the features themselves (exactly what the projection approximates); the
  official code would project e.g. 64 dimensions up to 128.
* A picked feature is never picked again (its running distance is set to -inf rather than to its
  computed self-distance, which is 0 only up to rounding); this only matters when the bank has fewer
  distinct features than the coreset size.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: the official projection dimension (``dimension_to_project_features_to``)
PROJECTION_DIM = 128
#: the official number of random start features (``number_of_starting_points``)
N_STARTS = 10


def coreset_size(n_features: int, fraction: float) -> int:
    """How many of ``n_features`` the coreset keeps: ``floor(n * fraction)`` as the official code,
    at least 1, all of them for ``fraction >= 1``."""
    if n_features <= 0:
        return 0
    if fraction >= 1:
        return n_features
    return min(n_features, max(1, math.floor(n_features * fraction)))


def random_projection(in_dim: int, out_dim: int, generator: torch.Generator,
                      device: str | torch.device = "cpu") -> torch.Tensor:
    """(in_dim, out_dim) matrix with entries ~ U(-1/sqrt(in_dim), 1/sqrt(in_dim)): the distribution of
    the official code's ``torch.nn.Linear(in_dim, out_dim, bias=False)`` weights."""
    bound = 1.0 / math.sqrt(in_dim)
    weights = torch.rand(in_dim, out_dim, generator=generator, dtype=torch.float32)
    return (weights * (2 * bound) - bound).to(device)


def _distances_to(points: torch.Tensor, squared_norms: torch.Tensor, index: int) -> torch.Tensor:
    """Euclidean distances (N,) of every row of ``points`` to row ``index`` (the official code's
    ``|a|^2 - 2ab + |b|^2``, clamped at 0)."""
    anchor = points[index]
    squared = squared_norms - 2.0 * (points @ anchor) + squared_norms[index]
    return squared.clamp_(min=0).sqrt_()


@torch.no_grad()
def greedy_coreset(features: torch.Tensor, n_select: int, seed: int = 0,
                   projection_dim: int = PROJECTION_DIM, n_starts: int = N_STARTS) -> torch.Tensor:
    """Indices (int64, in pick order) of the greedy k-center coreset of ``features`` (N, D).

    ``n_select`` features are picked (``n_select >= N``: all of them, in their order); ``seed`` fixes
    the random projection and the start features. See the module docstring for the official procedure
    this follows.
    """
    n, dim = features.shape
    if n_select <= 0 or n == 0:
        return torch.zeros(0, dtype=torch.int64)
    if n_select >= n:
        return torch.arange(n, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    points = features.float()
    if dim > projection_dim:
        points = points @ random_projection(dim, projection_dim, generator, features.device)
    squared_norms = (points * points).sum(dim=1)

    rng = np.random.default_rng(seed)
    starts = rng.choice(n, size=min(n_starts, n), replace=False)
    running = torch.zeros(n, dtype=points.dtype, device=points.device)
    for start in starts:
        running += _distances_to(points, squared_norms, int(start))
    running /= len(starts)

    picked = torch.empty(n_select, dtype=torch.int64)
    for step in range(n_select):
        index = int(torch.argmax(running))
        picked[step] = index
        torch.minimum(running, _distances_to(points, squared_norms, index), out=running)
        running[index] = -math.inf
    return picked


__all__ = ["N_STARTS", "PROJECTION_DIM", "coreset_size", "greedy_coreset", "random_projection"]
