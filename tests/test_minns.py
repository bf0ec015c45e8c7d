"""MINNS: MIL pooling and deep-supervision loss against hand-computed values; learns a separable set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import separable_set as tiny_set

from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import UserError
from fsad_bench.metrics import image_metrics
from fsad_bench.testing import check_detector
from fsad_methods.minns import MINNS, MINNSConfig, MINNSNetwork
from fsad_methods.minns_loss import (
    deep_supervision_loss,
    deep_supervision_score,
    lse_pool,
    max_pool,
    mean_pool,
    mil_pool,
)
from fsad_methods.training import Schedule

# one bag (B = 1) of three instances (N = 3) with two features (D = 2)
BAG = torch.tensor([[[1.0, 0.0], [-2.0, 4.0], [3.0, 1.0]]])


# ----------------------------------------------------------------------------------------------
# MIL pooling

def test_max_and_mean_pooling_hand_computed():
    assert max_pool(BAG).tolist() == [[3.0, 4.0]]
    assert mean_pool(BAG)[0].tolist() == pytest.approx([2 / 3, 5 / 3])


def test_lse_pooling_hand_computed():
    # r = 1 (authors' code): log((e^1 + e^-2 + e^3) / 3), log((e^0 + e^4 + e^1) / 3)
    assert lse_pool(BAG, r=1.0)[0].tolist() == pytest.approx([2.0342329451, 2.9672716151], rel=1e-6)
    # r = 2: (1/2) log((e^2 + e^-4 + e^6) / 3), (1/2) log((e^0 + e^8 + e^2) / 3)
    assert lse_pool(BAG, r=2.0)[0].tolist() == pytest.approx([2.4597911108, 3.4520989868], rel=1e-6)
    manual = torch.log(torch.exp(2 * BAG).mean(dim=1)) / 2
    assert torch.allclose(lse_pool(BAG, r=2.0), manual)


def test_lse_between_mean_and_max_and_limits():
    x = torch.randn(4, 7, 5, generator=torch.Generator().manual_seed(0))
    for r in (0.1, 1.0, 5.0):
        lse = lse_pool(x, r)
        assert (lse >= mean_pool(x) - 1e-5).all() and (lse <= max_pool(x) + 1e-5).all()
    xd = x.double()  # r -> 0 divides rounding errors by r: check that limit in float64
    assert torch.allclose(lse_pool(xd, r=1e-6), mean_pool(xd), atol=1e-5)
    assert torch.allclose(lse_pool(x, r=1e3), max_pool(x), atol=5e-3)  # max - log(7)/r
    # stable where exp overflows float32
    big = torch.tensor([[[1000.0], [1000.0]]])
    assert lse_pool(big, r=1.0).item() == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        lse_pool(x, r=0.0)


def test_mil_pool_dispatch_and_axis():
    assert torch.equal(mil_pool(BAG, "max"), max_pool(BAG))
    assert torch.equal(mil_pool(BAG, "mean"), mean_pool(BAG))
    assert torch.equal(mil_pool(BAG, "lse", r=2.0), lse_pool(BAG, 2.0))
    # the network's layout (B, C, N): pooling over the last axis gives the same bag feature
    assert torch.equal(mil_pool(BAG.transpose(1, 2), "max", dim=2), max_pool(BAG))
    with pytest.raises(ValueError):
        mil_pool(BAG, "median")


# ----------------------------------------------------------------------------------------------
# loss and score

def test_deep_supervision_loss_hand_computed():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])  # (B = 2 bags, L = 2 outputs)
    labels = torch.tensor([0, 1])
    # output 1: BCE(0 | y=0) = log 2, BCE(-1 | y=1) = log(1 + e);   mean 1.0032044340
    # output 2: BCE(2 | y=0) = log(1 + e^2), BCE(1 | y=1) = log(1 + e^-1);   mean 1.2200948493
    out1 = (math.log(2) + math.log(1 + math.e)) / 2
    out2 = (math.log(1 + math.e ** 2) + math.log(1 + math.exp(-1))) / 2
    assert deep_supervision_loss(logits, labels).item() == pytest.approx((out1 + out2) / 2, rel=1e-6)
    assert (out1 + out2) / 2 == pytest.approx(1.1116496417, rel=1e-9)
    # one output = plain BCE
    single = deep_supervision_loss(logits[:, 0], labels)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    assert single.item() == pytest.approx(bce.item())


def test_deep_supervision_score():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0], [20.0, 20.0], [25.0, 25.0]])
    prob = deep_supervision_score(logits, "prob")
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert prob[:2].tolist() == pytest.approx([(0.5 + sig(2)) / 2, (sig(-1) + sig(1)) / 2])
    # float64: confident bags keep their order instead of all saturating to 1.0 (as float32 would)
    assert prob.dtype == torch.float64 and prob[3] > prob[2]
    assert deep_supervision_score(logits, "logit").tolist() == [1.0, 0.0, 20.0, 25.0]


# ----------------------------------------------------------------------------------------------
# network

def test_network_layers_and_outputs():
    torch.manual_seed(0)
    net = MINNSNetwork("resnet18", "none").eval()
    assert [h.in_features for h in net.heads] == [256, 512]  # layer3, layer4 of ResNet-18
    assert all(torch.count_nonzero(h.bias) == 0 for h in net.heads)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
        mid = net.lower(x)
        last = net.last(mid)
    assert out.shape == (2, 2) and mid.shape == (2, 256, 4, 4) and last.shape == (2, 512, 2, 2)
    # eval mode (no dropout), max pooling: head(max over cells of the layer's map)
    with torch.no_grad():
        expected = torch.stack([net.heads[0](mid.amax(dim=(2, 3))), net.heads[1](last.amax(dim=(2, 3)))], 1)
    assert torch.allclose(out, expected.squeeze(-1), atol=1e-5)
    plain = MINNSNetwork("resnet18_w16", "none", pooling="mean", deep_supervision=False).eval()
    assert [h.in_features for h in plain.heads] == [128]
    assert plain(x).shape == (2, 1)


def test_non_resnet_backbone_and_bad_config_are_user_errors():
    with pytest.raises(UserError, match="ResNet"):
        MINNSNetwork("alexnet", "none")
    x, y = tiny_set(np.random.default_rng(0), 4, 2)
    bad_configs = (dict(pooling="median"), dict(score="rank"), dict(pooling="lse", lse_r=0.0),
                   dict(dropout=1.0))
    for bad in bad_configs:
        with pytest.raises(UserError):
            MINNS(**bad).fit(TrainSet(x, y))


def test_config_defaults():
    c = MINNSConfig()
    for f in Schedule.__dataclass_fields__:  # DevNet's optimiser (paper: same settings as DevNet)
        assert getattr(c, f) == getattr(Schedule(), f), f
    assert (c.backbone, c.pooling, c.lse_r, c.dropout, c.deep_supervision, c.score) == \
        ("resnet18", "max", 1.0, 0.5, True, "prob")
    assert MINNS.required_weights(c) == ["resnet18"]
    assert MINNS.required_weights(MINNSConfig(weights="none")) == []


# ----------------------------------------------------------------------------------------------
# training

FAST = dict(backbone="resnet18_w16", weights="none", epochs=3, steps_per_epoch=10, batch_size=16, lr=1e-3,
            lr_step_epochs=3)


def _fit_auc(seed: int, **overrides) -> tuple[float, MINNS]:
    rng = np.random.default_rng(seed)
    x, y = tiny_set(rng, 40, 6)
    xt, yt = tiny_set(rng, 20, 20)
    det = MINNS(MINNSConfig(**{**FAST, **overrides})).fit(TrainSet(x, y, seed=seed))
    scores = det.score(xt)
    assert scores.shape == (40,) and np.isfinite(scores).all()
    return image_metrics(yt, scores)["auc_roc"], det


@pytest.mark.parametrize("pooling", ["max", "lse"])
def test_learns_separable_set(pooling):
    auc, det = _fit_auc(0, pooling=pooling, bn_recalibration=pooling == "lse")
    assert auc > 0.8
    assert det.info["pooling"] == pooling and det.info["deep_supervision"] is True


def test_seeded_fit_is_reproducible():
    rng = np.random.default_rng(1)
    x, y = tiny_set(rng, 12, 4)
    cfg = MINNSConfig(**{**FAST, "epochs": 1, "steps_per_epoch": 3, "batch_size": 8})
    a = MINNS(cfg).fit(TrainSet(x, y, seed=3)).score(x)
    b = MINNS(cfg).fit(TrainSet(x, y, seed=3)).score(x)
    assert np.array_equal(a, b)


def test_minns_passes_the_conformance_checks():
    # the smoke budget's settings with 6 steps at lr 1e-3: 2 steps do not separate the tiny set
    params = dict(backbone="resnet18_w16", weights="none", epochs=1, steps_per_epoch=6, batch_size=8, lr=1e-3,
                  bn_recalibration=True)
    report = check_detector(MINNS, params)
    assert {"auc", "deterministic", "explain", "bench_phases"} <= set(report.passed)
