"""torchvision's ImageNet weights, by architecture name: where the torch hub cache keeps them, and
fetching them once, before a grid starts (a printed step of ``fsad-bench run``, never a side effect of
resolving the grid).

A detector says which weights it will load (``Detector.required_weights``); the driver checks each
one here before the first cell, so a missing file is one line (exit 2), not a grid of failed cells.
Detectors load them with :func:`imagenet_state_dict`: from the cache when present (as on a normal
user's machine), else one download attempt; if that fails a :class:`WeightsUnavailableError` says
where to put the file or to pass ``--weights none``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fsad_bench.errors import UserError, WeightsUnavailableError

WEIGHT_CHOICES = ("imagenet", "none")

# arch -> (torchvision.models constructor, its ImageNet weights enum), by name: torchvision is imported
# only when a network is built or its weights are looked up (importing it costs seconds per process,
# which a dry run, a report or a worker of a plugin without a torchvision backbone need not pay)
TORCHVISION_ARCHS = {
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "wide_resnet50_2": ("wide_resnet50_2", "Wide_ResNet50_2_Weights"),
    "alexnet": ("alexnet", "AlexNet_Weights"),
    "vgg16": ("vgg16", "VGG16_Weights"),
}


def torchvision_constructor(arch: str) -> Callable[..., torch.nn.Module]:
    """torchvision's constructor of ``arch`` (e.g. ``torchvision.models.resnet18``)."""
    _known(arch)
    import torchvision

    return getattr(torchvision.models, TORCHVISION_ARCHS[arch][0])


def _imagenet_enum(arch: str) -> Any:
    """torchvision's ImageNet weights enum of ``arch``; an arch without one is a one-line UserError."""
    _known(arch)
    import torchvision

    return getattr(torchvision.models, TORCHVISION_ARCHS[arch][1]).IMAGENET1K_V1


def check_weights_choice(weights: str) -> None:
    if weights not in WEIGHT_CHOICES:
        raise UserError(f"unknown weights {weights!r}; use one of {', '.join(WEIGHT_CHOICES)}")


def _known(arch: str) -> None:
    if arch not in TORCHVISION_ARCHS:
        raise UserError(f"backbone {arch!r} has no ImageNet weights (those that have: "
                        f"{', '.join(TORCHVISION_ARCHS)}); choose one of them (e.g. --set backbone=resnet18) "
                        "or pass --weights none")


def weights_cache_path(arch: str) -> Path:
    """Where torchvision keeps (or would keep) the ImageNet checkpoint of ``arch``."""
    url = _imagenet_enum(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_state_dict(arch: str, download_timeout_s: float = 20.0) -> dict:
    """ImageNet weights of ``arch`` from the torch cache, downloading once if possible."""
    enum = _imagenet_enum(arch)
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


def ensure_weights(arch: str) -> bool:
    """Make sure the ImageNet weights of ``arch`` are in the torch cache (download them once if not).
    Returns True when they were already cached; raises the one-line error that says what to do."""
    if weights_cache_path(arch).exists():
        return True
    imagenet_state_dict(arch)
    return False
