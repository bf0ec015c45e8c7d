"""Deep SVDD (Ruff et al., "Deep One-Class Classification", ICML 2018), one-class: normals only.

Faithful to the official code ``lukasruff/Deep-SVDD-PyTorch`` (CIFAR-10 network and README command):

* Network: the bias-free LeNet-type CNN of ``networks/cifar10_LeNet.py``: three blocks
  conv 5x5 (pad 2, bias=False) -> BatchNorm2d(eps=1e-4, affine=False) -> leaky ReLU -> maxpool 2x2,
  with 32/64/128 channels, then Linear(bias=False) -> rep_dim 128. The paper (DevNet sec. 6.3) keeps
  this network for DSVDD.
* Centre c: mean of the initial embeddings of the training normals (after pretraining), every
  |c_i| < 0.1 pushed to +-0.1 (:func:`push_away_from_zero`).
* Objective: one-class, mean ||phi(x) - c||^2 (default); or soft-boundary
  R^2 + 1/nu * mean(max(0, dist - R^2)) with R set after every batch to the (1 - nu)-quantile of
  the batch's distances once ``warm_up_epochs`` (official: 10) epochs have passed.
* Autoencoder pretraining (``CIFAR10_LeNet_Autoencoder``): the same encoder followed by
  BatchNorm1d(rep_dim, affine=False) and a mirrored decoder (rep reshaped to rep_dim/16 x 4 x 4,
  transposed convs 128/64/32/3 with BN + leaky ReLU and nearest 2x upsampling, sigmoid output),
  Xavier-uniform initialisation with the leaky-ReLU gain, per-sample squared error. Afterwards the
  encoder's state (weights and BN statistics) is loaded into the network with ``strict=True``, so a
  key mismatch (Deep SAD's official bug) fails instead of silently skipping the copy.
* Score: ||phi(x) - c||^2 (soft-boundary: dist - R^2, the same ranking).
* Optimisation (README CIFAR-10 command, source of the paper-budget defaults): Adam lr 1e-4,
  weight decay 0.5e-6, 150 epochs, MultiStepLR milestone 50 (x0.1), batch 200; pretraining Adam
  lr 1e-4, weight decay 0.5e-6, 350 epochs, milestone 250, batch 200. (The quick budget's 120 steps
  use lr 1e-3 for both phases: at 1e-4 so few steps barely move the network; docs/quick_budget.md.)
* Input: global contrast normalisation (l1) of every image, then min-max scaling with the minimum
  and maximum over the (GCN'd) training normals, as ``datasets/cifar10.py`` does per normal class.

Decisions (deviations) and why:

* Image size: the official network expects 32x32 (fc1 takes 128*4*4). We compute the flatten size
  from the input size at construction, so any size >= 8 works; at 32 px the network is identical.
  The decoder reaches the encoder's spatial sizes by nearest interpolation to explicit sizes
  (identical to the official 2x upsampling at 32 px). The paper budget runs DSVDD at 32 px (the
  original network, as the paper says it keeps it); ``--set dsvdd.img_size=448`` runs it at the
  benchmark size (fc1 then has 128*56*56 inputs).
* Input normalisation: GCN + min-max as the official code, not the ImageNet normalisation of the
  shared pipeline: the network is trained from scratch, and the autoencoder's sigmoid output can
  only reconstruct inputs in [0, 1]. GCN divides by the mean absolute deviation, floored at 1e-12
  (a constant image would otherwise give NaN).
* Centre computed with BatchNorm batch statistics (buffers restored) instead of eval mode; see
  :func:`batchstat_embeddings`. After pretraining both agree closely. Entries exactly 0 are pushed
  to +0.1 (the official code leaves them at 0; see :func:`push_away_from_zero`).
* Batches: seeded shuffled batches of the normals (DevNet's sampler, unbalanced), ``ceil(N/batch)``
  steps per epoch and never larger than N; the official DataLoader also shuffles but keeps a short
  last batch. Scheduler stepped after each epoch (the intended milestone semantics).
* Labelled anomalies are ignored (one-class method, ``uses_labelled_anomalies = False``).
* No rotation augmentation (the official code has none).
* ``bn_recalibration`` (off by default = official; on in the quick and smoke budgets): after
  training, one pass over the training normals replaces BN's running statistics, which after a few
  steps are still mostly their initial values (see :func:`recalibrate_batchnorm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.detectors.hparams import (
    BatchSize,
    Fraction,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
)
from fsad_bench.errors import UserError
from fsad_methods.dsvdd_loss import (
    one_class_loss,
    radius_from_distances,
    reconstruction_loss,
    soft_boundary_loss,
    soft_boundary_score,
)
from fsad_methods.svdd_common import (
    LoopSettings,
    embed,
    initial_centre,
    parse_milestones,
    squared_distance,
    train_loop,
)
from fsad_methods.training import (
    chunks,
    divergence_flags,
    recalibrate_batchnorm,
    seed_everything,
    to_uint8_tensor,
)

OBJECTIVES = ("one-class", "soft-boundary")


def _pooled_size(size: tuple[int, int], n_pools: int) -> tuple[int, int]:
    h, w = size
    for _ in range(n_pools):
        h, w = h // 2, w // 2
    return h, w


class LeNetEncoder(nn.Module):
    """The official CIFAR-10 Deep SVDD network phi, bias-free, for ``img_size`` inputs."""

    def __init__(self, img_size: tuple[int, int] = (32, 32), rep_dim: int = 128) -> None:
        super().__init__()
        h, w = _pooled_size(img_size, 3)
        if h < 1 or w < 1:
            raise UserError(f"Deep SVDD's LeNet needs images of at least 8x8 px, got {img_size}")
        self.rep_dim = rep_dim
        self.pool = nn.MaxPool2d(2, 2)
        self.conv1 = nn.Conv2d(3, 32, 5, bias=False, padding=2)
        self.bn2d1 = nn.BatchNorm2d(32, eps=1e-04, affine=False)
        self.conv2 = nn.Conv2d(32, 64, 5, bias=False, padding=2)
        self.bn2d2 = nn.BatchNorm2d(64, eps=1e-04, affine=False)
        self.conv3 = nn.Conv2d(64, 128, 5, bias=False, padding=2)
        self.bn2d3 = nn.BatchNorm2d(128, eps=1e-04, affine=False)
        self.fc1 = nn.Linear(128 * h * w, rep_dim, bias=False)  # official: 128 * 4 * 4 at 32 px

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.leaky_relu(self.bn2d1(self.conv1(x))))
        x = self.pool(F.leaky_relu(self.bn2d2(self.conv2(x))))
        x = self.pool(F.leaky_relu(self.bn2d3(self.conv3(x))))
        return self.fc1(x.flatten(1))


class LeNetAutoencoder(nn.Module):
    """The official ``CIFAR10_LeNet_Autoencoder``: encoder (same keys as phi) + mirrored decoder."""

    def __init__(self, img_size: tuple[int, int] = (32, 32), rep_dim: int = 128) -> None:
        super().__init__()
        if rep_dim % 16:
            raise UserError(f"rep_dim must be a multiple of 16 (reshaped to rep_dim/16 x 4 x 4), "
                            f"got {rep_dim}")
        self.encoder = LeNetEncoder(img_size, rep_dim)
        self.bn1d = nn.BatchNorm1d(rep_dim, eps=1e-04, affine=False)
        self.rep_dim = rep_dim
        # spatial sizes the decoder grows through: the encoder's maps in reverse, then the image
        self.sizes = [_pooled_size(img_size, k) for k in (3, 2, 1, 0)]
        self.deconv1 = nn.ConvTranspose2d(rep_dim // 16, 128, 5, bias=False, padding=2)
        self.bn2d4 = nn.BatchNorm2d(128, eps=1e-04, affine=False)
        self.deconv2 = nn.ConvTranspose2d(128, 64, 5, bias=False, padding=2)
        self.bn2d5 = nn.BatchNorm2d(64, eps=1e-04, affine=False)
        self.deconv3 = nn.ConvTranspose2d(64, 32, 5, bias=False, padding=2)
        self.bn2d6 = nn.BatchNorm2d(32, eps=1e-04, affine=False)
        self.deconv4 = nn.ConvTranspose2d(32, 3, 5, bias=False, padding=2)
        gain = nn.init.calculate_gain("leaky_relu")
        for layer in (self.encoder.conv1, self.encoder.conv2, self.encoder.conv3,
                      self.deconv1, self.deconv2, self.deconv3, self.deconv4):
            nn.init.xavier_uniform_(layer.weight, gain=gain)

    def _resize(self, x: torch.Tensor, k: int) -> torch.Tensor:
        size = self.sizes[k]
        return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn1d(self.encoder(x))
        x = F.leaky_relu(z.view(z.size(0), self.rep_dim // 16, 4, 4))
        x = self.deconv1(self._resize(x, 0))
        x = self._resize(F.leaky_relu(self.bn2d4(x)), 1)
        x = self.deconv2(x)
        x = self._resize(F.leaky_relu(self.bn2d5(x)), 2)
        x = self.deconv3(x)
        x = self._resize(F.leaky_relu(self.bn2d6(x)), 3)
        return torch.sigmoid(self.deconv4(x))


def copy_encoder_weights(autoencoder: LeNetAutoencoder, net: LeNetEncoder) -> None:
    """Initialise phi from the pretrained encoder (weights and BN statistics), all keys or fail."""
    net.load_state_dict(autoencoder.encoder.state_dict(), strict=True)


def global_contrast_normalisation(x: torch.Tensor) -> torch.Tensor:
    """Official ``global_contrast_normalization(x, scale='l1')`` per image of a (B,C,H,W) batch."""
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    return x / x.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)


@dataclass
class DeepSVDDConfig:
    """Deep SVDD hyper-parameters; defaults = official README CIFAR-10 command (paper budget)."""

    objective: Literal["one-class", "soft-boundary"] = "one-class"
    nu: Fraction = 0.1
    warm_up_epochs: NonNegInt = 10
    rep_dim: PositiveInt = 128
    epochs: PositiveInt = 150
    lr: PositiveFloat = 1e-4
    lr_milestones: tuple[PositiveInt, ...] = (50,)
    batch_size: BatchSize = 200  # BatchNorm in training mode needs two images
    weight_decay: NonNegFloat = 0.5e-6
    steps_per_epoch: NonNegInt = 0  # 0 = one pass over the training normals
    pretrain: bool = True
    ae_epochs: NonNegInt = 350  # 0 = no pretraining
    ae_lr: PositiveFloat = 1e-4
    ae_lr_milestones: tuple[PositiveInt, ...] = (250,)
    ae_batch_size: BatchSize = 200
    ae_weight_decay: NonNegFloat = 0.5e-6
    ae_steps_per_epoch: NonNegInt = 0
    bn_recalibration: bool = False  # True: BN statistics re-estimated after training (short budgets)
    eval_batch_size: PositiveInt = 64

    def __post_init__(self) -> None:
        self.lr_milestones = parse_milestones(self.lr_milestones)
        self.ae_lr_milestones = parse_milestones(self.ae_lr_milestones)
        if self.objective not in OBJECTIVES:
            raise UserError(f"dsvdd objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 0 < self.nu <= 1:
            raise UserError(f"dsvdd nu must be in (0, 1], got {self.nu}")


class DeepSVDD(Detector):
    """One-class Deep SVDD on the official bias-free LeNet with autoencoder pretraining."""

    name = "dsvdd"
    display_name = "DSVDD"
    paper_column = "DSVDD"
    budgets = {
        # official Deep-SVDD-PyTorch README, CIFAR-10 command; the original 32x32 LeNet-type network
        "paper": {"img_size": 32, "objective": "one-class", "epochs": 150, "lr": 1e-4, "lr_milestones": [50],
                  "batch_size": 200, "weight_decay": 0.5e-6, "pretrain": True, "ae_epochs": 350,
                  "ae_lr": 1e-4, "ae_lr_milestones": [250], "ae_batch_size": 200, "ae_weight_decay": 0.5e-6},
        # the original 32 px network; 40 autoencoder steps then 80 one-class steps at lr 1e-3 (the
        # official 1e-4 barely moves the network in so few steps)
        "quick": {"img_size": 32, "ae_epochs": 1, "ae_steps_per_epoch": 40, "ae_batch_size": 32,
                  "ae_lr": 1e-3, "ae_lr_milestones": [], "epochs": 2, "steps_per_epoch": 40, "batch_size": 32,
                  "lr": 1e-3, "lr_milestones": [], "bn_recalibration": True},
        "smoke": {"img_size": 32, "ae_epochs": 1, "ae_steps_per_epoch": 1, "ae_batch_size": 8, "epochs": 1,
                  "steps_per_epoch": 2, "batch_size": 8, "lr_milestones": [], "ae_lr_milestones": [],
                  "bn_recalibration": True},
    }
    seconds_per_cell = {"smoke": 0.78, "quick": 12.2}
    Config = DeepSVDDConfig
    uses_labelled_anomalies = False

    @classmethod
    def bench_phases(cls, config: DeepSVDDConfig, shape: TrainShape) -> list[BenchPhase]:
        """The autoencoder pretraining (when ``pretrain`` and ``ae_epochs > 0``), then the one-class
        phase; each ``train_loop`` over the normals only: epochs x (steps per epoch or one pass,
        ``ceil(n_normal / batch)``) steps of ``min(batch, n_normal)`` images."""
        def phase(name: str, epochs: int, batch_size: int, steps_per_epoch: int) -> BenchPhase:
            batch = max(min(batch_size, shape.n_normal), 1)
            per_epoch = steps_per_epoch or math.ceil(shape.n_normal / batch)
            return BenchPhase(name, epochs * per_epoch, batch)

        main = phase("one-class", config.epochs, config.batch_size, config.steps_per_epoch)
        if not (config.pretrain and config.ae_epochs > 0):
            return [main]
        return [phase("autoencoder", config.ae_epochs, config.ae_batch_size, config.ae_steps_per_epoch), main]

    @classmethod
    def bench_step_overrides(cls, config: DeepSVDDConfig, n_steps: int, shape: TrainShape
                             ) -> dict[str, Any]:
        over: dict[str, Any] = {"epochs": 1, "steps_per_epoch": n_steps}
        if config.pretrain and config.ae_epochs > 0:  # a budget without pretraining keeps none
            over.update(ae_epochs=1, ae_steps_per_epoch=n_steps)
        return over

    @classmethod
    def min_img_size(cls, config: DeepSVDDConfig) -> int:
        """The LeNet's three 2x2 pools need 8 px."""
        return 8

    # -- input transform ------------------------------------------------------------------------
    def _fit_scaling(self, images: torch.Tensor) -> None:
        lo, hi = float("inf"), float("-inf")
        for s in chunks(len(images), self.config.eval_batch_size):
            g = global_contrast_normalisation(images[s].float().div(255.0))
            lo, hi = min(lo, g.min().item()), max(hi, g.max().item())
        self._min, self._range = lo, max(hi - lo, 1e-12)

    def transform(self, batch_u8: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> GCN (l1) -> min-max scaled with the training normals' range."""
        return (global_contrast_normalisation(batch_u8.float().div(255.0)) - self._min) / self._range

    # -- training -------------------------------------------------------------------------------
    def pretrain(self, images: torch.Tensor, img_size: tuple[int, int], seed: int) -> list[float]:
        """Train the autoencoder on the normals and copy its encoder into ``self.network``."""
        c = self.config
        self.autoencoder = LeNetAutoencoder(img_size, c.rep_dim).to(images.device)
        settings = LoopSettings(c.ae_epochs, c.ae_batch_size, c.ae_lr, c.ae_weight_decay, c.ae_lr_milestones,
                                c.ae_steps_per_epoch)

        def step_loss(batch: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
            x = self.transform(batch)
            return reconstruction_loss(self.autoencoder(x), x)

        steps: list[float] = []
        history = train_loop(self.autoencoder.parameters(), self.autoencoder, images,
                             np.zeros(len(images), dtype=np.int64), settings, step_loss, seed,
                             step_losses=steps)
        self.flags += divergence_flags(steps, "autoencoder pretraining")
        copy_encoder_weights(self.autoencoder, self.network)
        return history

    def fit(self, train: TrainSet) -> DeepSVDD:
        c = self.config
        seed_everything(train.seed)
        self.device = train.device
        normals = train.images[train.labels == 0]  # one-class: labelled anomalies are not used
        images = to_uint8_tensor(normals, train.device)
        self.flags = []  # both phases add theirs
        img_size = (normals.shape[1], normals.shape[2])
        self._fit_scaling(images)
        self.network = LeNetEncoder(img_size, c.rep_dim).to(train.device)
        ae_history = self.pretrain(images, img_size, train.seed) if c.pretrain and c.ae_epochs > 0 else []

        self.c = initial_centre(self.network, images, self.transform, c.eval_batch_size)
        self.radius = 0.0
        soft = c.objective == "soft-boundary"
        last: dict[str, torch.Tensor] = {}

        def step_loss(batch: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
            dist = squared_distance(self.network(self.transform(batch)), self.c)
            last["dist"] = dist.detach()
            return soft_boundary_loss(dist, self.radius, c.nu) if soft else one_class_loss(dist)

        def after_step(epoch: int, _loss: torch.Tensor) -> None:
            if soft and epoch >= c.warm_up_epochs:  # official: R solved on each batch after warm-up
                self.radius = radius_from_distances(last["dist"], c.nu)

        settings = LoopSettings(c.epochs, c.batch_size, c.lr, c.weight_decay, c.lr_milestones,
                                c.steps_per_epoch)
        steps: list[float] = []
        self.loss_history = train_loop(self.network.parameters(), self.network, images,
                                       np.zeros(len(normals), dtype=np.int64), settings, step_loss,
                                       train.seed + 1, after_step, step_losses=steps)
        self.flags += divergence_flags(steps, "one-class training")
        if c.bn_recalibration:
            recalibrate_batchnorm(self.network, images, self.transform, c.eval_batch_size)
        self.info = {"weights": "none", "objective": c.objective, "pretrain": bool(ae_history),
                     "n_train_normal": int(len(normals)), "n_ignored_anomalies": train.n_anomaly,
                     "ae_final_loss": ae_history[-1] if ae_history else None,
                     "final_loss": self.loss_history[-1] if self.loss_history else None,
                     "radius": self.radius if soft else None}
        return self

    # -- scoring --------------------------------------------------------------------------------
    def embed(self, images: np.ndarray) -> torch.Tensor:
        """Eval-mode embeddings phi(x) of uint8 (N,H,W,3) images."""
        return embed(self.network, images, lambda a: self.transform(to_uint8_tensor(a, self.device)),
                     self.config.eval_batch_size)

    def score(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros(0, dtype=np.float32)
        dist = squared_distance(self.embed(images), self.c)
        if self.config.objective == "soft-boundary":
            dist = soft_boundary_score(dist, self.radius)
        return dist.float().cpu().numpy()
