"""DevNet's ablation variants (Table 5): forward shapes, losses against hand-computed values, the
named methods' defaults, and a few training steps of each variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import separable_set

from fsad_bench.detectors.base import Detector, TrainSet
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError
from fsad_bench.testing import check_detector
from fsad_methods.deviation_loss import deviation_loss
from fsad_methods.devnet import (
    VARIANTS,
    DevNet,
    DevNetConfig,
    DevNetNetwork,
    patch_deviation_loss,
    rep_deviation_loss,
)
from fsad_methods.devnet_ablation import (
    DevNetAlexNet,
    DevNetDS,
    DevNetPatchDS,
    DevNetRep,
    DevNetResNet50,
)
from fsad_methods.flos import FLOS
from fsad_methods.mil import topk_mil

NARROW = "resnet18_w16"  # 8 * 16 = 128 feature channels


def _net(variant: str, n_scales: int = 1, **kw) -> DevNetNetwork:
    torch.manual_seed(0)
    return DevNetNetwork(kw.pop("backbone", NARROW), "none", n_scales=n_scales, variant=variant, **kw).eval()


# ----------------------------------------------------------------------------------------------
# losses against hand computation

REF = torch.tensor([-1.0, 1.0, 3.0])  # mean 1, std (unbiased) 2


def test_patch_ds_loss_is_mean_of_per_cell_deviation_losses():
    cells = torch.tensor([[1.0, 3.0, -1.0],    # normal: dev 0, 1, -1 -> |dev| 0, 1, 1
                          [9.0, 1.0, 13.0]])   # anomaly: dev 4, 0, 6 -> max(0, 5 - dev) 1, 5, 0
    labels = torch.tensor([0, 1])
    loss = patch_deviation_loss(cells, labels, margin=5.0, reference=REF)
    assert loss.item() == pytest.approx((0 + 1 + 1 + 1 + 5 + 0) / 6)
    # the same as deviation_loss on every cell carrying its image's label
    per_cell = deviation_loss(cells.flatten(), torch.tensor([0, 0, 0, 1, 1, 1]), 5.0, reference=REF)
    assert loss.item() == pytest.approx(per_cell.item())
    # two scales (different cell counts): mean over each scale's cells, then over the scales
    half = torch.tensor([[3.0], [11.0]])  # dev 1 (normal) -> 1; dev 5 (anomaly) -> 0
    both = patch_deviation_loss([cells, half], labels, margin=5.0, reference=REF)
    assert both.item() == pytest.approx(((8 / 6) + (1 + 0) / 2) / 2)


def test_rep_loss_multivariate_reference_hand_computed():
    # reference columns: [-1, 1, 3] (mean 1, std 2) and [0, 2, 4] (mean 2, std 2)
    ref = torch.tensor([[-1.0, 0.0], [1.0, 2.0], [3.0, 4.0]])
    reps = torch.tensor([[1.0, 4.0],     # normal: dev (0, 1) -> |dev| 0, 1
                         [11.0, 4.0]])   # anomaly: dev (5, 1) -> max(0, 5 - dev) 0, 4
    loss = rep_deviation_loss(reps, torch.tensor([0, 1]), margin=5.0, reference=ref)
    assert loss.item() == pytest.approx((0 + 1 + 0 + 4) / 4)


def test_rep_loss_fresh_reference_is_standard_normal_per_dimension():
    gen = torch.Generator().manual_seed(0)
    reps = torch.zeros(1, 64)
    reps_anom = torch.full((1, 64), 5.0)
    loss = rep_deviation_loss(torch.cat([reps, reps_anom]), torch.tensor([0, 1]), generator=gen, n_ref=5000)
    assert loss.item() < 0.1  # normals at mu_R ~ 0 and anomalies at the margin cost ~ nothing


# ----------------------------------------------------------------------------------------------
# forward shapes and what each variant's score is

def test_unknown_variant_is_a_user_error():
    with pytest.raises(UserError, match="variant"):
        DevNetNetwork(NARROW, "none", variant="bogus")
    assert set(VARIANTS) == {"mil_ds", "ds", "patch_ds", "rep"}
    assert DevNetConfig().variant == "mil_ds"


def test_mil_ds_is_topk_of_cell_scores():
    net = _net("mil_ds", topk_ratio=0.25)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        cells = net.cell_scores(x).flatten(1)  # 2x2 map at 64 px
        assert cells.shape == (3, 4)
        assert torch.allclose(net(x), topk_mil(cells, 0.25))
        assert torch.equal(net.training_output(x), net(x))


def test_ds_is_pooled_features_to_linear_score_without_topk():
    net = _net("ds")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        score = net(x)
        assert score.shape == (3,)
        feats = net.trunk(x).mean(dim=(2, 3))                          # (3, 128)
        by_hand = feats @ net.head.weight.flatten() + net.head.bias
        assert torch.allclose(score, by_hand, atol=1e-5)
        # linear head: the same as the plain mean of the cell scores (authors' topk=0 switch)
        assert torch.allclose(score, topk_mil(net.cell_scores(x).flatten(1), 0.0), atol=1e-5)
        # no top-K: topk_ratio has no effect
        net.topk_ratio = 0.01
        assert torch.allclose(net(x), score)
        assert torch.equal(net.training_output(x), net(x))


def test_patch_ds_outputs_every_cell_and_scores_their_mean():
    net = _net("patch_ds", n_scales=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cells = net.training_output(x)
        assert [c.shape for c in cells] == [(2, 4), (2, 1)]  # 2x2 cells at 64 px, 1x1 at 32 px
        expected = (cells[0].mean(1) + cells[1].mean(1)) / 2
        assert torch.allclose(net(x), expected, atol=1e-6)


def test_rep_has_no_scoring_layer_and_outputs_the_representation():
    net = _net("rep", n_scales=2)
    assert net.head is None
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        rep = net.training_output(x)
        assert rep.shape == (2, 128)
        half = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="nearest")
        by_hand = (net.trunk(x).mean((2, 3)) + net.trunk(half).mean((2, 3))) / 2
        assert torch.allclose(rep, by_hand, atol=1e-6)
        # image score: mean |z| at the prior's mu = 0, sigma = 1, averaged over the scales
        score = (net.trunk(x).mean((2, 3)).abs().mean(1) + net.trunk(half).mean((2, 3)).abs().mean(1)) / 2
        assert torch.allclose(net(x), score, atol=1e-6)


def test_backbone_variants_forward():
    with torch.no_grad():
        alex = _net("ds", n_scales=2, backbone="alexnet")
        assert alex(torch.randn(2, 3, 128, 128)).shape == (2,)  # 3x3 and 1x1 maps
        r50 = _net("ds", n_scales=2, backbone="resnet50")
        assert r50.head.in_channels == 2048
        assert r50(torch.randn(2, 3, 64, 64)).shape == (2,)


# ----------------------------------------------------------------------------------------------
# the named methods

@pytest.mark.parametrize("cls, name, variant, backbone", [
    (DevNetRep, "devnet_rep", "rep", "resnet18"),
    (DevNetDS, "devnet_ds", "ds", "resnet18"),
    (DevNetPatchDS, "devnet_patchds", "patch_ds", "resnet18"),
    (DevNetAlexNet, "devnet_alexnet", "ds", "alexnet"),
    (DevNetResNet50, "devnet_resnet50", "ds", "resnet50"),
])
def test_named_methods(cls, name, variant, backbone):
    assert issubclass(cls, DevNet) and issubclass(cls, Detector)
    assert cls.name == name and load_detector(name) is cls  # registered under its name
    det = cls()
    assert (det.config.variant, det.config.backbone) == (variant, backbone)
    assert cls.required_weights(det.config) == [backbone]
    # spec / --set values still override the defaults
    cfg = cls.config_from_params({"weights": "none", "variant": "mil_ds"})
    assert (cfg.variant, cfg.backbone, cfg.weights) == ("mil_ds", backbone, "none")
    assert cls.required_weights(cfg) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_scores_and_explains(variant):
    x, y = separable_set(np.random.default_rng(0), 12, 4)
    det = DevNet(backbone=NARROW, weights="none", variant=variant, epochs=1, steps_per_epoch=3,
                 batch_size=8, lr=1e-3, bn_recalibration=True)
    det.fit(TrainSet(x, y, seed=0))
    assert len(det.loss_history) == 1 and all(math.isfinite(v) for v in det.loss_history)
    assert det.info["variant"] == variant
    scores = det.score(x)
    assert scores.shape == (16,) and np.isfinite(scores).all()
    maps = det.explain(x[-3:])
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1


def test_alexnet_too_small_images_is_a_user_error():
    x, y = separable_set(np.random.default_rng(0), 4, 2, size=64)  # half scale 32 px < 63 px
    with pytest.raises(UserError, match="at least 63 px"):
        DevNetAlexNet(weights="none", epochs=1, steps_per_epoch=1, batch_size=4).fit(TrainSet(x, y))


def test_flos_rejects_variants_and_keeps_working():
    x, y = separable_set(np.random.default_rng(0), 8, 2)
    with pytest.raises(UserError, match="variant"):
        FLOS(backbone=NARROW, weights="none", variant="rep", epochs=1, steps_per_epoch=1,
             batch_size=4).fit(TrainSet(x, y))
    det = FLOS(backbone=NARROW, weights="none", epochs=1, steps_per_epoch=2, batch_size=4).fit(TrainSet(x, y))
    assert det.score(x).shape == (10,)


def test_an_ablation_variant_passes_the_conformance_checks():
    smoke = dict(backbone=NARROW, weights="none", epochs=1, steps_per_epoch=2, batch_size=8,
                 bn_recalibration=True)  # the smoke budget's settings
    report = check_detector(DevNetRep, smoke)
    assert {"auc", "deterministic", "explain", "bench_phases"} <= set(report.passed)
