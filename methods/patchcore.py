"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022,
arXiv 2106.08265): a memory bank of locally aggregated mid-level patch features of normal images,
reduced by a greedy coreset; a test image scores the largest distance of any of its patches to its
nearest neighbour in the bank. No training: the backbone is a frozen ImageNet network.

Unsupervised (one-class): the labelled anomalies of a cell's training set are ignored, only its
normal images fill the memory bank. Not in the DevNet paper; the benchmark's unsupervised reference.

Sources: the paper (sec. 3, Algorithm 1, Eq. 6-7, sec. 4.1) and the official code
(github.com/amazon-science/patchcore-inspection, Apache-2.0: ``patchcore.py``, ``common.py``,
``sampler.py``, ``bin/run_patchcore.py``, the README's and ``sample_training.sh``'s commands), read
for facts; anomalib's ``PatchcoreModel`` for its reading of Eq. 7. Our own code throughout.

Faithful to the official code's published WideResNet-50 run (README / ``sample_training.sh``:
``-b wideresnet50 -le layer2 -le layer3 --pretrain_embed_dimension 1024 --target_embed_dimension 1024
--anomaly_scorer_num_nn 1 --patchsize 3 sampler -p 0.1 approx_greedy_coreset``, "PatchCore-10%", a
column of the paper's Table 1):

* Backbone: torchvision ``wide_resnet50_2`` (ImageNet ``IMAGENET1K_V1``, the official
  ``pretrained=True``), eval mode, frozen, run only up to the deepest layer used; inputs normalised
  with ImageNet mean/std. Features: the outputs of ``layer2`` and ``layer3`` (``layers = (2, 3)``).
