"""Deep SAD: the semi-supervised loss on hand-computed values, the ResNet-18 embedding and centre,
and training on a tiny separable image set with a few labelled anomalies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_blob_split as tiny_set
from sklearn.metrics import roc_auc_score

from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import UserError
from fsad_bench.testing import check_detector
from fsad_methods.deepsad import DeepSAD, ResNetEmbedding
from fsad_methods.deepsad_loss import deepsad_loss, deepsad_sample_losses, semi_targets
from fsad_methods.svdd_common import squared_distance

# Random init (no download) and a few steps: seconds on a CPU.
TINY = dict(weights="none", epochs=2, batch_size=24, lr_milestones=(), bn_recalibration=True)


# -- loss on hand-computed values -------------------------------------------------------------------

def test_labels_map_to_the_official_semi_supervised_targets():
    assert semi_targets(torch.tensor([0, 1, 0, 1])).tolist() == [0, -1, 0, -1]


def test_per_sample_losses_by_hand():
    dist = torch.tensor([0.5, 2.0, 0.25, 4.0, 3.0])
    targets = torch.tensor([0, -1, 0, -1, 1])
    eps = 1e-6
    expected = torch.tensor([0.5, 1 / (2.0 + eps), 0.25, 1 / (4.0 + eps), 3.0 + eps])
    assert torch.allclose(deepsad_sample_losses(dist, targets), expected)
    # eta weighs the labelled terms only
    expected_eta = torch.tensor([0.5, 2 / (2.0 + eps), 0.25, 2 / (4.0 + eps), 2 * (3.0 + eps)])
    assert torch.allclose(deepsad_sample_losses(dist, targets, eta=2.0), expected_eta)


def test_batch_loss_by_hand_and_its_gradient_pushes_anomalies_away():
    dist = torch.tensor([0.5, 2.0, 0.25, 4.0], requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1])
    loss = deepsad_loss(dist, labels)
    assert loss.item() == pytest.approx((0.5 + 1 / 2.000001 + 0.25 + 1 / 4.000001) / 4, rel=1e-6)
    loss.backward()
    g = dist.grad
    assert g[0].item() == pytest.approx(0.25) and g[2].item() == pytest.approx(0.25)  # d mean(dist)
    assert g[1].item() == pytest.approx(-1 / (4 * 2.000001 ** 2), rel=1e-5)  # d (dist+eps)^-1 / 4
    assert g[3].item() == pytest.approx(-1 / (4 * 4.000001 ** 2), rel=1e-5)


def test_eps_keeps_an_anomaly_at_the_centre_finite():
    loss = deepsad_loss(torch.tensor([0.0, 0.0]), torch.tensor([0, 1]), eps=1e-6)
    assert loss.item() == pytest.approx(1e6 / 2)


def test_unlabelled_only_reduces_to_deep_svdd():
    dist = torch.tensor([1.0, 2.0, 6.0])
    assert deepsad_loss(dist, torch.zeros(3, dtype=torch.long)).item() == pytest.approx(3.0)


# -- network and centre ---------------------------------------------------------------------------

def test_resnet_embedding_is_global_average_pooled_512d():
    torch.manual_seed(0)
    net = ResNetEmbedding("resnet18", "none").eval()
    z = net(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 512) and (z >= 0).all()  # after the last ReLU


def test_config_and_required_weights():
    assert DeepSAD.required_weights(DeepSAD.Config()) == ["resnet18"]
    assert DeepSAD.required_weights(DeepSAD.Config(weights="none")) == []
    cfg = DeepSAD.config_from_params({"lr_milestones": "5,10", "balanced": "true"})
    assert cfg.lr_milestones == (5, 10) and cfg.balanced is True
    with pytest.raises(UserError):
        DeepSAD.config_from_params({"weights": "random"})


# -- training -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_detects_the_blobs(seed):
    train, labels, test, test_labels = tiny_set(seed)
    det = DeepSAD(**TINY).fit(TrainSet(train, labels, seed=seed))
    scores = det.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    assert roc_auc_score(test_labels, scores) > 0.9
    # the centre: mean of non-negative embeddings with the 0.1 fix -> every entry >= 0.1
    assert det.c.shape == (512,) and (det.c >= 0.1).all()
    assert det.info["weights"] == "none" and det.info["n_labelled_anomalies"] == 6


def test_labelled_anomalies_end_far_from_the_centre_and_fit_is_deterministic():
    train, labels, _, _ = tiny_set(4, n_normal=20, n_anom=4, n_test=2)
    cfg = dict(TINY, balanced=True)
    det = DeepSAD(**cfg).fit(TrainSet(train, labels, seed=3))
    dist = squared_distance(det.embed(train), det.c).numpy()
    assert dist[labels == 1].min() > np.median(dist[labels == 0])
    again = DeepSAD(**cfg).fit(TrainSet(train, labels, seed=3))
    np.testing.assert_array_equal(det.score(train), again.score(train))


def test_deepsad_passes_the_conformance_checks():
    smoke = dict(backbone="resnet18_w16", weights="none", epochs=1, steps_per_epoch=2, batch_size=8,
                 lr_milestones=[], bn_recalibration=True)  # the smoke budget's settings
    report = check_detector(DeepSAD, smoke)
    assert {"auc", "deterministic", "bench_phases"} <= set(report.passed)
