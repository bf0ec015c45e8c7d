"""MINNS: MI-Net with deep supervision (Wang et al., "Revisiting multiple instance neural networks",
Pattern Recognition 2018) on DevNet's ResNet-18 backbone, with DevNet's oversampling and optimiser.

The paper (DevNet sec. 6.2-6.3) describes MINNS as "a deep multiple instance classification model
that applies multiple-instance-pooling layers to intermediate and last feature layers to learn
expressive bag features", run on "the same backbone as DevNet" with "the same oversampling method"
and "the same optimization setting as DevNet". The MI-Net code (yanyongluan/MINNs, Keras) works on
pre-extracted instance feature vectors; no image version is public, so the adapter below is our
design, mapping each MI-Net part to the image setting:

* Bag and instances: an image is a bag; the cells of a ResNet feature map are its instances (as
  DevNet's patches), each cell's channel vector its instance feature.
* Instance feature layers: MI-Net with DS has three fc+ReLU layers (256/128/64) and pools each
  one's output; here the two deepest ResNet stages play that role - the intermediate layer3 output
  (256 ch, stride 16) and the last layer4 output (512 ch, stride 32) - as the paper says "intermediate
  and last feature layers". Both are post-ReLU, as MI-Net's fc outputs.
* Dropout 0.5 on the instance features before pooling (MI-Net's ``Dropout(rate=0.5)`` after each
  fc layer); off at test time.
* MIL pooling per layer, over the instances of a bag: max (default; MI-Net's code default
  ``--pooling max``), mean, or LSE with sharpness ``lse_r`` (code: r = 1). See
  :mod:`fsad_methods.minns_loss`.
* Deep supervision: each pooled bag feature -> its own linear classifier (Keras ``Feature_pooling``:
  glorot-uniform weights, zero bias) -> one bag logit per layer.
* Loss: binary cross-entropy of every output, averaged over the outputs (the code sums them with
  weights 1 and gives the averaged output weight 0; the mean is the same objective divided by the
  number of outputs, see :func:`deep_supervision_loss`).
* Score: mean of the outputs' sigmoid probabilities - MI-Net with DS's averaged prediction
  (``average([fp1, fp2, fp3])``); ``score = "logit"`` averages the logits instead.
* Optimisation: DevNet's (:class:`Schedule` defaults: Adam lr 2e-4, wd 1e-5, StepLR 10 epochs x0.1,
  grad clip 1, 50 epochs x 20 steps, batch 48 half normals / half labelled anomalies, rotation
  augmentation), through the shared :func:`train_balanced`. MI-Net's own SGD (lr 5e-4, momentum
  0.9, Nesterov, l2 5e-3 on every layer) is not used: the paper states DevNet's settings for
  MINNS.

Deviations and why:

* Single scale: MINNS uses DevNet's *backbone*, not DevNet's two-scale score head, so the image is
  seen once at its own size.
* Instance features are ResNet stages, not fc layers on fixed features: the backbone is trained end
  to end, as for DevNet; two stages (not MI-Net's three layers) because the paper names an
  intermediate and the last layer, and earlier stages have tiny receptive fields.
* ``bn_recalibration`` (off by default and in the paper budget; on in the CPU budgets): after
  training, BatchNorm's running statistics are recomputed on the training images, as DevNet's
  option of the same name; a few dozen steps from random init leave them stale.
* ``deep_supervision = False`` gives plain MI-Net (last layer only) - not in the paper, for ablation.
* Only ResNet trunks (torchvision ResNets and the narrow ``resnet18_w16/w32`` of the quick budget)
  are supported: the intermediate layer is taken as the trunk's 7th child (layer3), whose width is
  half the last layer's.

Localisation (``explain``, paper Q3): MI-Net has none of its own; as for DevNet, the gradient of
MINNS's image score (the configured ``score``: mean of the outputs' probabilities, or of their
logits) w.r.t. the normalised input, in eval mode, with the authors' DevNet post-processing
(|grad| summed over channels, p99 scaling, Gaussian blur sigma 4 px; :mod:`fsad_methods.saliency`).
With ``score = "prob"`` each output's gradient is weighted by p(1 - p), so a very confident output
contributes little; ``--set minns.score=logit`` gives the unweighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.detectors.hparams import PositiveFloat, PositiveInt
from fsad_bench.errors import UserError
from fsad_methods.backbones import (
    Backbone,
    Weights,
    feature_extractor,
    min_input_size,
    train_flops_per_image,
)
from fsad_methods.minns_loss import POOLINGS, deep_supervision_loss, deep_supervision_score, mil_pool
from fsad_methods.saliency import DEFAULT_BATCH_SIZE, DEFAULT_SIGMA, explain_images, frozen
from fsad_methods.training import (
    BalancedTraining,
    Schedule,
    divergence_flags,
    normalise,
    predict,
    recalibrate_batchnorm,
    schedule_of,
    seed_everything,
    to_uint8_tensor,
    train_balanced,
)

SCORE_MODES = ("prob", "logit")


class MINNSNetwork(nn.Module):
    """ResNet trunk -> MIL pooling of layer3 and layer4 cells -> one linear bag classifier each.

    ``forward`` returns the bag logits (B, L), L = 2 with deep supervision, else 1.
    """

    def __init__(self, backbone: str = "resnet18", weights: str = "imagenet", pooling: str = "max",
                 lse_r: float = 1.0, dropout: float = 0.5, deep_supervision: bool = True) -> None:
        super().__init__()
        trunk, channels = feature_extractor(backbone, weights)
        children = list(trunk.children())
        if not backbone.startswith("resnet") or len(children) != 8:
            raise UserError(f"minns needs a ResNet backbone (conv1..layer4), got {backbone!r}")
        self.lower = nn.Sequential(*children[:7])   # conv1 .. layer3 (stride 16)
        self.last = children[7]                     # layer4 (stride 32)
        widths = [channels // 2, channels] if deep_supervision else [channels]
        self.heads = nn.ModuleList(nn.Linear(w, 1) for w in widths)
        for head in self.heads:  # Keras Dense defaults, as MI-Net's Feature_pooling
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)
        self.dropout = nn.Dropout(dropout)
        self.pooling = pooling
        self.lse_r = lse_r
        self.deep_supervision = deep_supervision

    def bag_logit(self, fmap: torch.Tensor, head: nn.Linear) -> torch.Tensor:
        """Feature map (B, C, h, w) -> instances (B, C, h*w) -> pooled bag feature (B, C) -> logit (B,)."""
        instances = self.dropout(fmap.flatten(2))
        return head(mil_pool(instances, self.pooling, self.lse_r, dim=2)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.lower(x)
        maps = [mid, self.last(mid)] if self.deep_supervision else [self.last(mid)]
        return torch.stack([self.bag_logit(m, h) for m, h in zip(maps, self.heads)], dim=1)


class ImageScore(nn.Module):
    """A MINNS network's image score (B,): the configured mean of its outputs (``score``)."""

    def __init__(self, net: MINNSNetwork, mode: str) -> None:
        super().__init__()
        self.net, self.mode = net, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deep_supervision_score(self.net(x), self.mode)


