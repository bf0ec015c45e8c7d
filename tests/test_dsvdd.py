"""Deep SVDD: objectives and the centre's 0.1 fix on hand-computed values, the network, the
autoencoder weight copy, and one-class training on a tiny separable image set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_blob_split as tiny_set
from sklearn.metrics import roc_auc_score
from torch import nn

from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import UserError
from fsad_bench.testing import check_detector
from fsad_methods.dsvdd import DeepSVDD, LeNetAutoencoder, LeNetEncoder, copy_encoder_weights
from fsad_methods.dsvdd_loss import (
    one_class_loss,
    radius_from_distances,
    reconstruction_loss,
    soft_boundary_loss,
    soft_boundary_score,
)
from fsad_methods.svdd_common import initial_centre, parse_milestones, push_away_from_zero, squared_distance
from fsad_methods.training import chunks, recalibrate_batchnorm

# A few steps of every phase: seconds on a CPU.
TINY = dict(epochs=2, ae_epochs=2, batch_size=20, ae_batch_size=20, lr_milestones=(), ae_lr_milestones=(),
            bn_recalibration=True)


# -- centre and objectives on hand-computed values ------------------------------------------------

def test_centre_fix_pushes_small_entries_to_plus_minus_eps():
    c = torch.tensor([0.05, -0.05, 0.0, 0.2, -0.3, 0.1, -0.1, 0.0999, -1e-9])
    fixed = push_away_from_zero(c, eps=0.1)
    expected = torch.tensor([0.1, -0.1, 0.1, 0.2, -0.3, 0.1, -0.1, 0.1, -0.1])
    assert torch.allclose(fixed, expected)
    assert torch.equal(c[0], torch.tensor(0.05))  # input untouched


def test_initial_centre_is_the_mean_embedding_with_the_fix():
    # phi(x) = W x on 2-pixel "images", no BatchNorm: embeddings by hand.
    net = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.01], [-1.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # embeddings [1, .02, 1], [3, .04, 1] -> mean [2, .03, 1]
    c = initial_centre(net, x, lambda b: b, batch_size=1)
    assert torch.allclose(c, torch.tensor([2.0, 0.1, 1.0]))


def test_one_class_and_soft_boundary_losses():
    dist = torch.tensor([1.0, 4.0, 9.0])
    assert one_class_loss(dist).item() == pytest.approx(14 / 3)
    # R = 2: R^2 + 1/nu * mean(max(0, [1-4, 4-4, 9-4])) = 4 + 2 * 5/3
    assert soft_boundary_loss(dist, 2.0, nu=0.5).item() == pytest.approx(4 + 10 / 3)
    assert torch.allclose(soft_boundary_score(dist, 2.0), torch.tensor([-3.0, 0.0, 5.0]))


def test_radius_is_the_quantile_of_distances_not_squared_distances():
    dist = torch.tensor([1.0, 4.0, 9.0, 16.0, 25.0])  # distances 1..5
    assert radius_from_distances(dist, nu=0.5) == pytest.approx(3.0)
    assert radius_from_distances(dist, nu=0.1) == pytest.approx(4.6)  # linear interpolation, as numpy


def test_squared_distance_and_reconstruction_loss():
    z = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    assert torch.allclose(squared_distance(z, torch.tensor([1.0, 0.0])), torch.tensor([4.0, 1.0]))
    x = torch.ones(2, 1, 2, 2)
    x_hat = torch.zeros(2, 1, 2, 2)
    x_hat[1] = 0.5
    # per-sample sums of squared errors 4 and 1, averaged
    assert reconstruction_loss(x_hat, x).item() == pytest.approx(2.5)


def test_chunks_never_leave_a_single_sample_batch():
    assert chunks(5, 2) == [slice(0, 2), slice(2, 5)]
    assert chunks(4, 2) == [slice(0, 2), slice(2, 4)]
    assert chunks(1, 64) == [slice(0, 1)]
    assert chunks(0, 64) == []


def test_milestones_from_toml_and_command_line():
    assert parse_milestones([50]) == (50,)
    assert parse_milestones("10,20") == (10, 20)
    assert parse_milestones("") == ()
    assert DeepSVDD.config_from_params({"lr_milestones": "10,20"}).lr_milestones == (10, 20)
    assert DeepSVDD.config_from_params({"ae_lr_milestones": [250]}).ae_lr_milestones == (250,)
    with pytest.raises(UserError):
        DeepSVDD.config_from_params({"objective": "two-class"})


# -- network ------------------------------------------------------------------------------------

def test_lenet_is_bias_free_and_sizes_its_linear_layer_from_the_input():
    net = LeNetEncoder((32, 32))
    assert net.fc1.in_features == 128 * 4 * 4  # the official CIFAR-10 network
    assert LeNetEncoder((64, 64)).fc1.in_features == 128 * 8 * 8
    assert not [n for n, _ in net.named_parameters() if "bias" in n]
    assert all(not m.affine for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert net(torch.rand(3, 3, 32, 32)).shape == (3, 128)
    with pytest.raises(UserError):
        LeNetEncoder((4, 4))


@pytest.mark.parametrize("size", [32, 64, 40])
def test_autoencoder_reconstructs_the_input_shape(size):
    ae = LeNetAutoencoder((size, size))
    out = ae(torch.rand(2, 3, size, size))
    assert out.shape == (2, 3, size, size)
    assert 0 <= out.min() and out.max() <= 1  # sigmoid output
    assert set(ae.encoder.state_dict()) == set(LeNetEncoder((size, size)).state_dict())


def test_encoder_weights_are_copied_into_the_network():
    torch.manual_seed(0)
    ae, net = LeNetAutoencoder((32, 32)), LeNetEncoder((32, 32))
    ae.encoder.bn2d1.running_mean.fill_(0.5)
    assert not torch.equal(ae.encoder.conv1.weight, net.conv1.weight)
    copy_encoder_weights(ae, net)
    for key, value in ae.encoder.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_fit_starts_from_the_pretrained_encoder():
    """With no Deep SVDD epochs the fitted network IS the pretrained encoder (weights + BN stats)."""
    train, labels, _, _ = tiny_set(0, n_normal=12, n_anom=2)
    det = DeepSVDD(epochs=0, ae_epochs=1, ae_batch_size=6).fit(TrainSet(train, labels, seed=0))
    fresh = LeNetEncoder((32, 32))
    assert det.info["pretrain"] is True
    for key, value in det.autoencoder.encoder.state_dict().items():
        assert torch.equal(det.network.state_dict()[key], value), key
    assert not torch.equal(det.network.conv1.weight, fresh.conv1.weight)


def test_recalibration_sets_the_running_statistics_to_the_data():
    net = nn.Sequential(nn.BatchNorm1d(2, affine=False))
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])
    recalibrate_batchnorm(net, x, lambda b: b, batch_size=4)
    bn = net[0]
    assert torch.allclose(bn.running_mean, torch.tensor([3.0, 4.0]))
    assert torch.allclose(bn.running_var, x.var(0))  # unbiased, as BatchNorm keeps it
    assert bn.momentum == 0.1


# -- training -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_class_training_detects_the_blobs(seed):
    train, labels, test, test_labels = tiny_set(seed)
    det = DeepSVDD(**TINY).fit(TrainSet(train, labels, seed=seed))
    scores = det.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    assert roc_auc_score(test_labels, scores) > 0.8
    assert det.info["n_train_normal"] == 40 and det.info["weights"] == "none"


def test_labelled_anomalies_are_ignored_and_fit_is_deterministic():
    train, labels, test, _ = tiny_set(3, n_normal=20, n_anom=4, n_test=5)
    cfg = dict(TINY, ae_epochs=1, epochs=1)
    with_anomalies = DeepSVDD(**cfg).fit(TrainSet(train, labels, seed=7)).score(test)
    normals_only = DeepSVDD(**cfg).fit(TrainSet(train[labels == 0], labels[labels == 0], seed=7)).score(test)
    np.testing.assert_array_equal(with_anomalies, normals_only)
    assert DeepSVDD.uses_labelled_anomalies is False


def test_soft_boundary_objective_sets_a_radius_after_warm_up():
    train, labels, test, test_labels = tiny_set(0, n_normal=20, n_anom=2, n_test=10)
    det = DeepSVDD(**dict(TINY, objective="soft-boundary", warm_up_epochs=1, pretrain=False))
    det.fit(TrainSet(train, labels, seed=0))
    assert det.radius > 0
    dist = squared_distance(det.embed(test), det.c).numpy()
    np.testing.assert_allclose(det.score(test), dist - det.radius ** 2, rtol=1e-5)
    assert roc_auc_score(test_labels, det.score(test)) > 0.8


def test_dsvdd_passes_the_conformance_checks():
    smoke = dict(ae_epochs=1, ae_steps_per_epoch=1, ae_batch_size=8, epochs=1, steps_per_epoch=2,
                 batch_size=8, lr_milestones=[], ae_lr_milestones=[],
                 bn_recalibration=True)  # the smoke budget's settings
    # one-class at three steps: no AUC asked, every contract check (and the two phases' step counts) is
    report = check_detector(DeepSVDD, smoke, min_auc=None)
    assert {"one_class_ignores_anomalies", "bench_phases", "deterministic"} <= set(report.passed)
