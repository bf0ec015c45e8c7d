"""DRA (Ding, Pang, Shen, "Catching Both Gray and Black Swans: Open-set Supervised Anomaly Detection",
CVPR 2022, arXiv 2203.14506): disentangled representations of seen, pseudo and latent residual
abnormality, plus normality, on one ResNet-18 trunk.

Sources, in this order of authority for what produced the published numbers: the authors' code
(GitHub ``Choubo/DRA``: ``modeling/net.py``, ``train.py``, ``datasets/mvtecad.py``,
``datasets/cutmix.py``, ``dataloaders/utlis.py``, ``modeling/layers/deviation_loss.py``; read for
facts, not copied), then the paper (main text sec. 3, appendix B.1).

Network (:class:`DRANetwork`): the ResNet trunk (conv1 .. layer4) of :mod:`fsad_methods.backbones`
and four heads on its last feature map:

1. holistic (normality) head: global average pool -> Linear(C, 256) -> ReLU -> Linear(256, 1) -> |.|;
2. seen-anomaly head: 1x1 conv to one channel -> top-K MIL (mean of the K largest |cell scores|,
   K = 10 % of the cells, :func:`fsad_methods.mil.topk_mil`, as DevNet);
3. pseudo-anomaly head: the same shape as 2, its own weights;
4. latent-residual (composite) head: the mean feature map of the reference images minus the
   image's feature map -> 3x3 conv (C -> C) + BatchNorm + ReLU -> the same scoring as 2.

Every head is run on the image and on the image resized (nearest) to half its side, with the same
trunk and heads; each head's score is the mean of its two scale scores (the authors' two-level image
pyramid, ``n_scales = 2``).

Training (:meth:`DRA.fit`): batches of ``batch_size`` = 2/3 training normals + 1/3 labelled anomalies
(48 = 32 + 16; all normals when there are no labelled anomalies), each class an endless stream of
seeded permutations, as the authors' balanced sampler. Each normal slot of a batch is, with
probability ``pseudo_anomaly_rate`` = 1/2, replaced by a pseudo-anomaly (label 2) made from a training
normal chosen at random: CutMix (:mod:`fsad_methods.pseudo_anomalies`: a patch of 2-15 % of the
area, aspect ratio log-uniform in [0.3, 1/0.3], colour-jittered, pasted at a random place of the same
image), or an external image when ``pseudo_anomaly_dir`` is set. A separate stream of
``reference_size`` = 5 training normals per step is put in front of the batch (so the trunk's
BatchNorm statistics of the step include them); as in the authors' code each reference image is also
replaced by a pseudo-anomaly with the same probability (the paper, appendix B.1: "we use the dataset
mixed with normal and pseudo-abnormal samples as the reference set"; ``--set
dra.reference_pseudo_anomalies=false`` for normals only). Every image is rotated by U(-180, 180)
degrees and ImageNet-normalised (:func:`fsad_methods.training.augment_and_normalise`). The loss is the
sum of the four heads' deviation losses, each with its own targets (:mod:`fsad_methods.dra_loss`:
holistic 1 for normals; seen: label != 2, 1 for labelled anomalies; pseudo: label != 1, 1 for
pseudo-anomalies; composite: 1 for everything not normal). Adam (lr 2e-4, weight decay 1e-5),
gradient-norm clipping at 1.0, 30 epochs x 20 steps, StepLR (x0.1 every 10 epochs) stepped at the
*start* of each epoch as the authors' ``train.py`` does, which under the PyTorch they pin (1.1.0,
whose release notes warn about exactly this order) skips the schedule's first value: the first
decay comes after 9 epochs, not 10 (``scheduler_step_first``; false = DevNet's order).

Score (:func:`fsad_methods.dra_loss.anomaly_score`): ``-holistic + seen + pseudo + composite``, each
averaged over the two scales, unnormalised (the authors' ``normalization`` returns its input). The
composite head compares every test image with one fixed reference, chosen at the end of ``fit``
(``test_reference``, below).

Localisation (``explain``): DRA's code has none. We use DevNet's (the same authors'): the gradient of
the image's anomaly score (the combined score above, against the fixed test reference) w.r.t. the
normalised input, in eval mode, |grad| summed over channels, scaled per map by (x - min) / (p99 -
min), clipped to [0, 1], Gaussian blur ``saliency_sigma`` = 4 px (:mod:`fsad_methods.saliency`).

Deviations from the authors' code, and why:

* Test-time reference (``test_reference``). The authors' evaluation takes a fresh reference batch
  from the training reference stream for every test batch of 48 images (so a test image's score
  depends on which batch it falls in, and on the order of the test set). A benchmark score must
  depend on the image only, so ours is drawn once, at the end of ``fit``: ``"authors"`` (default)
  = the next draw of the training reference stream exactly as a training step draws it
  (``reference_size`` training normals from the seeded stream, each a pseudo-anomaly with
  probability ``pseudo_anomaly_rate`` when ``reference_pseudo_anomalies``, rotated), i.e. one sample
  of the reference the authors' evaluation uses; ``"normals"`` = ``reference_size`` distinct
  training normals drawn uniformly without replacement (seeded), unrotated and unaltered: the
  paper's text ("a small set of images randomly drawn from the normal data", "fixed for all
  training and testing samples"). Their features are computed once in eval mode. ``info`` records
  the training indices of the images used and which of them were pseudo-anomalies.
* Learning rate and weight decay: the code's Adam lr 2e-4, weight decay 1e-5 (they made the numbers).
  The paper's text (appendix B.1) says lr 1e-3 and weight decay 1e-2: ``--set dra.lr=1e-3 --set
  dra.weight_decay=1e-2``.
* Pseudo-anomaly images from a folder (``pseudo_anomaly_dir``): the paper uses images of the LAG
  dataset for the medical datasets (BrainMRI, HeadCT, Hyper-Kvasir) instead of CutMix; LAG is not
  shipped, so every dataset gets CutMix by default. With the folder set, a pseudo-anomaly is an
  external image chosen uniformly at random from the folder's sorted image list (recursive), resized
  to the training image size, and used without CutMix (the authors' ``--outlier_root`` path). The
  authors' loader reads ``<outlier_root>/<class>/train/good/*`` and skips the current class; ours
  takes every image in the folder. A missing or empty folder is a one-line error before the grid runs.
* CutMix details (:mod:`fsad_methods.pseudo_anomalies`): patches whose rounded sides leave the area
  or aspect bounds are redrawn; colour jitter on tensors (rounding may differ from PIL's).
* Seeding and data pipeline (as our DevNet): every random choice (model init, batch and reference
  streams, pseudo-anomaly coins and CutMix draws, rotations, deviation-loss reference draws) comes
  from generators seeded by ``TrainSet.seed``; images are decoded once and augmented on the device
  (batched rotation), not decoded by PIL at every step.
* A head with no sample in a batch adds 0 to the loss (only possible with tiny batches; the authors'
  mean over no samples is NaN).
* ``bn_recalibration`` (DevNet's option; off by default, in the paper and in the quick budget, on only
  in the 2-step smoke budget, whose running statistics are still the initial ones): after training,
  the trunk's BatchNorm statistics are set to the training images' (both scales, train mode,
  cumulative average), then the test reference's features are computed, then the composite head's
  BatchNorm statistics are set to those of the training images' residuals against that reference
  (trunk in eval mode). Unlike DevNet, DRA's quick budget does better without it (measured on ELPV
  and ``synthetic``, docs/fidelity.md): the training images are 98 % normals, while every training
  batch held 1/3 labelled anomalies, about 1/3 pseudo-anomalies and the reference, so the
  recalibrated statistics are those of another mix than the heads were trained under, and the
  composite head, which scores residual magnitudes after its BatchNorm, lost its ranking (its own
  AUC on ELPV fell from 0.71 to 0.50). After 100 steps with the learning rate decayed for the last
  3 epochs, the running averages of training have caught up with the weights.

Budgets: ``paper`` = the authors' code (448 px, ImageNet ResNet-18, 30 x 20 steps of 48, Adam 2e-4 /
1e-5). ``quick`` and ``smoke`` are CPU checks (ResNet-18 topology at 1/4 width from random init,
64 px; quick: DevNet's quick schedule, 100 steps of 16 images at lr 1e-3, 2/3 normals per batch;
smoke: 2 steps of 8) and are not comparable with the paper.

Measured at the quick budget (q1, 10 labelled anomalies, seeds 0, 1, 2, ``run_cell`` on one torch
thread; ``benchmarks/trained_vs_untrained.py``; mean over seeds +- population std over seeds):

* ``synthetic`` (9 cells): AUC trained 0.550 +- 0.014, untrained (every optimiser step disabled)
  0.488 +- 0.010, difference +0.062 +- 0.004, trained above untrained in 7 of 9 cells;
* ELPV (3 cells): trained 0.715 +- 0.021, untrained 0.465 +- 0.085, difference +0.250 +- 0.095;
* CPU seconds per cell on ``synthetic``: 13.6 (quick) and 1.15 (smoke) on 2 cores under load, where
  DevNet took 8.7 and 0.78; ``seconds_per_cell`` scales DevNet's declared figures by these ratios.

The candidates (with and without ``bn_recalibration``) and the caveats: docs/fidelity.md, "DRA".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.detectors.hparams import NonNegFloat, PositiveFloat, PositiveInt
from fsad_bench.errors import UserError
from fsad_methods.backbones import (
    CHANNELS,
    Backbone,
    Weights,
    check_trunk_input,
    feature_extractor,
    min_input_size,
    train_flops_per_image,
)
from fsad_methods.dra_loss import HEADS, HeadScores, anomaly_score, head_losses, summed
from fsad_methods.mil import topk_mil
from fsad_methods.pseudo_anomalies import PseudoAnomalies, external_image_files
from fsad_methods.saliency import DEFAULT_BATCH_SIZE, DEFAULT_SIGMA, explain_images, frozen
from fsad_methods.training import (
    Schedule,
    augment_and_normalise,
    divergence_flags,
    normalise,
    optimiser_step,
    predict,
    recalibrate_batchnorm,
    seed_everything,
    to_uint8_tensor,
)

#: width of the holistic head's hidden layer (the authors' Linear(512, 256))
HOLISTIC_HIDDEN = 256


class HolisticHead(nn.Module):
    """Normality score (B,): global average pool -> Linear -> ReLU -> Linear(., 1) -> |.|."""

    def __init__(self, channels: int, hidden: int = HOLISTIC_HIDDEN) -> None:
        super().__init__()
        self.hidden = nn.Linear(channels, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(fmap.mean(dim=(2, 3))))).abs().flatten()


class TopKHead(nn.Module):
    """Abnormality score (B,): a 1x1 conv scores every feature-map cell, top-K MIL pools them."""

    def __init__(self, channels: int, topk_ratio: float) -> None:
        super().__init__()
        self.cell_score = nn.Conv2d(channels, 1, kernel_size=1)
        self.topk_ratio = topk_ratio

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return topk_mil(self.cell_score(fmap).flatten(1), self.topk_ratio)


class ResidualHead(TopKHead):
    """Latent-residual score (B,): (reference mean feature map - image's) -> 3x3 conv + BN + ReLU ->
    :class:`TopKHead`'s scoring."""

    def __init__(self, channels: int, topk_ratio: float) -> None:
        super().__init__(channels, topk_ratio)
        self.residual = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, padding=1),
                                      nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, fmap: torch.Tensor, reference_mean: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(self.residual(reference_mean - fmap))


