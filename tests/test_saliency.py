"""Gradient saliency (Q3 localisation): the helpers against hand-computed values, and the maps of
DevNet, FLOS, MINNS and KDAD: image-shaped, finite, in [0, 1]; DevNet's peak on a planted defect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import blob_image, separable_set
from scipy.ndimage import gaussian_filter

from fsad_baselines.flos import FLOS
from fsad_baselines.kdad import KDAD
from fsad_baselines.minns import MINNS
from fsad_bench.detectors.base import TrainSet
from fsad_bench.models.devnet import DevNet
from fsad_bench.models.saliency import (
    explain_images,
    frozen,
    gradient_saliency,
    postprocess_saliency,
)

SIZE = 32
FAST = dict(epochs=6, steps_per_epoch=10, batch_size=16, lr=1e-3, lr_step_epochs=100)
TINY = dict(backbone="resnet18_w16", weights="none", epochs=1, steps_per_epoch=3, batch_size=8)


def _anomalies(n: int = 10, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = [blob_image(rng, SIZE, True) for _ in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]) > 0


def _check_maps(maps: np.ndarray, n: int) -> None:
    assert maps.shape == (n, SIZE, SIZE)
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.max() > 0.0  # not a degenerate all-zero map


# ----------------------------------------------------------------------------------------------
# helpers

def test_gradient_saliency_of_a_linear_score_is_abs_weights_summed_over_channels():
    w = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))

    def score(x):  # (B, 3, 5, 4) -> (B,), gradient = w for every image
        return (x * w).sum(dim=(1, 2, 3))

    x = torch.randn(7, 3, 5, 4)
    raw = gradient_saliency(score, x)
    assert raw.shape == (7, 5, 4)
    np.testing.assert_allclose(raw, np.broadcast_to(w.abs().sum(0).numpy(), (7, 5, 4)), rtol=1e-6)
    # a non-linear score: batched maps equal one-image-at-a-time maps
    def sq(x):
        return (x ** 2 * w).sum(dim=(1, 2, 3))

    np.testing.assert_allclose(gradient_saliency(sq, x), gradient_saliency(sq, x, batch_size=2), rtol=1e-6)
    np.testing.assert_allclose(gradient_saliency(sq, x), (2 * x * w).abs().sum(1).numpy(), rtol=1e-5)


def test_gradient_saliency_needs_no_parameter_gradients_and_works_under_no_grad():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    net(torch.zeros(1, 3, 6, 6))
    with torch.no_grad(), frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
        raw = gradient_saliency(lambda x: net(x).flatten(), torch.randn(4, 3, 6, 6))
    assert raw.shape == (4, 6, 6) and np.isfinite(raw).all()
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


def test_postprocess_p99_scaling_hand_computed():
    raw = np.arange(100, dtype=np.float64).reshape(10, 10) + 3.0   # min 3, p99 = 101.01
    out = postprocess_saliency(raw, sigma=0)
    expected = np.clip((raw - 3.0) / (np.percentile(raw, 99) - 3.0), 0, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.max() == 1.0 and out.min() == 0.0
    # with the blur: scipy's gaussian_filter of the scaled map, still in [0, 1]
    blurred = postprocess_saliency(raw[None], sigma=4)
    assert blurred.shape == (1, 10, 10)
    np.testing.assert_allclose(blurred[0], gaussian_filter(expected, sigma=4), rtol=1e-5)


def test_postprocess_degenerate_maps_stay_finite():
    out = postprocess_saliency(np.zeros((2, 8, 8)), sigma=4)
    assert np.isfinite(out).all() and (out == 0).all()
    spike = np.zeros((8, 8))
    spike[3, 3] = 5.0  # p99 == min: the limit of the clipped ratio, 1 at the spike
    out = postprocess_saliency(spike, sigma=0)
    assert out[3, 3] == 1.0 and out.sum() == 1.0


def test_explain_images_empty_and_shape():
    maps = explain_images(lambda x: x.sum(dim=(1, 2, 3)), np.zeros((0, 9, 7, 3), np.uint8),
                          lambda u: u.float(), "cpu")
    assert maps.shape == (0, 9, 7)
    img = np.random.default_rng(0).integers(0, 255, (3, 9, 7, 3), dtype=np.uint8)
    maps = explain_images(lambda x: (x ** 2).sum(dim=(1, 2, 3)), img, lambda u: u.float() / 255, "cpu",
                          sigma=1.0, batch_size=2)
    assert maps.shape == (3, 9, 7) and np.isfinite(maps).all() and 0 <= maps.min() <= maps.max() <= 1


# ----------------------------------------------------------------------------------------------
# detectors

@pytest.fixture(scope="module")
def train_set() -> TrainSet:
    x, y = separable_set(np.random.default_rng(0), 40, 6, size=SIZE)
    return TrainSet(x, y, seed=0)


@pytest.fixture(scope="module")
def devnet(train_set) -> DevNet:
    return DevNet(backbone="resnet18_w16", weights="none", **FAST).fit(train_set)


def test_devnet_saliency_peaks_on_the_planted_defect(devnet):
    images, masks = _anomalies()
    maps = devnet.explain(images)
    _check_maps(maps, len(images))
    inside = np.array([m[k].mean() for m, k in zip(maps, masks)])
    outside = np.array([m[~k].mean() for m, k in zip(maps, masks)])
    assert (inside > outside).sum() >= 9, (inside, outside)
    assert inside.mean() > 1.5 * outside.mean()
    peak_in_mask = [k.flat[m.argmax()] for m, k in zip(maps, masks)]
    assert sum(peak_in_mask) >= 8, peak_in_mask


def test_devnet_explain_is_batch_independent_and_leaves_weights_alone(devnet):
    images, _ = _anomalies(5)
    params = list(devnet.network.parameters())
    before = [p.detach().clone() for p in params]
    grads = [None if p.grad is None else p.grad.clone() for p in params]  # left by the last step
    full = devnet.explain(images)
    devnet.config.saliency_batch_size = 2
    try:
        np.testing.assert_allclose(devnet.explain(images), full, atol=1e-5)
    finally:
        devnet.config.saliency_batch_size = 16
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert all(p.requires_grad for p in params)  # restored after explain
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, params))
    # sigma is a hyper-parameter: no blur keeps the raw scaled gradient (sharper, still in [0, 1])
    devnet.config.saliency_sigma = 0.0
    try:
        sharp = devnet.explain(images)
    finally:
        devnet.config.saliency_sigma = 4.0
    _check_maps(sharp, 5)
    assert sharp.max() == 1.0


def test_flos_inherits_explain(train_set):
    det = FLOS(**TINY).fit(train_set)
    _check_maps(det.explain(_anomalies(3)[0]), 3)


def test_minns_explain(train_set):
    det = MINNS(**TINY).fit(train_set)
    _check_maps(det.explain(_anomalies(3)[0]), 3)
    det.config.score = "logit"
    _check_maps(det.explain(_anomalies(3)[0]), 3)


def test_kdad_explain(train_set):
    det = KDAD(weights="none", epochs=1, max_steps=2, batch_size=16, teacher_bf16=True).fit(train_set)
    images = _anomalies(3)[0]
    _check_maps(det.explain(images), 3)
    assert not any(p.requires_grad for p in det.teacher.parameters())
    assert all(p.requires_grad for p in det.student.parameters())
    assert det.explain(images[:0]).shape == (0, SIZE, SIZE)
