"""DevNet for images (Pang et al.), faithful to the authors' code (deviations: docs/fidelity.md).

Network: ResNet-18 trunk (conv1..layer4) -> 1x1 conv scoring every feature-map cell -> top-K MIL
(mean of the top 10% |cell scores|) -> image score; the same network also scores the image resized
(nearest) to half size and the two scale scores are averaged, in training and at test time.
Loss: deviation loss against a fresh N(0,1) reference of 5000 draws per step, margin 5.
Optimisation: the authors' code values (Adam lr 2e-4, wd 1e-5, StepLR 10 epochs x0.1, grad clip 1,
50 epochs x 20 steps, batch 48 balanced). The paper text says lr 1e-3 and wd 1e-2 instead; choose
those with ``--set lr=1e-3 --set weight_decay=1e-2``. We default to the code's values because the
code produced the published numbers.

Ablation variants (paper sec. 6.8.1, Table 5), the ``variant`` field; named methods in
:mod:`fsad_methods.devnet_ablation`. The authors' public code has only the top-K switch (``topk=0``
= plain mean of the cell scores), so everything beyond that is our reading of the paper, written
down here. Every variant keeps the trunk, the two-scale averaging and the training schedule.

* ``"mil_ds"`` (default): DevNet as above (Table 5 "MIL-DS": L_dev + eta + L_mil).
* ``"ds"``: holistic scalar score, no top-K: global-average-pooled trunk features -> the linear
  scoring unit -> score (Table 5 "DS": L_dev + eta). Because the 1x1 head is linear this equals
  the mean of the cell scores, i.e. the authors' ``topk=0`` switch; ``topk_ratio`` is ignored.
* ``"patch_ds"``: the deviation loss on every patch: each cell score gets its image's label
  (one reference draw per step for all cells); the loss is the mean over cells (per scale, then
  averaged over the scales, as the scores are); image score = mean of the cell scores over all
  patches (per scale, averaged over scales). Its *score* equals DS's; only the loss differs.
* ``"rep"``: no scoring layer (Table 5 "Rep": L_dev only). The network outputs the image's
  representation q in R^L (global-average-pooled trunk features, L = 512 for ResNet-18, averaged
  over the scales) and the deviation loss is applied to it with a *multivariate* Gaussian
  reference: per step r_1..r_5000 ~ N(0, I_L), mu_R and sigma_R are their per-dimension mean and
  standard deviation (L-vectors), dev = (q - mu_R) / sigma_R is an L-vector of Z-scores, and the
  loss is Eq. 8 applied to every dimension, averaged over dimensions and batch:
  mean_k [(1 - y)|dev_k| + y max(0, a - dev_k)]. This is the literal reading of "uses our deviation
  loss to learn the representations only ... the reference is drawn from a multivariate Gaussian"
  (the univariate loss applied unchanged to a vector output, elementwise). The paper does not say
  how Rep scores a test image; ours is the deviation the loss drives to 0 for normals and up for
  anomalies, at the prior's mu = 0, sigma = 1: score = mean_k |q_k| (mean absolute Z-score).
  (The trunk ends in a ReLU, so q >= 0 and this is also the mean of q.)

Backbone variants ("AlexNet + DS", "ResNet-50 + DS"): ``backbone = "alexnet" | "resnet50"``. In
Table 5 both columns sit under the header "DS" and have no tick in the L_mil row, and the text
names them "+ DS" and compares ResNet-50 + DS with "ResNet-18 + DS"; so we read them as the DS
variant (holistic, no top-K) with that backbone, and the named methods ``devnet_alexnet`` /
``devnet_resnet50`` set ``variant = "ds"``. (The text also says a shallower backbone "may help
DevNet" on Capsule, where AlexNet's 0.881 beats MIL-DS's 0.865 as well as DS's 0.720, so MIL-DS
with those backbones is a possible reading too: ``--set variant=mil_ds``.)

Localisation (``explain``): the authors' gradient saliency of the image score, see
:mod:`fsad_methods.saliency` (``saliency_sigma``: Gaussian blur in pixels, default the
authors' 4 at 448 px; it is not rescaled with the image size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    Backbone,
    Weights,
    check_trunk_input,
    feature_extractor,
    min_input_size,
    train_flops_per_image,
)
from fsad_methods.deviation_loss import deviation_loss
from fsad_methods.mil import topk_mil
from fsad_methods.saliency import DEFAULT_BATCH_SIZE, DEFAULT_SIGMA, explain_images, frozen
from fsad_methods.training import (
    BalancedTraining,
    Schedule,
    SpeedOptions,
    divergence_flags,
    normalise,
    predict,
    recalibrate_batchnorm,
    schedule_of,
    seed_everything,
    to_uint8_tensor,
    train_balanced,
)

VARIANTS = ("mil_ds", "ds", "patch_ds", "rep")
#: the ``variant`` field (Table 5's columns); kept equal to VARIANTS
Variant = Literal["mil_ds", "ds", "patch_ds", "rep"]


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise UserError(f"unknown devnet variant {variant!r}; use one of {', '.join(VARIANTS)}")


def patch_deviation_loss(cell_scores: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor,
                         margin: float = 5.0, n_ref: int = 5000, generator: torch.Generator | None = None,
                         reference: torch.Tensor | None = None) -> torch.Tensor:
    """Patch-DS: the deviation loss of every cell, each with its image's label.

    ``cell_scores``: (B, P) cells of one scale, or a sequence of them (one per scale, P may
    differ); the loss is the mean over the cells of each scale, averaged over the scales. One
    reference draw serves all cells of the step.
    """
    scales = [cell_scores] if isinstance(cell_scores, torch.Tensor) else list(cell_scores)
    if reference is None:
        reference = torch.randn(n_ref, generator=generator, device=scales[0].device)
    losses = []
    for cells in scales:
        flat = cells.flatten(1)
        per_cell_labels = labels.reshape(-1, 1).expand(-1, flat.shape[1]).reshape(-1)
        losses.append(deviation_loss(flat.reshape(-1), per_cell_labels, margin, reference=reference))
    return torch.stack(losses).mean()


def rep_deviation_loss(reps: torch.Tensor, labels: torch.Tensor, margin: float = 5.0, n_ref: int = 5000,
                       generator: torch.Generator | None = None,
                       reference: torch.Tensor | None = None) -> torch.Tensor:
    """Rep: the deviation loss on representations (B, L) with a multivariate N(0, I_L) reference.

    dev = (q - mu_R) / sigma_R per dimension (mu_R, sigma_R: the reference's per-dimension mean and
    std over ``n_ref`` fresh draws, or over ``reference`` (n_ref, L)); the loss is
    mean over batch and dimensions of (1 - y)|dev| + y max(0, margin - dev).
    """
    if reference is None:
        reference = torch.randn(n_ref, reps.shape[1], generator=generator, device=reps.device)
    dev = (reps - reference.mean(0)) / reference.std(0)
    y = labels.to(reps.dtype).reshape(-1, 1)
    return ((1 - y) * dev.abs() + y * torch.clamp(margin - dev, min=0)).mean()


class DevNetNetwork(nn.Module):
    """Anomaly score learner phi: image -> scalar score (two scales averaged).

    ``forward`` is always the image score (B,). ``training_output`` is what the variant's loss
    takes: the image score (mil_ds, ds), the per-scale cell scores (patch_ds) or the
    representation (rep).
    """

    def __init__(self, backbone: str = "resnet18", weights: str = "imagenet", topk_ratio: float = 0.1,
                 n_scales: int = 2, variant: str = "mil_ds") -> None:
        super().__init__()
        check_variant(variant)
        self.trunk, channels = feature_extractor(backbone, weights)
        # Rep has no scoring layer (Table 5: no eta)
        self.head = nn.Conv2d(channels, 1, kernel_size=1, bias=True) if variant != "rep" else None
        self.topk_ratio = topk_ratio
        self.n_scales = n_scales
        self.variant = variant

    def scaled_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The image and its nearest-neighbour downscales by 2**s, s = 1 .. n_scales - 1."""
        # the authors resize to img_size / 2 with nearest interpolation
        return [x] + [F.interpolate(x, scale_factor=0.5 ** s, mode="nearest")
                      for s in range(1, self.n_scales)]

    def cell_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Score map (B, 1, h, w): one score per feature-map cell (image patch)."""
        return self.head(self.trunk(x))

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled trunk features (B, L) of one scale."""
        return self.trunk(x).mean(dim=(2, 3))

    def scale_score(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "mil_ds":
            return topk_mil(self.cell_scores(x).flatten(1), self.topk_ratio)
        if self.variant == "ds":
            pooled = self.trunk(x).mean(dim=(2, 3), keepdim=True)
            return self.head(pooled).flatten()
        if self.variant == "patch_ds":
            return self.cell_scores(x).flatten(1).mean(dim=1)
        return self.representation(x).abs().mean(dim=1)  # rep, at the prior's mu = 0, sigma = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.scale_score(xs) for xs in self.scaled_inputs(x)]).mean(0)

    def training_output(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.variant == "patch_ds":
            return [self.cell_scores(xs).flatten(1) for xs in self.scaled_inputs(x)]
        if self.variant == "rep":
            return torch.stack([self.representation(xs) for xs in self.scaled_inputs(x)]).mean(0)
        return self(x)


class _TrainingView(nn.Module):
    """The network seen by :func:`train_balanced`: its output is what the variant's loss takes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net.training_output(x)


@dataclass
class DevNetConfig(Schedule):
    """DevNet hyper-parameters; defaults are the authors' code (paper budget)."""

    backbone: Backbone = "resnet18"
    weights: Weights = "imagenet"
    #: K as a fraction of the feature-map cells; 0 = the authors' ``topk=0`` switch (plain mean)
    topk_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    n_scales: PositiveInt = 2
    margin: PositiveFloat = 5.0
    #: reference draws per step; their standard deviation needs at least two
    n_ref: Annotated[int, Field(ge=2)] = 5000
    eval_batch_size: PositiveInt = 64
    #: Not in the authors' code (off in the paper budget): after training, reset BatchNorm's running
    #: statistics to the training images' under the final weights. Short from-scratch budgets need
    #: it: after a few dozen steps the running averages still lag the weights and eval-mode scores
    #: are meaningless (seen inverted on `synthetic`).
    bn_recalibration: bool = False
    #: Ablation variant (paper Table 5): "mil_ds" (DevNet), "ds", "patch_ds", "rep"; see the module doc.
    variant: Variant = "mil_ds"
    #: Gaussian blur of the saliency maps in pixels at the cell's image size (authors: 4 at 448 px).
    saliency_sigma: NonNegFloat = DEFAULT_SIGMA
    #: Images per backward pass in ``explain`` (memory only; maps do not depend on it).
    saliency_batch_size: PositiveInt = DEFAULT_BATCH_SIZE
    #: Speed only, not in the authors' code (off = their float32): forward passes of training and
    #: scoring under bfloat16 autocast, the loss in float32. ``explain`` stays float32 (its maps are
    #: input gradients, which bf16 would quantise). CUDA only: see CPU_BF16_REFUSED.
    amp_bf16: bool = False
    #: Speed only: model and inputs in channels_last (NHWC) memory format; same numbers up to
    #: floating-point summation order.
    channels_last: bool = False

    @property
    def speed(self) -> SpeedOptions:
        return SpeedOptions(self.amp_bf16, self.channels_last)


#: Why amp_bf16 is refused on a CPU: with torch 2.14.1 on a Xeon with AMX, oneDNN's bf16 convolution
#: returned NaN for finite inputs in the first layer in 4 of 16 seeded DevNet fits (smoke budget),
#: depending on what ran before in the process. A speed option must never change results that way.
CPU_BF16_REFUSED = ("amp_bf16 is supported on CUDA only: on CPUs oneDNN's bfloat16 convolutions gave NaN "
                    "for finite inputs in our tests; unset devnet.amp_bf16 (channels_last is fine on CPU)")


class DevNet(Detector):
    """Deviation network with top-K multiple-instance scoring (the paper's model)."""

    name = "devnet"
    display_name = "DevNet"
    paper_column = "DevNet"
    budgets = {
        # the authors' code: ImageNet ResNet-18, 50 epochs x 20 steps of 24 + 24 images, Adam 2e-4
        "paper": {"img_size": 448, "weights": "imagenet", "epochs": 50, "steps_per_epoch": 20,
                  "batch_size": 48, "lr": 2e-4, "weight_decay": 1e-5},
        # ResNet-18 topology at 1/4 width (no ImageNet weights exist for it), 100 steps of 8 + 8 images
        "quick": {"img_size": 64, "weights": "none", "backbone": "resnet18_w16", "epochs": 10,
                  "steps_per_epoch": 10, "batch_size": 16, "lr": 1e-3, "lr_step_epochs": 8,
                  "bn_recalibration": True},
        # two scales: the half-size scale must reach the ResNet's stride (32 px)
        "smoke": {"img_size": 64, "weights": "none", "backbone": "resnet18_w16", "epochs": 1,
                  "steps_per_epoch": 2, "batch_size": 8, "bn_recalibration": True},
    }
    seconds_per_cell = {"smoke": 0.29, "quick": 4.63}
    Config = DevNetConfig
    #: the authors' code fed DevNet through a PIL/DataLoader pipeline: benchmarks/reference_pipeline.py
    #: compares it with that pipeline by default (a plain attribute that script reads, not core contract)
    bench_reference = True

    @classmethod
    def min_img_size(cls, config: DevNetConfig) -> int:
        """Every scale must reach the trunk's minimum: the half-size scale of a two-scale ResNet needs
        >= 32 px, so the image >= 64 px (AlexNet: 2 x 63)."""
        return min_input_size(config.backbone) * 2 ** (config.n_scales - 1)

    def build_network(self) -> nn.Module:
        c = self.config
        return DevNetNetwork(c.backbone, c.weights, c.topk_ratio, c.n_scales, c.variant)

    def loss(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.variant == "patch_ds":
            return patch_deviation_loss(outputs, labels, c.margin, c.n_ref, self._ref_gen)
        if c.variant == "rep":
            return rep_deviation_loss(outputs, labels, c.margin, c.n_ref, self._ref_gen)
        return deviation_loss(outputs, labels, c.margin, c.n_ref, self._ref_gen)

    def balanced_training(self, device: str, seed: int) -> BalancedTraining:
        """The network (built on ``device``), its training view, the variant's loss with its reference
        generator seeded from ``seed`` and the schedule: what ``fit`` trains, and what the reference
        pipeline of ``benchmarks/reference_pipeline.py`` trains."""
        c = self.config
        self.device = device
        self.network = self.build_network().to(device)
        built = getattr(self.network, "variant", "mil_ds")
        if built != c.variant:  # e.g. FLOS builds its own network, which has no variants
            raise UserError(f"{self.name or type(self).__name__} has no variant {c.variant!r} "
                            f"(its network is {built!r} only)")
        self._ref_gen = torch.Generator(device=device).manual_seed(seed + 1)
        model = _TrainingView(self.network) if hasattr(self.network, "training_output") else self.network
        return BalancedTraining(model, self.network, self.loss, schedule_of(c), c.eval_batch_size)

    @classmethod
    def bench_phases(cls, config: DevNetConfig, shape: TrainShape) -> list[BenchPhase]:
        """One phase: ``train_balanced``, ``epochs x steps_per_epoch`` steps of ``batch_size`` images
        (balanced batches are always full); FLOPs of a ResNet-18 trunk at ``n_scales`` scales."""
        return [BenchPhase("train", config.epochs * config.steps_per_epoch, config.batch_size,
                           train_flops_per_image(config.backbone, shape.img_size, config.n_scales))]

    @classmethod
    def bench_step_overrides(cls, config: DevNetConfig, n_steps: int, shape: TrainShape) -> dict[str, Any]:
        return {"epochs": 1, "steps_per_epoch": n_steps}

    def _check_input(self, train: TrainSet) -> None:
        c = self.config
        check_variant(c.variant)
        check_trunk_input(c.backbone, c.n_scales, train.images.shape, "--set n_scales=1")

    def fit(self, train: TrainSet) -> DevNet:
        c = self.config
        self._check_input(train)
        if c.amp_bf16 and torch.device(train.device).type != "cuda":
            raise UserError(CPU_BF16_REFUSED)
        seed_everything(train.seed)
        parts = self.balanced_training(train.device, train.seed)
        images = to_uint8_tensor(train.images, train.device)
        steps: list[float] = []
        self.loss_history = train_balanced(parts.model, images, train.labels, parts.schedule, parts.loss,
                                           train.seed, speed=c.speed, step_losses=steps)
        self.flags = divergence_flags(steps)
        if c.bn_recalibration:
            recalibrate_batchnorm(self.network, images, normalise, c.eval_batch_size)
        self.info = {"weights": c.weights, "backbone": c.backbone, "variant": c.variant,
                     "final_loss": self.loss_history[-1] if self.loss_history else None}
        if c.amp_bf16 or c.channels_last:
            self.info.update(amp_bf16=c.amp_bf16, channels_last=c.channels_last)
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return predict(self.network, images, self.device, self.config.eval_batch_size, self.config.speed)

    def explain(self, images: np.ndarray) -> np.ndarray:
        """Gradient saliency of the image score (paper Eq. 9, the authors' localisation code)."""
        c = self.config
        self.network.eval()
        with frozen(self.network):
            return explain_images(self.network, images, normalise, self.device,
                                  sigma=c.saliency_sigma, batch_size=c.saliency_batch_size)
