"""Deep SAD (Ruff et al., "Deep Semi-Supervised Anomaly Detection", ICLR 2020) on DevNet's ResNet-18.

Objective (official ``optim/DeepSAD_trainer.py``, :mod:`fsad_methods.deepsad_loss`): per sample,
dist = ||phi(x) - c||^2 for unlabelled data (our label 0: the training normals, unlabelled in the
few-shot setting) and eta * (dist + eps)^-1 for labelled anomalies (label 1), eta = 1, eps = 1e-6,
averaged over the batch. Score = dist. Centre c = mean of the initial embeddings of the training
data (the official ``init_center_c`` runs over the whole training loader, labelled anomalies
included), with |c_i| < 0.1 pushed to +-0.1.

Network: as in the paper (DevNet sec. 6.3, "Deep SAD ... use the same backbone as DevNet"): the
ResNet-18 trunk of :func:`feature_extractor` (conv1..layer4) + global average pooling -> 512-d
embedding phi(x). No head is added.

Optimisation (official README command, source of the paper-budget defaults): Adam lr 1e-4, weight
decay 0.5e-6, 150 epochs, MultiStepLR milestone 50 (x0.1), batch 128, plain shuffled batches, no
gradient clipping, no augmentation; an epoch is one pass over the training data. The paper says
Deep SAD is "optimized with the recommended settings as in their original work", so we use these
and not DevNet's optimiser, even though the network is DevNet's.

Decisions (deviations) and why:

* Bias terms. Deep SVDD's theory asks for a bias-free network: with biases the net can map every
  input to c (a constant function) and the one-class loss reaches 0. ResNet-18's BatchNorm layers
  carry biases (beta), and removing them would break the ImageNet weights the paper relies on, so we
  keep them. The collapse is prevented by Deep SAD's own labelled-anomaly term: mapping the labelled
  anomalies onto c costs eta / eps = 1e6 each, so the constant solution is never optimal when at
  least one labelled anomaly is present (always, in this benchmark). With no labelled anomalies the
  collapse would be possible; ``info["n_labelled_anomalies"]`` records the count. The ResNet's final
  ReLU makes the embedding non-negative, so c >= 0 and the 0.1 fix pushes small entries to +0.1.
* Pretraining. The official Deep SAD pretrains an autoencoder, but its weights are never copied into
  the network (key mismatch: the autoencoder nests the encoder under ``encoder.``), so the published
  Deep SAD effectively trains from random initialisation. We do not copy that bug, and we do not
  pretrain an autoencoder either: no ResNet-18 autoencoder exists in the original work, and the
  ImageNet initialisation (``weights="imagenet"``, paper budget) replaces the pretraining. With
  ``weights="none"`` the network starts from random initialisation, which is what the official code
  ends up doing.
* Centre computed with BatchNorm batch statistics (buffers restored) instead of eval mode: at init the
  running statistics are ImageNet's or untrained, not the training data's (see
  :func:`batchstat_embeddings`).
* Batches: plain shuffled batches (``balanced = False``), as the official code; ``balanced = True``
  switches to DevNet's half/half oversampling of the labelled anomalies (the quick budget's choice:
  its 100 plain batches would show the 10 labelled anomalies only ~30 times, and Deep SAD then stays
  at its untrained AUC on ELPV; docs/quick_budget.md). Batches come from DevNet's
  seeded sampler and always have ``min(batch_size, N)`` images (the official loader keeps a short
  last batch).
* Input: ImageNet normalisation of the shared pipeline (the official Deep SAD scales CIFAR-10 to
  [0, 1] only; the ResNet's ImageNet weights expect ImageNet statistics). Rotation augmentation is
  optional (``rotation`` in degrees, as DevNet's 180) and off by default, as in the official code.
* ``bn_recalibration`` (off by default = official; on in the quick and smoke budgets): after
  training, one pass over all training images replaces BN's running statistics, which after a few
  steps are still mostly the initial ones (see :func:`recalibrate_batchnorm`).
* Multi-scale scoring and top-K MIL are DevNet's, not Deep SAD's: one scale, one embedding per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.detectors.hparams import (
    BatchSize,
    Degrees,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
)
from fsad_methods.backbones import (
    Backbone,
    Weights,
    check_weights_choice,
    feature_extractor,
    min_input_size,
    train_flops_per_image,
)
from fsad_methods.deepsad_loss import deepsad_loss
from fsad_methods.svdd_common import (
    LoopSettings,
    embed,
    initial_centre,
    parse_milestones,
    squared_distance,
    train_loop,
)
from fsad_methods.training import (
    augment_and_normalise,
    divergence_flags,
    normalise,
    recalibrate_batchnorm,
    seed_everything,
    to_uint8_tensor,
)


class ResNetEmbedding(nn.Module):
    """phi: DevNet's ResNet-18 trunk + global average pooling -> (B, 512)."""

    def __init__(self, backbone: str = "resnet18", weights: str = "imagenet") -> None:
        super().__init__()
        self.trunk, self.rep_dim = feature_extractor(backbone, weights)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(x)).flatten(1)


