"""Feature extractors from torchvision, with ImageNet weights loaded only from the torch cache.

``weights="imagenet"`` loads torchvision's ImageNet weights: from the torch hub cache when present
(as on a normal user's machine), else one download attempt; if that fails a
:class:`WeightsUnavailableError` says where to put the file or to pass ``--weights none``.
``weights="none"`` gives a randomly initialised network (seeded by the caller).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

import torch
import torchvision
from torch import nn

from fsad_bench.errors import UserError, WeightsUnavailableError

WEIGHT_CHOICES = ("imagenet", "none")
#: the ``weights`` field of a detector config
Weights = Literal["imagenet", "none"]
#: the ``backbone`` field of a detector config: torchvision's architectures and our narrow ResNet-18s
Backbone = Literal["resnet18", "resnet50", "alexnet", "vgg16", "resnet18_w16", "resnet18_w32"]
#: Total stride of a ResNet trunk (conv1..layer4): a smaller input still gives a 1x1 feature map, but its
#: one cell then sees mostly zero padding, so the driver refuses such sizes.
RESNET_STRIDE = 32
#: Smallest input side (px) the other trunks accept at all, measured: AlexNet's ``features`` fail below
#: 63 px (three 3x3/2 max-pools after the 11x11/4 conv), VGG16's below 32 (five 2x2 pools).
MIN_INPUT = {"alexnet": 63, "vgg16": 32}

# arch -> (torchvision constructor, weights enum, feature channels)
_ARCHS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, 2048),
    "alexnet": (torchvision.models.alexnet, torchvision.models.AlexNet_Weights.IMAGENET1K_V1, 256),
    "vgg16": (torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1, 512),
}


#: ResNet-18 forward at 224 px: 1.82 G multiply-accumulates (torchvision's "GFLOPS" figure).
RESNET18_GMACS_224 = 1.82


def train_flops_per_image(arch: str, img_size: int, n_scales: int = 1) -> float | None:
    """Forward + backward FLOPs of one training image through a ResNet-18 trunk, else None (unknown).

    3 x 2 x 1.82e9 x (size/224)^2 x scales: backward = 2 x forward, 2 FLOPs per multiply-accumulate
    (the count of a matmul roofline's 2 n^3); each further scale at half the side adds 1/4 of the
    previous one (DevNet's two scales: x 1.25). Heads, pooling and losses are negligible.
    """
    if arch != "resnet18":
        return None
    scales = sum(0.25 ** s for s in range(n_scales))
    return 3 * 2 * RESNET18_GMACS_224 * 1e9 * (img_size / 224) ** 2 * scales


def min_input_size(arch: str) -> int:
    """Smallest image side (px) one scale of ``arch``'s trunk is run at: the measured minimum of AlexNet
    and VGG16, the stride for ResNets."""
    return MIN_INPUT.get(arch, RESNET_STRIDE)


def check_weights_choice(weights: str) -> None:
    if weights not in WEIGHT_CHOICES:
        raise UserError(f"unknown weights {weights!r}; use one of {', '.join(WEIGHT_CHOICES)}")


def weights_cache_path(arch: str) -> Path:
    """Where torchvision keeps (or would keep) the ImageNet checkpoint of ``arch``."""
    url = _ARCHS[arch][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_state_dict(arch: str, download_timeout_s: float = 20.0) -> dict:
    """ImageNet weights of ``arch`` from the torch cache, downloading once if possible."""
    if arch in NARROW:
        raise UserError(f"backbone {arch} has no ImageNet weights (the CPU budgets' narrow ResNet); "
                        "add --set backbone=resnet18 to use ImageNet weights, or pass --weights none")
    if arch not in _ARCHS:
        raise UserError(f"no ImageNet weights for backbone {arch!r}; known: {', '.join(_ARCHS)}")
    enum = _ARCHS[arch][1]
    path = weights_cache_path(arch)
    if not path.exists():
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(download_timeout_s)  # a dead network must not hang a grid
        try:
            return enum.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"ImageNet weights for {arch} are not in the torch cache ({path}) and could not be "
                f"downloaded ({type(exc).__name__}); copy {enum.url} to that path, or pass --weights none"
            ) from None
        finally:
            socket.setdefaulttimeout(old)
    return torch.load(path, map_location="cpu", weights_only=True)


def ensure_weights(arch: str, weights: str) -> None:
    """Fail early (before a grid starts) when ImageNet weights are asked for but unavailable."""
    check_weights_choice(weights)
    if weights == "imagenet":
        imagenet_state_dict(arch)


def torchvision_model(arch: str, weights: str) -> nn.Module:
    """The full torchvision model, randomly initialised or with ImageNet weights."""
    check_weights_choice(weights)
    if arch not in _ARCHS:
        raise UserError(f"unknown backbone {arch!r}; known: {', '.join(_ARCHS)}")
    model = _ARCHS[arch][0](weights=None)
    if weights == "imagenet":
        model.load_state_dict(imagenet_state_dict(arch))
    return model


def narrow_resnet18(width: int = 16) -> nn.Module:
    """ResNet-18's topology (stem, 4 stages of 2 BasicBlocks, stride 32) at ``width`` base channels.

    Not in the paper: the CPU-sized ``quick`` budget uses it (width 16 = 1/4 of ResNet-18's
    channels, ~1/16 of its FLOPs) so a grid trains from random init in minutes. No ImageNet weights
    exist for it; reports name the backbone.
    """
    from torchvision.models.resnet import BasicBlock

    def stage(inp: int, out: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or inp != out:
            down = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        return nn.Sequential(BasicBlock(inp, out, stride, down), BasicBlock(out, out))

    w = width
    return nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1), stage(w, w, 1), stage(w, 2 * w, 2), stage(2 * w, 4 * w, 2),
                         stage(4 * w, 8 * w, 2))


NARROW = {"resnet18_w16": 16, "resnet18_w32": 32}


def feature_extractor(arch: str, weights: str) -> tuple[nn.Module, int]:
    """Convolutional trunk (ResNet conv1..layer4, AlexNet/VGG ``.features``) and its channel count.

    As in the authors' code, the ResNet trunk drops avgpool and fc; stride 32.
    """
    if arch in NARROW:
        if weights != "none":
            imagenet_state_dict(arch)  # raises the UserError that says what to do
        return narrow_resnet18(NARROW[arch]), 8 * NARROW[arch]
    model = torchvision_model(arch, weights)
    channels = _ARCHS[arch][2]
    if arch.startswith("resnet"):
        trunk = nn.Sequential(*list(model.children())[:-2])
    else:
        trunk = model.features
    return trunk, channels