@dataclass
class MINNSConfig(Schedule):
    """MINNS hyper-parameters: DevNet's schedule (authors' code defaults) + MI-Net with DS."""

    backbone: Backbone = "resnet18"
    weights: Weights = "imagenet"
    pooling: Literal["max", "mean", "lse"] = "max"
    lse_r: PositiveFloat = 1.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    deep_supervision: bool = True
    score: Literal["prob", "logit"] = "prob"
    eval_batch_size: PositiveInt = 64
    #: Not in MI-Net or DevNet (off in the paper budget), as DevNet's option of the same name: after
    #: training, set BatchNorm's running statistics to the training images' under the final
    #: weights; short from-scratch budgets need it (running averages still lag the weights).
    bn_recalibration: bool = False


class MINNS(Detector):
    """Multiple-instance network (MI-Net with deep supervision) on feature-map cells."""

    name = "minns"
    display_name = "MINNS"
    paper_column = "MINNS"
    budgets = {
        # DevNet's backbone, oversampling and optimiser (paper sec. 6.3)
        "paper": {"img_size": 448, "weights": "imagenet", "epochs": 50, "steps_per_epoch": 20,
                  "batch_size": 48, "lr": 2e-4, "weight_decay": 1e-5, "pooling": "max", "dropout": 0.5,
                  "deep_supervision": True},
        "quick": {"img_size": 64, "weights": "none", "backbone": "resnet18_w16", "epochs": 10,
                  "steps_per_epoch": 10, "batch_size": 16, "lr": 1e-3, "lr_step_epochs": 8,
                  "bn_recalibration": True},
        "smoke": {"img_size": 32, "weights": "none", "backbone": "resnet18_w16", "epochs": 1,
                  "steps_per_epoch": 2, "batch_size": 8, "bn_recalibration": True},
    }
    seconds_per_cell = {"smoke": 0.18, "quick": 3.61}
    Config = MINNSConfig

    @classmethod
    def min_img_size(cls, config: MINNSConfig) -> int:
        """One scale through a ResNet trunk: at least its stride (32 px)."""
        return min_input_size(config.backbone)

    def _check_config(self) -> None:
        c = self.config
        if c.pooling not in POOLINGS:
            raise UserError(f"unknown minns pooling {c.pooling!r}; use one of {', '.join(POOLINGS)}")
        if c.pooling == "lse" and c.lse_r <= 0:
            raise UserError(f"minns lse_r must be > 0, got {c.lse_r}")
        if c.score not in SCORE_MODES:
            raise UserError(f"unknown minns score {c.score!r}; use one of {', '.join(SCORE_MODES)}")
        if not 0 <= c.dropout < 1:
            raise UserError(f"minns dropout must be in [0, 1), got {c.dropout}")

    def build_network(self) -> MINNSNetwork:
        c = self.config
        return MINNSNetwork(c.backbone, c.weights, c.pooling, c.lse_r, c.dropout, c.deep_supervision)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return deep_supervision_loss(outputs, labels)

    def balanced_training(self, device: str, seed: int) -> BalancedTraining:
        """The network built on ``device`` (it outputs the bag logits the loss takes) and DevNet's
        schedule: what ``fit`` trains, and what ``benchmarks/reference_pipeline.py``'s reference trains."""
        self.device = device
        self.network = self.build_network().to(device)
        return BalancedTraining(self.network, ImageScore(self.network, self.config.score), self.loss,
                                schedule_of(self.config), self.config.eval_batch_size)

    @classmethod
    def bench_phases(cls, config: MINNSConfig, shape: TrainShape) -> list[BenchPhase]:
        """One phase: ``train_balanced``, ``epochs x steps_per_epoch`` steps of ``batch_size`` images;
        FLOPs of a single-scale ResNet-18 trunk."""
        return [BenchPhase("train", config.epochs * config.steps_per_epoch, config.batch_size,
                           train_flops_per_image(config.backbone, shape.img_size))]

    @classmethod
    def bench_step_overrides(cls, config: MINNSConfig, n_steps: int, shape: TrainShape) -> dict[str, Any]:
        return {"epochs": 1, "steps_per_epoch": n_steps}

    def fit(self, train: TrainSet) -> MINNS:
        self._check_config()
        c = self.config
        seed_everything(train.seed)
        parts = self.balanced_training(train.device, train.seed)
        images = to_uint8_tensor(train.images, train.device)
        steps: list[float] = []
        self.loss_history = train_balanced(parts.model, images, train.labels, parts.schedule, parts.loss,
                                           train.seed, step_losses=steps)
        self.flags = divergence_flags(steps)
        if c.bn_recalibration:
            recalibrate_batchnorm(self.network, images, normalise, c.eval_batch_size)
        self.info = {"weights": c.weights, "backbone": c.backbone, "pooling": c.pooling,
                     "deep_supervision": c.deep_supervision,
                     "final_loss": self.loss_history[-1] if self.loss_history else None}
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        logits = predict(self.network, images, self.device, self.config.eval_batch_size)
        if len(logits) == 0:
            return np.zeros(0, dtype=np.float64)
        return deep_supervision_score(torch.from_numpy(logits), self.config.score).numpy()

    def explain(self, images: np.ndarray) -> np.ndarray:
        """Gradient saliency of the image score (DevNet's localisation recipe), (N, H, W) in [0, 1]."""
        c = self.config
        net = self.network.eval()

        def image_score(x: torch.Tensor) -> torch.Tensor:
            return deep_supervision_score(net(x), c.score)

        with frozen(net):
            return explain_images(image_score, images, normalise, self.device,
                                  sigma=getattr(c, "saliency_sigma", DEFAULT_SIGMA),
                                  batch_size=getattr(c, "saliency_batch_size", DEFAULT_BATCH_SIZE))