@dataclass
class DeepSADConfig:
    """Deep SAD hyper-parameters; defaults = official README command (paper budget)."""

    backbone: Backbone = "resnet18"
    weights: Weights = "imagenet"
    eta: NonNegFloat = 1.0
    eps: PositiveFloat = 1e-6
    epochs: PositiveInt = 150
    lr: PositiveFloat = 1e-4
    lr_milestones: tuple[PositiveInt, ...] = (50,)
    batch_size: BatchSize = 128  # BatchNorm in training mode needs two images
    weight_decay: NonNegFloat = 0.5e-6
    steps_per_epoch: NonNegInt = 0  # 0 = one pass over the training data
    balanced: bool = False
    rotation: Degrees = 0.0
    grad_clip: NonNegFloat = 0.0
    bn_recalibration: bool = False  # True: BN statistics re-estimated after training (short budgets)
    eval_batch_size: PositiveInt = 64

    def __post_init__(self) -> None:
        self.lr_milestones = parse_milestones(self.lr_milestones)
        check_weights_choice(self.weights)


class DeepSAD(Detector):
    """Deep SAD: hypersphere of the normals, labelled anomalies pushed away (inverse distance)."""

    name = "deepsad"
    display_name = "DeepSAD"
    paper_column = "DeepSAD"
    budgets = {
        # official Deep-SAD-PyTorch README command, on DevNet's ImageNet ResNet-18 (paper sec. 6.3)
        "paper": {"img_size": 448, "weights": "imagenet", "epochs": 150, "lr": 1e-4, "lr_milestones": [50],
                  "batch_size": 128, "weight_decay": 0.5e-6, "eta": 1.0, "balanced": False},
        # 100 steps; balanced batches (DevNet's oversampling): with plain shuffled batches 100 steps show
        # its 10 labelled anomalies about 30 times in all, too few for the labelled term to act
        "quick": {"img_size": 32, "weights": "none", "backbone": "resnet18_w16", "epochs": 4,
                  "steps_per_epoch": 25, "batch_size": 32, "lr_milestones": [], "balanced": True,
                  "bn_recalibration": True},
        "smoke": {"img_size": 32, "weights": "none", "backbone": "resnet18_w16", "epochs": 1,
                  "steps_per_epoch": 2, "batch_size": 8, "lr_milestones": [], "bn_recalibration": True},
    }
    seconds_per_cell = {"smoke": 0.22, "quick": 2.47}
    Config = DeepSADConfig

    @classmethod
    def bench_phases(cls, config: DeepSADConfig, shape: TrainShape) -> list[BenchPhase]:
        """One phase: ``train_loop`` over all training images, ``epochs`` x (``steps_per_epoch`` or one
        pass, ``ceil(N / batch)``) steps of ``min(batch_size, N)`` images (never a short batch)."""
        batch = max(min(config.batch_size, shape.n_images), 1)
        per_epoch = config.steps_per_epoch or math.ceil(shape.n_images / batch)
        return [BenchPhase("train", config.epochs * per_epoch, batch,
                           train_flops_per_image(config.backbone, shape.img_size))]

    @classmethod
    def bench_step_overrides(cls, config: DeepSADConfig, n_steps: int, shape: TrainShape) -> dict[str, Any]:
        return {"epochs": 1, "steps_per_epoch": n_steps}

    @classmethod
    def min_img_size(cls, config: DeepSADConfig) -> int:
        """One scale through the trunk: at least its stride (ResNet: 32 px)."""
        return min_input_size(config.backbone)

    def fit(self, train: TrainSet) -> DeepSAD:
        c = self.config
        seed_everything(train.seed)
        self.device = train.device
        self.network = ResNetEmbedding(c.backbone, c.weights).to(train.device)
        images = to_uint8_tensor(train.images, train.device)
        self.c = initial_centre(self.network, images, normalise, c.eval_batch_size)
        gen = torch.Generator(device=train.device).manual_seed(train.seed + 1)

        def step_loss(batch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            z = self.network(augment_and_normalise(batch, c.rotation, gen))
            return deepsad_loss(squared_distance(z, self.c), labels, c.eta, c.eps)

        settings = LoopSettings(c.epochs, c.batch_size, c.lr, c.weight_decay, c.lr_milestones,
                                c.steps_per_epoch, c.grad_clip, c.balanced)
        steps: list[float] = []
        self.loss_history = train_loop(self.network.parameters(), self.network, images, train.labels,
                                       settings, step_loss, train.seed, step_losses=steps)
        self.flags = divergence_flags(steps)
        if c.bn_recalibration:
            recalibrate_batchnorm(self.network, images, normalise, c.eval_batch_size)
        self.info = {"weights": c.weights, "backbone": c.backbone, "pretrain": "imagenet" if c.weights ==
                     "imagenet" else "none", "n_labelled_anomalies": train.n_anomaly,
                     "final_loss": self.loss_history[-1] if self.loss_history else None}
        return self

    def embed(self, images: np.ndarray) -> torch.Tensor:
        """Eval-mode embeddings phi(x) of uint8 (N,H,W,3) images."""
        return embed(self.network, images, lambda a: normalise(to_uint8_tensor(a, self.device)),
                     self.config.eval_batch_size)

    def score(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros(0, dtype=np.float32)
        return squared_distance(self.embed(images), self.c).float().cpu().numpy()
