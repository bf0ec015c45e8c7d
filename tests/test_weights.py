"""ImageNet weights come from the torch hub cache when they are there (as on a user's machine), and a
missing file without network is one line naming the path and ``--weights none``."""

from __future__ import annotations

import socket

import pytest
import torch

from fsad_bench.errors import UserError, WeightsUnavailableError
from fsad_bench.weights import (
    TORCHVISION_ARCHS,
    imagenet_state_dict,
    torchvision_constructor,
    weights_cache_path,
)
from fsad_methods.backbones import torchvision_model


def test_weights_in_the_torch_cache_are_the_ones_loaded(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weights_cache_path("alexnet")
    assert path.parent == tmp_path / "torch" / "hub" / "checkpoints" and path.name.startswith("alexnet-")
    torch.manual_seed(7)
    cached = torchvision_constructor("alexnet")(weights=None).state_dict()
    path.parent.mkdir(parents=True)
    torch.save(cached, path)
    model = torchvision_model("alexnet", "imagenet")
    for name, value in model.state_dict().items():
        assert torch.equal(value, cached[name]), name
    assert not torch.equal(torchvision_model("alexnet", "none").state_dict()["features.0.weight"],
                           cached["features.0.weight"])


def test_weights_neither_cached_nor_downloadable_are_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsUnavailableError) as err:
        imagenet_state_dict("resnet18")
    text = str(err.value)
    assert "\n" not in text and str(weights_cache_path("resnet18")) in text and "--weights none" in text


def test_every_named_architecture_exists_in_torchvision():
    for arch in TORCHVISION_ARCHS:
        assert callable(torchvision_constructor(arch)) and weights_cache_path(arch).suffix == ".pth"
    with pytest.raises(UserError, match="has no ImageNet weights"):
        weights_cache_path("resnet18_w16")