def mean_over_scales(per_scale: list[HeadScores]) -> HeadScores:
    """Each head's score averaged over the scales."""
    return HeadScores(*(torch.stack(scores).mean(0) for scores in zip(*per_scale)))


class DRANetwork(nn.Module):
    """Trunk + the four heads at ``n_scales`` scales (module doc).

    ``training_scores(x, n)`` is the training forward: the first ``n`` images of ``x`` are the
    reference, the rest are scored against their mean feature map. ``forward(x)`` is the anomaly
    score (B,) against the fixed reference set by :meth:`set_reference`.
    """

    def __init__(self, backbone: str = "resnet18", weights: str = "imagenet", topk_ratio: float = 0.1,
                 n_scales: int = 2) -> None:
        super().__init__()
        self.trunk, channels = feature_extractor(backbone, weights)
        self.holistic = HolisticHead(channels)
        self.seen = TopKHead(channels, topk_ratio)
        self.pseudo = TopKHead(channels, topk_ratio)
        self.composite = ResidualHead(channels, topk_ratio)
        self.n_scales = n_scales
        for s in range(n_scales):  # the fixed test reference's mean feature map per scale (set_reference)
            self.register_buffer(f"reference_mean_{s}", None)

    def scaled_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The image and its nearest-neighbour downscales to side // 2**s (the authors'
        ``F.interpolate(image, size=img_size // 2 ** s)``)."""
        h, w = x.shape[2:]
        return [x] + [F.interpolate(x, size=(h // 2 ** s, w // 2 ** s), mode="nearest")
                      for s in range(1, self.n_scales)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's feature map at every scale."""
        return [self.trunk(xs) for xs in self.scaled_inputs(x)]

    def heads(self, fmap: torch.Tensor, reference_mean: torch.Tensor) -> HeadScores:
        """The four heads' scores of one scale's feature maps (B, C, h, w)."""
        return HeadScores(self.holistic(fmap), self.seen(fmap), self.pseudo(fmap),
                          self.composite(fmap, reference_mean))

    def training_scores(self, x: torch.Tensor, n_reference: int) -> HeadScores:
        """Head scores of ``x[n_reference:]`` against the mean features of ``x[:n_reference]``; the trunk
        sees all of ``x`` at once (its BatchNorm statistics include the reference, as the authors')."""
        per_scale = []
        for fmap in self.features(x):
            reference, query = fmap[:n_reference], fmap[n_reference:]
            per_scale.append(self.heads(query, reference.mean(dim=0, keepdim=True)))
        return mean_over_scales(per_scale)

    @property
    def reference_means(self) -> list[torch.Tensor]:
        means = [getattr(self, f"reference_mean_{s}") for s in range(self.n_scales)]
        if any(m is None for m in means):
            raise RuntimeError("DRANetwork has no test reference: call set_reference first")
        return means

    @torch.no_grad()
    def set_reference(self, x_reference: torch.Tensor) -> None:
        """Fix the test reference: the mean feature map of the (normalised) ``x_reference`` images per
        scale, computed in eval mode (BatchNorm running statistics, as every test image's)."""
        was_training = self.training
        self.eval()
        for s, fmap in enumerate(self.features(x_reference)):
            setattr(self, f"reference_mean_{s}", fmap.mean(dim=0, keepdim=True))
        self.train(was_training)

    def head_scores(self, x: torch.Tensor) -> HeadScores:
        """The four heads' scores of ``x`` against the fixed test reference, averaged over scales."""
        return mean_over_scales([self.heads(fmap, ref) for fmap, ref in zip(self.features(x),
                                                                            self.reference_means)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return anomaly_score(self.head_scores(x))


class _TrunkAtScales(nn.Module):
    """The trunk run at every scale (what BatchNorm recalibration of the trunk passes images through)."""

    def __init__(self, network: DRANetwork) -> None:
        super().__init__()
        self.trunk = network.trunk
        self._network = (network,)  # a tuple: not a registered submodule

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.trunk(xs) for xs in self._network[0].scaled_inputs(x)]


class _ResidualsAgainstReference(nn.Module):
    """The composite head on residuals against the fixed test reference, with the trunk in eval mode:
    only the composite head is a registered submodule, so recalibration puts only it in train mode."""

    def __init__(self, network: DRANetwork) -> None:
        super().__init__()
        self.composite = network.composite
        self._network = (network,)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self._network[0]
        return [self.composite(fmap, ref) for fmap, ref in zip(net.features(x), net.reference_means)]


class DRABatches:
    """The index draws of DRA's training steps (seeded numpy streams).

    ``batch()``: indices into the training set, normals first, then labelled anomalies (2/3 and 1/3
    of ``batch_size``; only normals when there are none), and each slot's label: 1 for anomalies, 2
    for a normal slot that becomes a pseudo-anomaly (probability ``pseudo_rate``), else 0.
    ``reference()``: ``reference_size`` normals from a separate stream and, per image, whether it
    becomes a pseudo-anomaly (``reference_pseudo``). Each class is an endless stream of permutations,
    as the authors' balanced sampler; the streams and the coin flips have their own generators.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, reference_size: int, pseudo_rate: float,
                 reference_pseudo: bool, seed: int | np.random.SeedSequence) -> None:
        self.normal = np.flatnonzero(labels == 0)
        self.anomaly = np.flatnonzero(labels == 1)
        seeds = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        normal_rng, anomaly_rng, reference_rng, coin_rng = (np.random.default_rng(s) for s in seeds.spawn(4))
        if len(self.anomaly) > 0:
            self.n_normal = 2 * batch_size // 3  # the authors' 2 * batch_size // 3 (48 -> 32 + 16)
            self.n_anomaly = batch_size - self.n_normal
        else:
            self.n_normal, self.n_anomaly = batch_size, 0
        self.normals = self._stream(self.normal, normal_rng)
        self.anomalies = self._stream(self.anomaly, anomaly_rng)
        self.references = self._stream(self.normal, reference_rng)
        self.reference_size = reference_size
        self.coins = coin_rng
        self.pseudo_rate = pseudo_rate
        self.reference_pseudo = reference_pseudo

    @staticmethod
    def _stream(idx: np.ndarray, rng: np.random.Generator):
        while len(idx):
            yield from rng.permutation(idx)

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        normals = np.array([next(self.normals) for _ in range(self.n_normal)], dtype=np.int64)
        anomalies = np.array([next(self.anomalies) for _ in range(self.n_anomaly)], dtype=np.int64)
        pseudo = self.coins.random(self.n_normal) < self.pseudo_rate
        labels = np.r_[np.where(pseudo, 2, 0), np.ones(self.n_anomaly, np.int64)].astype(np.int64)
        return np.r_[normals, anomalies], labels

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        idx = np.array([next(self.references) for _ in range(self.reference_size)], dtype=np.int64)
        pseudo = self.coins.random(self.reference_size) < self.pseudo_rate
        return idx, pseudo & self.reference_pseudo


def epoch_learning_rate(lr: float, gamma: float, step_epochs: int, epoch: int, step_first: bool) -> float:
    """StepLR's learning rate in epoch ``epoch`` (0-based): ``lr * gamma ** ((epoch + shift) // step_epochs)``
    with shift 1 when the scheduler is stepped at the start of each epoch (the authors' order), else 0."""
    return lr * gamma ** ((epoch + int(step_first)) // step_epochs)


@dataclass
class DRAConfig(Schedule):
    """DRA hyper-parameters; defaults are the authors' code (paper budget). Module doc for each."""

    epochs: PositiveInt = 30
    backbone: Backbone = "resnet18"
    weights: Weights = "imagenet"
    #: K of every top-K head as a fraction of the feature-map cells (at least one cell)
    topk_ratio: Annotated[float, Field(gt=0, le=1)] = 0.1
    n_scales: PositiveInt = 2
    #: N_r: reference images per step (and in the test reference); the authors' nRef
    reference_size: PositiveInt = 5
    #: probability that a normal slot of a batch (and a reference image) becomes a pseudo-anomaly
    pseudo_anomaly_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    #: the authors' reference images are pseudo-anomalies with the same probability (paper appendix B.1)
    reference_pseudo_anomalies: bool = True
    #: a folder of external pseudo-anomaly images used instead of CutMix ("" = CutMix)
    pseudo_anomaly_dir: str = ""
    #: the fixed test reference: "authors" (one training reference draw) or "normals" (module doc)
    test_reference: Literal["authors", "normals"] = "authors"
    #: StepLR stepped at the start of each epoch, as the authors' train.py (first decay one epoch early)
    scheduler_step_first: bool = True
    #: deviation loss (DevNet's): margin a, and N(0, 1) reference draws per head per step
    margin: PositiveFloat = 5.0
    n_ref: Annotated[int, Field(ge=2)] = 5000
    eval_batch_size: PositiveInt = 64
    #: not in the authors' code (off in the paper budget): BatchNorm statistics recomputed after training
    bn_recalibration: bool = False
    #: Gaussian blur of the saliency maps in pixels at the cell's image size (DevNet's 4 at 448 px)
    saliency_sigma: NonNegFloat = DEFAULT_SIGMA
    #: images per backward pass in ``explain`` (memory only; maps do not depend on it)
    saliency_batch_size: PositiveInt = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if self.pseudo_anomaly_dir:  # a missing or empty folder fails here, before any grid runs
            external_image_files(self.pseudo_anomaly_dir)


class DRA(Detector):
    """Disentangled representations of abnormalities (seen, pseudo, latent residual) and normality."""

    name = "dra"
    display_name = "DRA"
    paper_column = "DRA"  # DRA's own Table 1 (results/paper/dra_table1.csv)
    budgets = {
        # the authors' code: ImageNet ResNet-18, 448 px, 30 epochs x 20 steps of 32 + 16 images, Adam 2e-4
        "paper": {"img_size": 448, "weights": "imagenet", "backbone": "resnet18", "epochs": 30,
                  "steps_per_epoch": 20, "batch_size": 48, "lr": 2e-4, "weight_decay": 1e-5},
        # DevNet's quick schedule: ResNet-18 topology at 1/4 width, random init, 100 steps of 16 images
        # (10 normals + 6 anomalies) + 5 reference images. Unlike DevNet's, no BatchNorm recalibration:
        # measured, it costs DRA its training gain (module doc, "bn_recalibration")
        "quick": {"img_size": 64, "weights": "none", "backbone": "resnet18_w16", "epochs": 10,
                  "steps_per_epoch": 10, "batch_size": 16, "lr": 1e-3, "lr_step_epochs": 8},
        # two scales: the half-size scale must reach the ResNet's stride (32 px); after 2 steps the running
        # statistics are still the initial ones, so they are recalibrated (a pipeline check, not the method)
        "smoke": {"img_size": 64, "weights": "none", "backbone": "resnet18_w16", "epochs": 1,
                  "steps_per_epoch": 2, "batch_size": 8, "bn_recalibration": True},
    }
    # measured beside DevNet on a loaded machine and scaled to DevNet's declared figures (docs/fidelity.md)
    seconds_per_cell = {"smoke": 0.43, "quick": 7.2}
    Config = DRAConfig

    @classmethod
    def min_img_size(cls, config: DRAConfig) -> int:
        """Every scale must reach the trunk's minimum: the half-size scale of a two-scale ResNet needs
        >= 32 px, so the image >= 64 px."""
        return min_input_size(config.backbone) * 2 ** (config.n_scales - 1)

    @classmethod
    def bench_phases(cls, config: DRAConfig, shape: TrainShape) -> list[BenchPhase]:
        """One phase: ``epochs x steps_per_epoch`` optimiser steps of ``batch_size`` images plus the
        ``reference_size`` reference images; FLOPs of the trunk at ``n_scales`` scales plus the
        composite head's 3x3 conv (ResNet-18 only; the other heads are negligible)."""
        return [BenchPhase("train", config.epochs * config.steps_per_epoch,
                           config.batch_size + config.reference_size,
                           cls._train_flops(config, shape.img_size))]

    @classmethod
    def bench_step_overrides(cls, config: DRAConfig, n_steps: int, shape: TrainShape) -> dict[str, Any]:
        return {"epochs": 1, "steps_per_epoch": n_steps}

    @staticmethod
    def _train_flops(config: DRAConfig, img_size: int) -> float | None:
        trunk = train_flops_per_image(config.backbone, img_size, config.n_scales)
        if trunk is None:
            return None
        channels = CHANNELS[config.backbone]
        cells = sum(max(img_size // 2 ** s // 32, 1) ** 2 for s in range(config.n_scales))
        return trunk + 3 * 2 * 9 * channels * channels * cells  # forward + backward, 2 FLOPs per MAC

    def _check_input(self, train: TrainSet) -> None:
        c = self.config
        check_trunk_input(c.backbone, c.n_scales, train.images.shape, "--set dra.n_scales=1")
        if not (train.labels == 0).any():
            raise UserError("dra needs normal training images (label 0): its batches, pseudo-anomalies and "
                            "reference set are drawn from them")

    def fit(self, train: TrainSet) -> DRA:
        c = self.config
        self._check_input(train)
        external = external_image_files(c.pseudo_anomaly_dir) if c.pseudo_anomaly_dir else None
        seed_everything(train.seed)
        self.device = train.device
        self.network = DRANetwork(c.backbone, c.weights, c.topk_ratio, c.n_scales).to(self.device)
        images = to_uint8_tensor(train.images, self.device)
        batch_seed, pseudo_seed, normals_seed = np.random.SeedSequence(train.seed).spawn(3)
        draws = DRABatches(train.labels, c.batch_size, c.reference_size, c.pseudo_anomaly_rate,
                           c.reference_pseudo_anomalies, batch_seed)
        pseudo = PseudoAnomalies(images, draws.normal, np.random.default_rng(pseudo_seed), external)
        rotation_gen = torch.Generator(device=self.device).manual_seed(train.seed)
        steps: list[float] = []
        self.loss_history, head_history = self._train(images, draws, pseudo, rotation_gen, train.seed, steps)
        self.flags = divergence_flags(steps)
        if c.bn_recalibration:
            recalibrate_batchnorm(_TrunkAtScales(self.network), images, normalise, c.eval_batch_size)
        reference_info = self._fix_test_reference(images, draws, pseudo, rotation_gen,
                                                  np.random.default_rng(normals_seed))
        if c.bn_recalibration:
            self.network.eval()
            recalibrate_batchnorm(_ResidualsAgainstReference(self.network), images, normalise,
                                  c.eval_batch_size)
        self.network.eval()
        self.info = {"weights": c.weights, "backbone": c.backbone,
                     "pseudo_anomalies": pseudo.kind if external is None else
                     f"external: {len(external)} images in {Path(c.pseudo_anomaly_dir).expanduser()}",
                     "test_reference": reference_info,
                     "final_loss": self.loss_history[-1] if self.loss_history else None,
                     "final_head_losses": head_history[-1] if head_history else None}
        return self

    @staticmethod
    def _make_pseudo(batch_u8: torch.Tensor, slots: np.ndarray, pseudo: PseudoAnomalies) -> torch.Tensor:
        """``batch_u8`` with the images at ``slots`` replaced by fresh pseudo-anomalies (in place)."""
        for i in slots:
            batch_u8[int(i)] = pseudo.make()
        return batch_u8

    def _train(self, images: torch.Tensor, draws: DRABatches, pseudo: PseudoAnomalies,
               rotation_gen: torch.Generator, seed: int, step_losses: list[float]
               ) -> tuple[list[float], list[dict[str, float]]]:
        """Adam over DRA's batches (module doc); returns each epoch's mean loss and mean head losses."""
        c, net, device = self.config, self.network, images.device
        deviation_gen = torch.Generator(device=device).manual_seed(seed + 1)
        opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        history: list[float] = []
        head_history: list[dict[str, float]] = []
        net.train()
        for epoch in range(c.epochs):
            for group in opt.param_groups:
                group["lr"] = epoch_learning_rate(c.lr, c.lr_gamma, c.lr_step_epochs, epoch,
                                                  c.scheduler_step_first)
            total, heads_total = 0.0, np.zeros(len(HEADS))
            for _ in range(c.steps_per_epoch):
                idx, batch_labels = draws.batch()
                batch = self._make_pseudo(images[torch.as_tensor(idx, device=device)],
                                          np.flatnonzero(batch_labels == 2), pseudo)
                ref_idx, ref_pseudo = draws.reference()
                reference = self._make_pseudo(images[torch.as_tensor(ref_idx, device=device)],
                                              np.flatnonzero(ref_pseudo), pseudo)
                x = augment_and_normalise(torch.cat([reference, batch]), c.rotation, rotation_gen)
                scores = net.training_scores(x, len(ref_idx))
                losses = head_losses(scores, torch.as_tensor(batch_labels, device=device), c.margin, c.n_ref,
                                     deviation_gen)
                loss = summed(losses)
                value = optimiser_step(loss, opt, net.parameters(), c.grad_clip, epoch)
                total += value
                heads_total += [h.item() for h in losses]
                step_losses.append(value)
            history.append(total / c.steps_per_epoch)
            head_history.append({h: float(v) for h, v in zip(HEADS, heads_total / c.steps_per_epoch)})
        return history, head_history

    def _fix_test_reference(self, images: torch.Tensor, draws: DRABatches, pseudo: PseudoAnomalies,
                            rotation_gen: torch.Generator, normals_rng: np.random.Generator
                            ) -> dict[str, Any]:
        """Choose the test reference (``test_reference``, module doc), fix its features; what was chosen."""
        c = self.config
        device = images.device
        if c.test_reference == "authors":
            idx, is_pseudo = draws.reference()
            chosen = self._make_pseudo(images[torch.as_tensor(idx, device=device)], np.flatnonzero(is_pseudo),
                                       pseudo)
            x = augment_and_normalise(chosen, c.rotation, rotation_gen)
        else:
            size = min(c.reference_size, len(draws.normal))
            idx = np.sort(normals_rng.choice(draws.normal, size=size, replace=False))
            is_pseudo = np.zeros(len(idx), dtype=bool)
            x = normalise(images[torch.as_tensor(idx, device=device)])
        self.network.set_reference(x)
        return {"mode": c.test_reference, "train_indices": [int(i) for i in idx],
                "pseudo_anomalies": [bool(p) for p in is_pseudo]}

    def score(self, images: np.ndarray) -> np.ndarray:
        return predict(self.network, images, self.device, self.config.eval_batch_size)

    @torch.inference_mode()
    def head_scores(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each head's score (each averaged over scales) for uint8 (N, H, W, 3) images: diagnostics."""
        self.network.eval()
        out: dict[str, list[np.ndarray]] = {h: [] for h in HEADS}
        for start in range(0, len(images), self.config.eval_batch_size):
            x = normalise(to_uint8_tensor(images[start:start + self.config.eval_batch_size], self.device))
            for h, s in zip(HEADS, self.network.head_scores(x)):
                out[h].append(s.float().cpu().numpy())
        return {h: np.concatenate(v) if v else np.zeros(0, np.float32) for h, v in out.items()}

    def explain(self, images: np.ndarray) -> np.ndarray:
        """Gradient saliency of the combined anomaly score (DevNet's localisation recipe, module doc)."""
        c = self.config
        self.network.eval()
        with frozen(self.network):
            return explain_images(self.network, images, normalise, self.device,
                                  sigma=c.saliency_sigma, batch_size=c.saliency_batch_size)