* Local aggregation (``patch_size`` p = 3, stride 1): each layer's map is unfolded into p x p
  neighbourhoods (zero padding (p - 1) / 2, so the grid keeps its size), each neighbourhood's
  C x p x p values, flattened channel-major, are average-pooled to ``pretrain_embed_dim`` (1024)
  values by ``adaptive_avg_pool1d`` (the official ``MeanMapper``); the deeper layer is bilinearly
  resized (``align_corners=False``) to the first layer's grid; per patch, the layers' vectors are
  concatenated (first layer first) and ``adaptive_avg_pool1d``-ed to ``target_embed_dim`` (1024)
  values (the official ``Aggregator``). The official code resizes the unfolded C x p x p planes and
  then pools; we pool and then resize, which is the same linear map (resizing acts on each plane
  with the same weights, pooling mixes planes at each location) with 9 x fewer planes to resize
  (WideResNet-50's layer 3) - ``tests/test_patchcore.py`` checks the equality. What this is for
  WideResNet-50 at 1024/1024: the first 512 dimensions are layer 2's channels, each a 3 x 3 average
  with the centre counted twice (weights 1/10, centre 2/10: adaptive pooling of 4608 values into 1024
  bins of 5 overlapping ones, then pairs), the last 512 are averages of two adjacent layer-3
  channels' plain 3 x 3 means (9216 -> 1024 bins of 9, then pairs); zero padding counts in the border
  averages.
* Memory bank: every patch of every normal training image, then the greedy k-center coreset of
  :mod:`fsad_methods.coreset` (random projection to 128 dimensions, 10 random start features,
  ``floor(n * coreset_fraction)`` features; ``coreset_fraction = 0.1``).
* Patch score: the distance of each test patch to its nearest memory-bank feature. The official
  code searches with faiss ``IndexFlatL2``, which returns *squared* Euclidean distances, so its
  image scores and maps are squared distances (``squared_distance = True``, our default);
  ``squared_distance = False`` gives the paper's Euclidean distance (Eq. 6). Image scores rank
  identically either way (squaring is monotone), the maps differ after resizing and blurring.
* Image score: the maximum patch score (Eq. 6's s*; the official ``PatchMaker.score``).
* Re-weighting (Eq. 7): NOT in the official code - its ``NearestNeighbourScorer`` averages the
  distances to the ``anomaly_scorer_num_nn`` nearest features (1 in every published detection run:
  the plain nearest distance) and never re-weights. The paper writes
  ``s = (1 - exp||m_test* - m*|| / sum_{m in N_b(m*)} exp||m_test* - m||) * s*``; we found no value
  of b in it. ``reweight_neighbours = b`` (default 1 = off, the official code); b >= 2 applies Eq. 7
  with N_b(m*) = the b memory-bank features nearest to m* (m* itself included, so the numerator's
  term is one of the denominator's and the weight lies in [1 - 1/b, 1)) - anomalib's reading
  (its default b = 9), the distances inside the exponentials Euclidean as in the paper; the weight
  multiplies the image score in the unit ``squared_distance`` chooses (Euclidean for the paper's
  exact Eq. 7). The weight is ~1 when m*'s neighbours are far from the test patch (m* is a rare
  normal feature) and 1 - 1/b when they are as near as m* (a dense normal region).
* Maps (``explain``): the patch scores on the patch grid, bilinearly resized to the image
  (``align_corners=False``), Gaussian-smoothed with sigma 4 px (``map_sigma``; scipy's
  ``gaussian_filter`` with its defaults, as the official ``RescaleSegmentor``), then min-max scaled
  to [0, 1] with the minimum and maximum over *all* maps of the call: the official evaluation scales
  its segmentations with the min and max over the whole test set, and one call of ``explain`` is the
  cell's whole test set (``fsad_bench.runner.job``). Maps of one call are therefore comparable with
  each other (a pooled pixel AUC means something) but not across calls; a call whose maps are all
  equal gives zeros.

Deviations (decisions, with why):

* Image size: the official code resizes to 256 px and centre-crops 224 px. The benchmark's images
  arrive square and already resized to the cell's size, and a crop would drop the border, where a
  benchmark anomaly may lie (its label would then be wrong for the cropped image). The ``paper``
  budget uses 256 px, the uncropped frame: features and the 4 px blur see objects at the paper's
  pixel scale; the patch grid is 32 x 32 instead of 28 x 28 (31 % more patches, and a 31 % larger
  memory bank at the same fraction). ``--set patchcore.img_size=224`` gives the paper's grid instead.
* Coreset: seeded, at least one feature, no projection to more dimensions than the features have
  (:mod:`fsad_methods.coreset`).
* Nearest neighbours: exact search with ``torch.cdist`` in chunks of the queries (memory stays below
  ~64 MiB of distances whatever the bank's size), then the distance to the chosen neighbour is
  recomputed from the difference vector, so a reported distance carries no cancellation error of the
  matrix-product form; faiss ``IndexFlatL2`` is also exact search.
* Re-weighting: implemented from the paper (above), off by default as in the official code.
* The official CLI's ``--anomaly_scorer_num_nn k > 1`` (the mean of the k nearest distances; only its
  segmentation sample runs use it) is not implemented.
* Backbones other than WideResNet-50 (``backbone``): torchvision's ResNet-18/50 and our narrow
  ResNet-18s, for the CPU budgets only.

Memory: the whole bank before the coreset is held at once, as the official code does
(patches x ``target_embed_dim`` x 4 bytes: 200 images at 256 px -> 200 x 1024 x 1024 x 4 B = 0.8 GiB),
plus its 128-dimensional projection; images go through the backbone ``batch_size`` at a time.

CPU budgets - ``weights = "none"``: a randomly initialised backbone. Its features are a pipeline
check, NOT PatchCore's performance: PatchCore has nothing to learn, so without ImageNet features it is
a nearest-neighbour detector on random convolutional features.

* ``quick``: 64 px, ``resnet18_w16`` (ResNet-18's topology at 1/4 width, the trunk of DevNet's, FLOS's,
  MINNS's and Deep SAD's quick budgets), random init, ``pretrain_embed_dim = target_embed_dim = 64``
  (the official structure at 1/16 of WideResNet-50's channels: layer 2's 32 channels pooled to 64 =
  2 x 32, layer 3's 64 to 64, then 128 -> 64, so the closed form above holds channel for channel),
  coreset 10 %. On the embedded ``synthetic`` data (q1, 3 categories x seeds 0, 1, 2; 200 training
  normals -> 12,800 patches -> 1,280 in the bank): AUC 0.646 +- 0.007 (population std over seeds of
  the per-seed mean), 0.86 s of CPU per cell on one thread. Why not WideResNet-50 at 64 px: with
  random weights it scored no better (0.628 +- 0.019) at 15 x the cost (12.7 s per cell, 2 s of it
  initialising 69M parameters); full-width ResNet-18 (256/256 dimensions) gave 0.680 +- 0.017 at
  3.0 s. Random features are a pipeline check whichever trunk, so the cheapest one, shared with the
  other methods' quick budgets, was chosen. With ImageNet weights at this budget
  (``--weights imagenet --set patchcore.backbone=resnet18``) also set the dimensions, e.g.
  ``--set patchcore.pretrain_embed_dim=256 --set patchcore.target_embed_dim=256`` (2 x layer 2's
  channels) or the official 1024.
* ``smoke``: the same at 32 px (a 4 x 4 patch grid): 0.29 s per cell (AUC 0.609 +- 0.021, meaningless).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.ndimage import gaussian_filter
from torch import nn

from fsad_bench.detectors.base import Detector, TrainSet
from fsad_bench.detectors.hparams import Fraction, NonNegFloat, PositiveInt
from fsad_bench.errors import UserError
from fsad_bench.weights import imagenet_state_dict
from fsad_methods.backbones import NARROW, Weights, check_weights_choice, narrow_resnet18, torchvision_model
from fsad_methods.coreset import N_STARTS, PROJECTION_DIM, coreset_size, greedy_coreset
from fsad_methods.training import normalise, seed_everything, to_uint8_tensor

#: the ``backbone`` field: ResNets with ``layer1`` .. ``layer4`` (torchvision's, and our narrow ResNet-18s)
PatchCoreBackbone = Literal["wide_resnet50_2", "resnet50", "resnet18", "resnet18_w16", "resnet18_w32"]
BACKBONES: tuple[str, ...] = ("wide_resnet50_2", "resnet50", "resnet18", "resnet18_w16", "resnet18_w32")
#: total stride of the output of ResNet ``layer<j>`` (stem: /4, then layers 2-4 halve the grid)
LAYER_STRIDE = {1: 4, 2: 8, 3: 16, 4: 32}
#: a ResNet layer index, 1..4
LayerIndex = Annotated[int, Field(ge=1, le=4)]
#: query rows x bank rows of one ``torch.cdist`` block (float32: 64 MiB)
NN_CHUNK_ELEMENTS = 2**24


class ResNetPatchFeatures(nn.Module):
    """A ResNet trunk run up to its deepest used layer; ``forward`` returns the maps of ``layers``.

    The official code hooks the last block of each layer and stops the forward pass after the
    deepest one; here the unused stages are simply not kept.
    """

    def __init__(self, backbone: str, weights: str, layers: tuple[int, ...]) -> None:
        super().__init__()
        check_weights_choice(weights)
        if backbone in NARROW:
            if weights != "none":
                imagenet_state_dict(backbone)  # raises the UserError that says what to do
            net = narrow_resnet18(NARROW[backbone])
            stem, stages = net[:4], list(net[4:8])
        elif backbone in BACKBONES:
            net = torchvision_model(backbone, weights)
            stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        else:
            raise UserError(f"unknown patchcore backbone {backbone!r}; use one of {', '.join(BACKBONES)}")
        self.layers = tuple(layers)
        self.stem = stem
        self.stages = nn.ModuleList(stages[:max(layers)])
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        maps = []
        for index, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if index in self.layers:
                maps.append(x)
        return maps


def pool_neighbourhoods(feature_map: torch.Tensor, patch_size: int, out_dim: int) -> torch.Tensor:
    """(B, out_dim, H, W): every location's p x p neighbourhood (zero-padded, stride 1), its
    C x p x p values flattened channel-major, ``adaptive_avg_pool1d``-ed to ``out_dim`` values (the
    official ``PatchMaker.patchify`` + ``MeanMapper``)."""
    b, c, h, w = feature_map.shape
    unfolded = F.unfold(feature_map, kernel_size=patch_size, padding=(patch_size - 1) // 2, stride=1)
    per_patch = unfolded.transpose(1, 2).reshape(b * h * w, 1, c * patch_size * patch_size)
    pooled = F.adaptive_avg_pool1d(per_patch, out_dim)
    return pooled.reshape(b, h, w, out_dim).permute(0, 3, 1, 2)


def aggregate_patch_features(maps: list[torch.Tensor], patch_size: int, pretrain_dim: int,
                             target_dim: int) -> torch.Tensor:
    """(B, H, W, target_dim) patch features on the first map's grid (module docstring, "Local
    aggregation"): per layer :func:`pool_neighbourhoods`, deeper layers bilinearly resized to the
    first one's grid, then per patch the layers' vectors concatenated and pooled to ``target_dim``."""
    grid = maps[0].shape[-2:]
    per_layer = []
    for index, feature_map in enumerate(maps):
        pooled = pool_neighbourhoods(feature_map, patch_size, pretrain_dim)
        if index > 0 and pooled.shape[-2:] != grid:
            pooled = F.interpolate(pooled, size=grid, mode="bilinear", align_corners=False)
        per_layer.append(pooled)
    stacked = torch.stack(per_layer, dim=-1)  # (B, D_pre, H, W, n_layers)
    b, _, h, w, _ = stacked.shape
    per_patch = stacked.permute(0, 2, 3, 4, 1).reshape(b * h * w, 1, len(maps) * pretrain_dim)
    return F.adaptive_avg_pool1d(per_patch, target_dim).reshape(b, h, w, target_dim)


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor,
                       chunk_elements: int = NN_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared Euclidean distance, index) of each query row's nearest row of ``bank``.

    The search runs ``torch.cdist`` over blocks of queries (at most ``chunk_elements`` distances at a
    time); the distance to the chosen neighbour is then recomputed from the difference vector.
    """
    n = queries.shape[0]
    index = torch.empty(n, dtype=torch.int64, device=queries.device)
    rows = max(1, chunk_elements // max(bank.shape[0], 1))
    for start in range(0, n, rows):
        index[start:start + rows] = torch.cdist(queries[start:start + rows], bank).argmin(dim=1)
    squared = (queries - bank[index]).pow(2).sum(dim=1)
    return squared, index


def reweighting_factors(test_features: torch.Tensor, nn_index: torch.Tensor, bank: torch.Tensor,
                        n_neighbours: int) -> torch.Tensor:
    """Eq. 7's weight ``1 - exp||m_test* - m*|| / sum_{m in N_b(m*)} exp||m_test* - m||`` per row.

    ``test_features`` (B, D): each image's most anomalous patch m_test*; ``nn_index`` (B,): the bank
    row of its nearest neighbour m*; N_b(m*): m* and the ``n_neighbours - 1`` bank rows nearest to it
    (Euclidean distances throughout). b is capped at the bank's size; b = 1 gives weight 1 (no
    re-weighting: Eq. 7 with N_1 = {m*} would be 0 for every image).
    """
    b = min(n_neighbours, bank.shape[0])
    if b <= 1:
        return torch.ones(test_features.shape[0], dtype=test_features.dtype, device=test_features.device)
    anchors = bank[nn_index]
    to_anchor = torch.cdist(anchors, bank)
    to_anchor[torch.arange(len(nn_index), device=bank.device), nn_index] = -1.0  # m* itself comes first
    neighbours = torch.topk(to_anchor, b, dim=1, largest=False).indices  # (B, b), column 0 = m*
    distances = (bank[neighbours] - test_features[:, None, :]).pow(2).sum(dim=-1).sqrt()
    return 1.0 - torch.softmax(distances, dim=1)[:, 0]


def smooth_maps(patch_scores: torch.Tensor, size: tuple[int, int], sigma: float) -> np.ndarray:
    """(N, H, W) float32: patch-score grids (N, h, w) bilinearly resized to ``size``
    (``align_corners=False``) and Gaussian-smoothed (scipy defaults; skipped for ``sigma <= 0``)."""
    resized = F.interpolate(patch_scores[:, None].float(), size=size, mode="bilinear", align_corners=False)
    maps = resized[:, 0].cpu().numpy()
    if sigma > 0:
        maps = np.stack([gaussian_filter(m, sigma=sigma) for m in maps]) if len(maps) else maps
    return maps.astype(np.float32, copy=False)


def scale_jointly(maps: np.ndarray) -> np.ndarray:
    """``maps`` min-max scaled to [0, 1] with one minimum and maximum over all of them (the official
    evaluation's scaling over the test set); all-equal maps give zeros."""
    if maps.size == 0:
        return maps.astype(np.float32)
    lo, hi = float(maps.min()), float(maps.max())
    if not hi > lo:
        return np.zeros_like(maps, dtype=np.float32)
    return np.clip((maps - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


@dataclass
class PatchCoreConfig:
    """PatchCore hyper-parameters; defaults are the official WideResNet-50 PatchCore-10% run."""

    backbone: PatchCoreBackbone = "wide_resnet50_2"
    weights: Weights = "imagenet"
    #: ResNet layers whose outputs are the features; the first one's grid is the patch grid
    layers: tuple[LayerIndex, ...] = (2, 3)
    #: neighbourhood side p of the local aggregation (odd: the official padding (p - 1) / 2 keeps the grid)
    patch_size: PositiveInt = 3
    #: per-layer dimension after the neighbourhood pooling (official ``pretrain_embed_dimension``)
    pretrain_embed_dim: PositiveInt = 1024
    #: patch-feature dimension after pooling the layers together (official ``target_embed_dimension``)
    target_embed_dim: PositiveInt = 1024
    #: share of the training patches kept in the memory bank (greedy coreset); 1 = all of them
    coreset_fraction: Fraction = 0.1
    #: dimension of the coreset's random projection (official 128)
    coreset_projection_dim: PositiveInt = PROJECTION_DIM
    #: random start features of the approximate greedy coreset (official 10)
    coreset_starts: PositiveInt = N_STARTS
    #: b of the paper's Eq. 7 re-weighting; 1 = no re-weighting (the official code)
    reweight_neighbours: PositiveInt = 1
    #: patch scores as squared Euclidean distances (the official faiss IndexFlatL2) or Euclidean (paper)
    squared_distance: bool = True
    #: Gaussian blur of the anomaly maps in pixels (official 4)
    map_sigma: NonNegFloat = 4.0
    #: images per backbone forward pass (memory only: results do not depend on it)
    batch_size: PositiveInt = 16


class PatchCore(Detector):
    """PatchCore: nearest-neighbour distance to a coreset of normal patch features (one-class)."""

    name = "patchcore"
    display_name = "PatchCore"
    paper_column = None
    uses_labelled_anomalies = False
    weights_notes = {"none": "its features come from a randomly initialised backbone: a pipeline check, "
                             "not PatchCore's performance (which rests on ImageNet features)"}
    budgets = {
        # the official WideResNet-50 run (PatchCore-10%); 256 px = the official resize, without its
        # 224 px centre crop (module docstring)
        "paper": {"img_size": 256, "weights": "imagenet", "backbone": "wide_resnet50_2", "layers": (2, 3),
                  "patch_size": 3, "pretrain_embed_dim": 1024, "target_embed_dim": 1024,
                  "coreset_fraction": 0.1, "reweight_neighbours": 1, "squared_distance": True,
                  "map_sigma": 4.0},
        "quick": {"img_size": 64, "weights": "none", "backbone": "resnet18_w16", "pretrain_embed_dim": 64,
                  "target_embed_dim": 64, "coreset_fraction": 0.1},
        "smoke": {"img_size": 32, "weights": "none", "backbone": "resnet18_w16", "pretrain_embed_dim": 64,
                  "target_embed_dim": 64, "coreset_fraction": 0.1},
    }
    seconds_per_cell = {"smoke": 0.29, "quick": 0.86}
    Config = PatchCoreConfig

    @classmethod
    def min_img_size(cls, config: PatchCoreConfig) -> int:
        """The total stride of the deepest layer used (16 px for layer 3): below it that layer's single
        feature-map cell is computed mostly from zero padding (the rule of
        :data:`fsad_methods.backbones.RESNET_STRIDE`, at the depth PatchCore stops)."""
        return LAYER_STRIDE[max(config.layers)] if config.layers else 1

    def _check_config(self) -> None:
        c = self.config
        check_weights_choice(c.weights)
        if c.backbone not in BACKBONES:
            raise UserError(f"unknown patchcore backbone {c.backbone!r}; use one of {', '.join(BACKBONES)}")
        if not c.layers or any(layer not in LAYER_STRIDE for layer in c.layers):
            raise UserError(f"patchcore layers must be ResNet layers 1-4, got {c.layers!r}")
        if list(c.layers) != sorted(set(c.layers)):
            raise UserError(f"patchcore layers must be increasing without repeats, got {c.layers!r}")
        if c.patch_size % 2 != 1:
            raise UserError(f"patchcore patch_size must be odd (the neighbourhood is centred), "
                            f"got {c.patch_size}")

    @torch.no_grad()
    def _embed(self, images: np.ndarray) -> torch.Tensor:
        """(B, h, w, D) patch features of uint8 (B, H, W, 3) images."""
        c = self.config
        x = normalise(to_uint8_tensor(images, self.device))
        return aggregate_patch_features(self.extractor(x), c.patch_size, c.pretrain_embed_dim,
                                        c.target_embed_dim)

    def fit(self, train: TrainSet) -> PatchCore:
        c = self.config
        self._check_config()
        need = self.min_img_size(c)
        h, w = train.images.shape[1:3]
        if min(h, w) < need:
            raise UserError(f"patchcore with layers {c.layers} needs images of at least {need} px, "
                            f"got {h}x{w}")
        normal = np.flatnonzero(train.labels == 0)
        if len(normal) == 0:
            raise UserError("patchcore builds its memory bank from normal images, but the training set "
                            "has none")
        seed_everything(train.seed)
        self.device = train.device
        self.extractor = ResNetPatchFeatures(c.backbone, c.weights, c.layers).to(train.device)

        bank: torch.Tensor | None = None
        filled = 0
        for start in range(0, len(normal), c.batch_size):
            batch = self._embed(train.images[normal[start:start + c.batch_size]])
            patches = batch.reshape(-1, batch.shape[-1])
            if bank is None:  # allocated once: the whole bank is (images x patches, D)
                self.grid = tuple(batch.shape[1:3])
                bank = torch.empty(len(normal) * patches.shape[0] // len(batch), patches.shape[1],
                                   dtype=patches.dtype, device=patches.device)
            bank[filled:filled + len(patches)] = patches
            filled += len(patches)
        assert bank is not None and filled == len(bank)

        n_keep = coreset_size(len(bank), c.coreset_fraction)
        keep = greedy_coreset(bank, n_keep, seed=train.seed, projection_dim=c.coreset_projection_dim,
                              n_starts=c.coreset_starts)
        self.memory_bank = bank[keep.to(bank.device)].contiguous()
        self.info = {"weights": c.weights, "features": "imagenet" if c.weights == "imagenet" else "random",
                     "backbone": c.backbone, "layers": list(c.layers), "n_train_normals": int(len(normal)),
                     "ignored_labelled_anomalies": int(train.n_anomaly), "patch_grid": list(self.grid),
                     "patches": int(len(bank)), "memory_bank_size": int(len(self.memory_bank)),
                     "feature_dim": int(self.memory_bank.shape[1])}
        return self

    @torch.no_grad()
    def _patch_scores(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores (N,), patch scores (N, h, w)) for uint8 (N, H, W, 3) images, batch by batch."""
        c = self.config
        image_scores, patch_grids = [], []
        for start in range(0, len(images), c.batch_size):
            features = self._embed(images[start:start + c.batch_size])
            b, h, w, d = features.shape
            flat = features.reshape(b * h * w, d)
            squared, index = nearest_neighbours(flat, self.memory_bank)
            patch = (squared if c.squared_distance else squared.sqrt()).reshape(b, h * w)
            top, where = patch.max(dim=1)
            if c.reweight_neighbours > 1:
                rows = torch.arange(b, device=flat.device) * (h * w) + where
                top = top * reweighting_factors(flat[rows], index[rows], self.memory_bank,
                                                c.reweight_neighbours)
            image_scores.append(top.float().cpu())
            patch_grids.append(patch.reshape(b, h, w).float().cpu())
        if not image_scores:
            return torch.zeros(0), torch.zeros(0, *getattr(self, "grid", (0, 0)))
        return torch.cat(image_scores), torch.cat(patch_grids)

    def score(self, images: np.ndarray) -> np.ndarray:
        return self._patch_scores(images)[0].numpy()

    def explain(self, images: np.ndarray) -> np.ndarray:
        """Anomaly maps in [0, 1]: patch scores resized to the image, blurred (sigma ``map_sigma``) and
        min-max scaled over all maps of this call (module docstring, "Maps")."""
        images = np.asarray(images)
        n, h, w = images.shape[:3]
        if n == 0:
            return np.zeros((0, h, w), dtype=np.float32)
        _, patch_scores = self._patch_scores(images)
        return scale_jointly(smooth_maps(patch_scores, (h, w), self.config.map_sigma))


__all__ = ["PatchCore", "PatchCoreConfig", "ResNetPatchFeatures", "aggregate_patch_features",
           "nearest_neighbours", "pool_neighbourhoods", "reweighting_factors", "scale_jointly",
           "smooth_maps"]
