"""Feature extractors from torchvision (ImageNet weights through :mod:`fsad_bench.weights`) and the
narrow ResNet-18 of the CPU budgets.

``weights="imagenet"`` loads torchvision's ImageNet weights from the torch hub cache (see
:mod:`fsad_bench.weights`); ``weights="none"`` gives a randomly initialised network (seeded by the
caller).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from fsad_bench.errors import UserError
from fsad_bench.weights import (
    TORCHVISION_ARCHS,
    check_weights_choice,
    imagenet_state_dict,
    torchvision_constructor,
)

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

#: feature channels of each torchvision trunk (ResNet conv1..layer4, AlexNet / VGG ``.features``)
CHANNELS = {"resnet18": 512, "resnet50": 2048, "wide_resnet50_2": 2048, "alexnet": 256, "vgg16": 512}


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


def check_trunk_input(arch: str, n_scales: int, image_shape: tuple[int, ...], fewer_scales: str) -> None:
    """Refuse, with one line, images whose smallest scale (each further scale halves the side) is
    below what ``arch``'s trunk accepts at all (where a fit would crash; the driver asks
    :func:`min_input_size` for the stricter minimum). ``fewer_scales`` is the ``--set`` that helps."""
    need = MIN_INPUT.get(arch, 1)
    smallest = min(image_shape[1:3]) // 2 ** max(n_scales - 1, 0)
    if smallest < need:
        raise UserError(f"backbone {arch} needs inputs of at least {need} px, but the "
                        f"{'half-size scale' if n_scales > 1 else 'image'} of these "
                        f"{image_shape[1]}x{image_shape[2]} images is {smallest} px; "
                        f"use larger images or {fewer_scales}")


def torchvision_model(arch: str, weights: str) -> nn.Module:
    """The full torchvision model, randomly initialised or with ImageNet weights."""
    check_weights_choice(weights)
    if arch not in TORCHVISION_ARCHS:
        raise UserError(f"unknown backbone {arch!r}; known: {', '.join(TORCHVISION_ARCHS)}")
    model = torchvision_constructor(arch)(weights=None)
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
    channels = CHANNELS[arch]
    if arch.startswith("resnet"):
        trunk = nn.Sequential(*list(model.children())[:-2])
    else:
        trunk = model.features
    return trunk, channels
