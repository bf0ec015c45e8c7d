"""Gradient saliency (Q3 localisation): the helpers against hand-computed values, and the maps of
DevNet, FLOS, MINNS and KDAD: image-shaped, finite, in [0, 1]; DevNet's peak on a planted defect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import blob_image, separable_set, smooth_blob_split
from scipy.ndimage import gaussian_filter

from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import UserError
from fsad_methods.devnet import DevNet
from fsad_methods.flos import FLOS
from fsad_methods.kdad import KDAD, LAYERS, SCORE_LAYERS
from fsad_methods.kdad_loss import kdad_score
from fsad_methods.minns import MINNS
from fsad_methods.saliency import (
    explain_images,
    frozen,
    gradient_saliency,
    guided_relus,
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


# ----------------------------------------------------------------------------------------------
# guided backpropagation (KDAD's official localisation)

def test_guided_relus_hand_computed_and_removed_after():
    # score = w2 . relu(W1 x): plain gradient W1^T [(W1 x > 0) * w2], guided W1^T [(W1 x > 0) * max(w2, 0)]
    lin1, lin2 = torch.nn.Linear(3, 4, bias=False), torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]))
        lin2.weight.copy_(torch.tensor([[2.0, -3.0, 0.5, -1.0]]))
    net = torch.nn.Sequential(lin1, torch.nn.ReLU(inplace=True), lin2)
    x = torch.tensor([[1.0, 2.0, -1.0]], requires_grad=True)   # W1 x = (1, 2, -1, 2): unit 3 is off

    def grad_of(model):
        (g,) = torch.autograd.grad(model(x).sum(), x)
        return g[0].tolist()

    on = torch.tensor([1.0, 1.0, 0.0, 1.0])
    w1, w2 = lin1.weight.detach(), lin2.weight.detach()[0]
    plain = (w1.T @ (on * w2)).tolist()                        # (1, -4, -1)
    guided = (w1.T @ (on * w2.clamp(min=0))).tolist()          # (2, 0, 0)
    assert grad_of(net) == pytest.approx(plain)
    with guided_relus(net):
        assert grad_of(net) == pytest.approx(guided)
        forward = (on * (w1 @ x.detach()[0]) * w2).sum().item()
        assert net(x).item() == pytest.approx(forward)         # the forward pass is unchanged
    assert grad_of(net) == pytest.approx(plain)                # hooks removed


def _official_style_guided_copy(student: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``student`` with KDAD's official GuidedBackprop hooks: each ReLU (made out of place)
    records its output in the forward pass and, in the backward pass, returns
    (output > 0) * clamp(grad_in, min=0), as their ``relu_backward_hook_function``."""
    import copy

    twin = copy.deepcopy(student)
    outputs = []

    def forward_hook(_m, _i, out):
        outputs.append(out)

    def backward_hook(_m, grad_in, _grad_out):
        out = outputs.pop()
        return ((out > 0).to(grad_in[0].dtype) * torch.clamp(grad_in[0], min=0.0),)

    for m in twin.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
            m.register_forward_hook(forward_hook)
            m.register_full_backward_hook(backward_hook)
    return twin


@pytest.fixture(scope="module")
def kdad_on_smooth_textures() -> tuple[KDAD, np.ndarray, np.ndarray]:
    """KDAD trained (20 steps, random teacher) on smooth textures; test anomalies carry a bright
    8x8 square (their masks)."""
    x, y, xt, yt = smooth_blob_split(0, n_normal=40, n_anom=0, n_test=10, size=SIZE)
    det = KDAD(weights="none", epochs=50, max_steps=20, batch_size=16, input_norm="imagenet")
    det.fit(TrainSet(x, y))
    anomalies = xt[yt == 1]
    return det, anomalies, (anomalies == 250).all(-1)


def test_kdad_guided_backprop_matches_the_official_hooks(kdad_on_smooth_textures):
    det, images, _ = kdad_on_smooth_textures
    images = images[:3]
    keep = [LAYERS.index(name) for name in SCORE_LAYERS]
    twin = _official_style_guided_copy(det.student).eval()

    def discrepancy(student):
        def fn(x):
            s, t = student(x), det.teacher(x)
            return kdad_score([s[i] for i in keep], [t[i] for i in keep], det.config.lamda)
        return fn

    x = det._prepare(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    with frozen(det.student, det.teacher):
        with guided_relus(det.student):
            ours = gradient_saliency(discrepancy(det.student), x)
        plain = gradient_saliency(discrepancy(det.student), x)
    with frozen(twin, det.teacher):
        official = gradient_saliency(discrepancy(twin), x, batch_size=1)  # their loop: one image at a time
    np.testing.assert_allclose(ours, official, rtol=1e-4, atol=1e-7)
    assert not np.allclose(ours, plain, rtol=1e-2)  # the gating changes the map
    # the default explain() is the guided one, post-processed as DevNet's
    np.testing.assert_allclose(det.explain(images), postprocess_saliency(ours, sigma=4.0), atol=1e-5)


def test_kdad_guided_saliency_peaks_on_the_planted_defect(kdad_on_smooth_textures):
    det, images, masks = kdad_on_smooth_textures
    assert det.config.localization == "guided"
    maps = det.explain(images)
    _check_maps(maps, len(images))
    inside = np.array([m[k].mean() for m, k in zip(maps, masks)])
    outside = np.array([m[~k].mean() for m, k in zip(maps, masks)])
    assert (inside > outside).sum() >= 9, (inside, outside)
    assert inside.mean() > 1.5 * outside.mean()
    assert sum(k.flat[m.argmax()] for m, k in zip(maps, masks)) >= 8
    det.config.localization = "gradient"   # plain gradients: still valid maps, a different map
    try:
        plain = det.explain(images)
    finally:
        det.config.localization = "guided"
    _check_maps(plain, len(images))
    assert not np.allclose(plain, maps, atol=1e-3)
    det.config.localization = "gbp"
    try:
        with pytest.raises(UserError, match="localization"):
            det.explain(images)
    finally:
        det.config.localization = "guided"
