"""FLOS: focal loss against hand-computed values and torchvision, logit wiring, learns a separable set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import separable_set as tiny_set
from torchvision.ops import sigmoid_focal_loss

from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import UserError
from fsad_bench.metrics import image_metrics
from fsad_bench.testing import check_detector
from fsad_methods.devnet import DevNetConfig
from fsad_methods.flos import FLOS, FLOSConfig, FLOSNetwork, topk_signed_mean
from fsad_methods.flos_loss import binary_focal_loss
from fsad_methods.training import Schedule

# ----------------------------------------------------------------------------------------------
# focal loss

def test_focal_loss_hand_computed():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0])
    labels = torch.tensor([0, 1, 1, 0])
    # p_t = 0.5, sigmoid(2), sigmoid(-1), 1 - sigmoid(3); FL = (1 - p_t)^2 * -log(p_t)
    expected = [0.25 * math.log(2), 0.0018035628352, 0.7018683034114, 2.7662804410252]
    per_sample = binary_focal_loss(logits, labels, alpha=1.0, gamma=2.0, reduction="none")
    assert per_sample.tolist() == pytest.approx(expected, rel=1e-5)
    assert binary_focal_loss(logits, labels).item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    assert binary_focal_loss(logits, labels, reduction="sum").item() == pytest.approx(sum(expected), rel=1e-5)
    # alpha is a plain multiplier of every sample (normals too)
    assert binary_focal_loss(logits, labels, alpha=0.5).item() == pytest.approx(sum(expected) / 8, rel=1e-5)


def test_focal_loss_gamma0_is_binary_cross_entropy():
    logits = torch.tensor([-3.0, -0.2, 0.7, 4.0])
    labels = torch.tensor([1, 0, 1, 0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    assert binary_focal_loss(logits, labels, gamma=0.0).item() == pytest.approx(bce.item(), rel=1e-6)


def test_focal_loss_agrees_with_torchvision():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, generator=gen) * 4
    labels = (torch.rand(64, generator=gen) > 0.5).long()
    ours = binary_focal_loss(logits, labels, alpha=1.0, gamma=2.0, reduction="none")
    # torchvision's alpha < 0 switches class balancing off: the authors' alpha = 1 multiplier
    tv = sigmoid_focal_loss(logits, labels.float(), alpha=-1, gamma=2.0, reduction="none")
    assert torch.allclose(ours, tv, rtol=1e-5, atol=1e-7)
    # with Lin et al.'s balancing, torchvision = ours x (alpha for anomalies, 1 - alpha for normals)
    tv_bal = sigmoid_focal_loss(logits, labels.float(), alpha=0.25, gamma=2.0, reduction="none")
    weight = torch.where(labels == 1, 0.25, 0.75)
    assert torch.allclose(ours * weight, tv_bal, rtol=1e-5, atol=1e-7)


def test_focal_loss_finite_and_right_gradient_sign_at_extremes():
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    labels = torch.tensor([1, 0, 0, 1])
    loss = binary_focal_loss(logits, labels, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # well-classified samples cost ~0; misclassified ones ~ |logit| (focal weight -> 1)
    assert loss.item() == pytest.approx(200.0, rel=1e-4)
    assert logits.grad[2] > 0 and logits.grad[3] < 0


# ----------------------------------------------------------------------------------------------
# logit wiring

def test_topk_signed_mean_hand_computed():
    cells = torch.tensor([[1.0, -4.0, 2.0, 0.5, -0.1, 3.0, 0.0, 0.2, 0.3, 0.4]])
    # k = 2: the two largest signed scores 3, 2 (not |-4|) -> 2.5
    assert topk_signed_mean(cells, 0.2).item() == pytest.approx(2.5)
    # all non-positive: the top two are 0 and -0.1 -> -0.05
    assert topk_signed_mean(-cells.abs(), 0.2).item() == pytest.approx(-0.05)


def _networks(seed: int = 0) -> dict[str, FLOSNetwork]:
    """One network per logit mode, all with the same DevNet weights."""
    nets = {}
    for mode in ("authors", "bias", "signed"):
        torch.manual_seed(seed)
        nets[mode] = FLOSNetwork("resnet18_w16", "none", logit=mode).eval()
    return nets


def test_logit_modes():
    nets = _networks()
    with torch.no_grad():
        nets["bias"].bias.fill_(-0.7)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        authors, bias, signed = nets["authors"](x), nets["bias"](x), nets["signed"](x)
        cells = nets["signed"].cell_scores(x).flatten(1)
    # authors: DevNet's phi = mean of top-k |cell score| >= 0, so sigmoid >= 0.5 always
    assert (authors >= 0).all()
    # bias: phi + b, so the logit can go negative (normals can reach p < 0.5)
    assert torch.allclose(bias, authors - 0.7)
    # signed: the top-k of the raw scores is never above the top-k of |scores|
    assert (signed <= authors + 1e-6).all()
    assert cells.shape[1] == 1  # 32 px -> 1x1 map: the full-scale signed score is that cell
    assert not nets["authors"].bias.requires_grad and nets["bias"].bias.requires_grad


def test_unknown_logit_mode_is_a_user_error():
    with pytest.raises(UserError, match="logit"):
        FLOSNetwork("resnet18_w16", "none", logit="sigmoid")
    x, y = tiny_set(np.random.default_rng(0), 4, 2)
    with pytest.raises(UserError, match="logit"):
        FLOS(logit="sigmoid").fit(TrainSet(x, y))
    with pytest.raises(UserError, match="margin"):
        FLOS(margin=3.0).fit(TrainSet(x, y))


def test_config_defaults_are_devnets():
    c, d = FLOSConfig(), DevNetConfig()
    for f in list(Schedule.__dataclass_fields__) + ["backbone", "weights", "topk_ratio", "n_scales"]:
        assert getattr(c, f) == getattr(d, f), f
    assert (c.alpha, c.gamma, c.logit) == (1.0, 2.0, "authors")  # the wiring behind the published numbers
    assert FLOS.required_weights(c) == ["resnet18"]
    assert FLOS.required_weights(FLOSConfig(weights="none")) == []
    assert FLOS.config_from_params({"logit": "authors", "gamma": "1"}).gamma == 1.0


# ----------------------------------------------------------------------------------------------
# training

FAST = dict(backbone="resnet18_w16", weights="none", epochs=3, steps_per_epoch=10, batch_size=16, lr=1e-3,
            lr_step_epochs=3)


def _fit_auc(seed: int, **overrides) -> tuple[float, FLOS]:
    rng = np.random.default_rng(seed)
    x, y = tiny_set(rng, 40, 6)
    xt, yt = tiny_set(rng, 20, 20)
    det = FLOS(FLOSConfig(**{**FAST, **overrides})).fit(TrainSet(x, y, seed=seed))
    scores = det.score(xt)
    assert scores.shape == (40,) and np.isfinite(scores).all()
    return image_metrics(yt, scores)["auc_roc"], det


@pytest.mark.parametrize("logit", ["signed", "bias", "authors"])
def test_learns_separable_set(logit):
    auc, det = _fit_auc(0, logit=logit, bn_recalibration=logit == "bias")
    assert auc > 0.8
    assert det.info["logit"] == logit and det.info["weights"] == "none"


def test_seeded_fit_is_reproducible():
    rng = np.random.default_rng(1)
    x, y = tiny_set(rng, 12, 4)
    cfg = FLOSConfig(**{**FAST, "epochs": 1, "steps_per_epoch": 3, "batch_size": 8})
    a = FLOS(cfg).fit(TrainSet(x, y, seed=3)).score(x)
    b = FLOS(cfg).fit(TrainSet(x, y, seed=3)).score(x)
    assert np.array_equal(a, b)


def test_flos_passes_the_conformance_checks():
    # the smoke budget's settings with 6 steps at lr 1e-3: 2 steps do not separate the tiny set
    params = dict(backbone="resnet18_w16", weights="none", epochs=1, steps_per_epoch=6, batch_size=8, lr=1e-3,
                  bn_recalibration=True)
    report = check_detector(FLOS, params)
    assert {"auc", "deterministic", "explain", "bench_phases"} <= set(report.passed)
