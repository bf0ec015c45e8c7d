"""DevNet: deviation loss and top-K MIL against hand-computed values; it learns a separable set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import separable_set

from fsad_bench.detectors.base import TrainSet
from fsad_bench.metrics import image_metrics
from fsad_bench.testing import check_detector
from fsad_methods.deviation_loss import deviation_loss
from fsad_methods.devnet import DevNet, DevNetNetwork
from fsad_methods.mil import topk_count, topk_mil
from fsad_methods.training import BalancedBatches, random_rotation


def test_deviation_loss_hand_computed():
    # reference with mean 1 and std 2 (unbiased): [-1, 1, 3] -> mean 1, std 2
    ref = torch.tensor([-1.0, 1.0, 3.0])
    scores = torch.tensor([1.0, 3.0, 9.0, 13.0])
    labels = torch.tensor([0, 0, 1, 1])
    # dev = (s - 1) / 2 = [0, 1, 4, 6]; normals |dev| = 0, 1; anomalies max(0, 5 - dev) = 1, 0
    loss = deviation_loss(scores, labels, margin=5.0, reference=ref)
    assert loss.item() == pytest.approx((0 + 1 + 1 + 0) / 4)


def test_deviation_loss_fresh_reference_is_standard_normal():
    gen = torch.Generator().manual_seed(0)
    # with mu ~ 0, sigma ~ 1 a normal scored 0 costs ~0 and an anomaly at the margin costs ~0
    loss = deviation_loss(torch.tensor([0.0, 5.0]), torch.tensor([0, 1]), generator=gen)
    assert loss.item() < 0.1


def test_topk_mil_hand_computed():
    cells = torch.tensor([[1.0, -4.0, 2.0, 0.5, -0.1, 3.0, 0.0, 0.2, 0.3, 0.4]])
    # 10 cells, ratio 0.2 -> k = 2: top-2 of |x| = 4, 3 -> mean 3.5
    assert topk_count(10, 0.2) == 2
    assert topk_mil(cells, 0.2).item() == pytest.approx(3.5)
    # k never drops below 1
    assert topk_count(4, 0.1) == 1
    assert topk_mil(cells, 0.01).item() == pytest.approx(4.0)
    # ratio 0 = authors' topk=0: plain mean of raw scores
    assert topk_mil(cells, 0.0).item() == pytest.approx(cells.mean().item())


def test_paper_resolution_gives_k19():
    assert topk_count(14 * 14, 0.1) == 19


def test_network_two_scales_average():
    torch.manual_seed(0)
    net = DevNetNetwork("resnet18_w16", "none", n_scales=2).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        both = net(x)
        full = net.scale_score(x)
        half = net.scale_score(torch.nn.functional.interpolate(x, scale_factor=0.5, mode="nearest"))
    assert torch.allclose(both, (full + half) / 2)


def test_balanced_batches_half_anomalies_and_seeded():
    labels = np.array([0] * 20 + [1] * 3)
    a, b = BalancedBatches(labels, 8, seed=5), BalancedBatches(labels, 8, seed=5)
    for _ in range(5):
        batch = a.next()
        assert (labels[batch] == 1).sum() == 4
        assert np.array_equal(batch, b.next())


def test_rotation_keeps_shape_and_zero_fills_corners():
    x = torch.ones(2, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    y = random_rotation(x, 180, gen)
    assert y.shape == x.shape
    assert (y == 0).any() and (y == 1).any()
    assert torch.equal(random_rotation(x, 0, gen), x)




def test_devnet_reaches_high_auc_on_separable_set():
    x_train, y_train = separable_set(np.random.default_rng(0), 40, 6)
    x_test, y_test = separable_set(np.random.default_rng(1), 20, 20)
    det = DevNet(backbone="resnet18_w16", weights="none", epochs=6, steps_per_epoch=10, batch_size=16,
                 lr=1e-3, lr_step_epochs=100)
    det.fit(TrainSet(x_train, y_train, seed=0))
    auc = image_metrics(y_test, det.score(x_test))["auc_roc"]
    assert auc > 0.9, auc
    assert det.info["weights"] == "none"
    assert all(math.isfinite(v) for v in det.loss_history)


def test_devnet_is_reproducible():
    x_train, y_train = separable_set(np.random.default_rng(0), 16, 4)
    kw = dict(backbone="resnet18_w16", weights="none", epochs=1, steps_per_epoch=3, batch_size=8)
    s1 = DevNet(**kw).fit(TrainSet(x_train, y_train, seed=3)).score(x_train)
    s2 = DevNet(**kw).fit(TrainSet(x_train, y_train, seed=3)).score(x_train)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)


#: the smoke budget's settings (protocols/q1.toml)
SMOKE = dict(backbone="resnet18_w16", weights="none", epochs=1, steps_per_epoch=2, batch_size=8,
             bn_recalibration=True)


def test_devnet_passes_the_conformance_checks():
    report = check_detector(DevNet, SMOKE)
    assert {"auc", "deterministic", "explain", "bench_phases"} <= set(report.passed)
