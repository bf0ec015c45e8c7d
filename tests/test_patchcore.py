"""Tests for PatchCore: the coreset, the patch features, the nearest-neighbour score and Eq. 7 against
hand-computed values; maps; config checks; the conformance suite; a learning check on random features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_blob_split
from sklearn.metrics import roc_auc_score

from fsad_bench.budgets import BUDGETS
from fsad_bench.config import resolve_method_config
from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import UserError
from fsad_bench.testing import check_detector
from fsad_methods.coreset import coreset_size, greedy_coreset, random_projection
from fsad_methods.patchcore import (
    PatchCore,
    PatchCoreConfig,
    ResNetPatchFeatures,
    aggregate_patch_features,
    nearest_neighbours,
    pool_neighbourhoods,
    reweighting_factors,
    scale_jointly,
    smooth_maps,
)

#: the smoke budget's settings (narrow random ResNet-18, 64-dimensional patch features)
SMOKE = dict(weights="none", backbone="resnet18_w16", pretrain_embed_dim=64, target_embed_dim=64)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per test (restored after): the networks here are tiny, and on a loaded
    2-core machine two OpenMP threads made this file ~3x slower (53 s against 20 s, mostly waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- coreset
def _clusters(n_clusters: int, per_cluster: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Tight clusters (spread 0.1) around centres 100 apart; returns (points, cluster of each point)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    centres *= 100 * np.arange(1, n_clusters + 1)[:, None] / np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    points = centres[labels] + 0.1 * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return torch.tensor(points[order], dtype=torch.float32), labels[order]


@pytest.mark.parametrize("dim", [2, 300])  # 300 > 128: distances on the random projection
def test_coreset_picks_one_point_per_cluster(dim: int) -> None:
    points, cluster = _clusters(5, 20, dim)
    for seed in range(3):
        picked = greedy_coreset(points, 5, seed=seed).numpy()
        assert sorted(cluster[picked]) == [0, 1, 2, 3, 4]


def test_coreset_follows_the_official_greedy_rule_by_hand() -> None:
    # 1-D points 0, 1, 2, 3, 10; with as many start features as points, every point starts at its mean
    # distance to all points: 3.2, 2.6, 2.4, 2.6, 6.8 -> pick 10 (index 4); then min(mean, distance to
    # 10): 3.2, 2.6, 2.4, 2.6 -> pick 0; then min(., distance to 0): 1, 2, 2.6 -> pick 3; then 1 and 1:
    # the first index (1) on the tie.
    points = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    for seed in range(3):
        assert greedy_coreset(points, 4, seed=seed, n_starts=5).tolist() == [4, 0, 3, 1]
        assert greedy_coreset(points, 2, seed=seed, n_starts=5).tolist() == [4, 0]


def test_coreset_size_is_the_floor_of_the_fraction_at_least_one() -> None:
    assert coreset_size(12800, 0.1) == 1280
    assert coreset_size(25, 0.1) == 2      # floor(2.5), as the official int(n * p)
    assert coreset_size(5, 0.1) == 1       # floor gives 0: at least one feature
    assert coreset_size(7, 1.0) == 7       # everything ("PatchCore-100%")
    assert coreset_size(0, 0.1) == 0
    points = torch.randn(30, 4)
    assert len(greedy_coreset(points, coreset_size(30, 0.1))) == 3
    assert greedy_coreset(points, 30).tolist() == list(range(30))


def test_coreset_is_deterministic_for_a_seed_and_never_repeats() -> None:
    points = torch.randn(400, 200, generator=torch.Generator().manual_seed(0))
    a, b = greedy_coreset(points, 40, seed=3), greedy_coreset(points, 40, seed=3)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 40
    assert greedy_coreset(points, 40, seed=4).tolist() != a.tolist()
    # more picks than distinct points: still no index twice
    dup = torch.zeros(6, 3)
    assert sorted(greedy_coreset(dup, 6).tolist()) == list(range(6))


def test_random_projection_has_the_official_linear_layer_distribution() -> None:
    proj = random_projection(1024, 128, torch.Generator().manual_seed(0))
    assert proj.shape == (1024, 128)
    assert proj.abs().max() <= 1 / 32 and abs(proj.mean().item()) < 1e-3
    assert proj.std().item() == pytest.approx(1 / 32 / math.sqrt(3), rel=0.02)  # U(-a, a): sd a/sqrt(3)


# ----------------------------------------------------------------------------- patch features
def _official_order(maps: list[torch.Tensor], p: int, pre: int, target: int) -> torch.Tensor:
    """The official operation order, written out literally: unfold every layer into (B, L, C, p, p)
    patches, bilinearly resize each of a deeper layer's C x p x p planes to the first grid, then pool
    each patch's flattened values per layer and the layers together."""
    grid = maps[0].shape[-2:]
    pooled = []
    for i, m in enumerate(maps):
        b, c, h, w = m.shape
        patches = F.unfold(m, p, padding=(p - 1) // 2).reshape(b, c, p, p, h * w).permute(0, 4, 1, 2, 3)
        if i > 0:
            planes = patches.reshape(b, h, w, c, p, p).permute(0, 3, 4, 5, 1, 2).reshape(-1, 1, h, w)
            planes = F.interpolate(planes, size=grid, mode="bilinear", align_corners=False)
            patches = planes.reshape(b, c, p, p, *grid).permute(0, 4, 5, 1, 2, 3).reshape(b, -1, c, p, p)
        flat = patches.reshape(-1, 1, c * p * p)
        pooled.append(F.adaptive_avg_pool1d(flat, pre)[:, 0])
    stacked = torch.stack(pooled, dim=1).reshape(len(pooled[0]), 1, -1)
    return F.adaptive_avg_pool1d(stacked, target)[:, 0].reshape(maps[0].shape[0], *grid, target)


def test_pooling_before_resizing_equals_the_official_order() -> None:
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 6, 8, 8, generator=gen), torch.randn(2, 10, 4, 4, generator=gen)]
    ours = aggregate_patch_features(maps, 3, 16, 12)
    assert ours.shape == (2, 8, 8, 12)
    torch.testing.assert_close(ours, _official_order(maps, 3, 16, 12), rtol=1e-5, atol=1e-6)


def test_aggregation_closed_forms_of_the_docstring() -> None:
    x = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    # C x 9 values pooled to C: each channel's plain 3 x 3 mean, zero padding counted (WRN layer 3)
    plain = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)
    torch.testing.assert_close(pool_neighbourhoods(x, 3, 4), plain, rtol=1e-5, atol=1e-6)
    # pooled to 2C, then pairs averaged (WRN layer 2 at 1024 -> 1024): the centre counts twice
    kernel = torch.full((3, 3), 0.1)
    kernel[1, 1] = 0.2
    weighted = F.conv2d(x, kernel.expand(4, 1, 3, 3), padding=1, groups=4)
    torch.testing.assert_close(aggregate_patch_features([x], 3, 8, 4).permute(0, 3, 1, 2), weighted,
                               rtol=1e-5, atol=1e-6)
    # both layers as WideResNet-50's 512 / 1024 channels at 1024 -> 1024, at 1/128 of the width: the
    # first half is layer 2 centre-weighted, the second the means of adjacent layer-3 channel pairs'
    # 3 x 3 means, resized to layer 2's grid
    deeper = torch.randn(1, 8, 3, 3, generator=torch.Generator().manual_seed(2))
    pairs = F.avg_pool2d(deeper, 3, stride=1, padding=1).reshape(1, 4, 2, 3, 3).mean(dim=2)
    resized = F.interpolate(pairs, size=(6, 6), mode="bilinear", align_corners=False)
    expected = torch.cat([weighted, resized], dim=1)
    torch.testing.assert_close(aggregate_patch_features([x, deeper], 3, 8, 8).permute(0, 3, 1, 2), expected,
                               rtol=1e-5, atol=1e-6)


def test_feature_extractor_layers_and_min_img_size() -> None:
    torch.manual_seed(0)
    net = ResNetPatchFeatures("resnet18_w16", "none", (2, 3))
    maps = net(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 8, 8), (2, 64, 4, 4)]
    assert len(net.stages) == 3 and not net.training and not any(p.requires_grad for p in net.parameters())
    assert PatchCore.min_img_size(PatchCoreConfig()) == 16
    assert PatchCore.min_img_size(PatchCoreConfig(layers=(1, 2, 3, 4))) == 32
    assert PatchCore.min_img_size(PatchCoreConfig(layers=(1,))) == 4


# ----------------------------------------------------------------------------- scores (hand-computed)
def test_nearest_neighbours_by_hand_and_in_chunks() -> None:
    bank = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    queries = torch.tensor([[0.0, 1.0], [3.0, 0.0], [9.0, 0.0], [3.0, 4.0]])
    for chunk in (1, 5, 2**24):
        squared, index = nearest_neighbours(queries, bank, chunk_elements=chunk)
        assert index.tolist() == [0, 0, 2, 1]
        assert squared.tolist() == [1.0, 9.0, 1.0, 0.0]


def test_reweighting_factor_by_hand() -> None:
    # m_test* = (0, 2); its nearest bank feature m* = (0, 0) at 2; m*'s neighbours: (3, 0) at 3, then
    # (0, -4) at 4; distances from m_test*: 2, sqrt(13), 6.
    bank = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, -4.0], [10.0, 10.0]])
    test = torch.tensor([[0.0, 2.0]])
    nn_index = torch.tensor([0])
    d = [2.0, math.sqrt(13.0), 6.0]
    w2 = 1 - math.exp(d[0]) / (math.exp(d[0]) + math.exp(d[1]))
    w3 = 1 - math.exp(d[0]) / sum(math.exp(v) for v in d)
    assert reweighting_factors(test, nn_index, bank, 2).item() == pytest.approx(w2, rel=1e-6)
    assert reweighting_factors(test, nn_index, bank, 3).item() == pytest.approx(w3, rel=1e-6)
    assert reweighting_factors(test, nn_index, bank, 1).item() == 1.0
    # dense limit: every neighbour as near as m* -> 1 - 1/b
    ring = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert reweighting_factors(torch.zeros(1, 2), torch.tensor([0]), ring, 4).item() == pytest.approx(0.75)
    # b larger than the bank: capped at its size
    assert reweighting_factors(torch.zeros(1, 2), torch.tensor([0]), ring, 50).item() == pytest.approx(0.75)


def _hand_fed(features: torch.Tensor, bank: torch.Tensor, **config) -> PatchCore:
    """A PatchCore whose memory bank and test patch features (B, h, w, D) are given by hand."""
    det = PatchCore(**config)
    det.device, det.memory_bank, det.grid = "cpu", bank, tuple(features.shape[1:3])
    det._embed = lambda images: features[: len(images)]  # type: ignore[method-assign]
    return det


def test_image_score_is_the_largest_nearest_neighbour_distance() -> None:
    bank = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, -4.0], [10.0, 10.0]])
    # one image, 2 x 2 patches: nearest distances 0, 1, 2 (to (0, 0)) and 5 (to (3, 0))
    patches = torch.tensor([[[[0.0, 0.0], [3.0, 1.0]], [[0.0, 2.0], [3.0, 5.0]]]])
    images = np.zeros((1, 8, 8, 3), np.uint8)
    euclid = _hand_fed(patches, bank, squared_distance=False)
    assert euclid.score(images).tolist() == [5.0]
    assert euclid._patch_scores(images)[1].tolist() == [[[0.0, 1.0], [2.0, 5.0]]]
    assert _hand_fed(patches, bank).score(images).tolist() == [25.0]  # official: squared distances
    # Eq. 7 on the most anomalous patch (3, 5): m* = (3, 0); its nearest other feature (0, 0) at 3
    w = 1 - math.exp(5.0) / (math.exp(5.0) + math.exp(math.sqrt(34.0)))
    reweighted = _hand_fed(patches, bank, squared_distance=False, reweight_neighbours=2)
    assert reweighted.score(images)[0] == pytest.approx(w * 5.0, rel=1e-6)


# ----------------------------------------------------------------------------- maps
def test_map_scaling_is_joint_over_the_call() -> None:
    maps = np.array([[[0.0, 1.0]], [[2.0, 4.0]]], dtype=np.float32)
    np.testing.assert_allclose(scale_jointly(maps), [[[0.0, 0.25]], [[0.5, 1.0]]])
    assert not scale_jointly(np.full((2, 3, 3), 7.0)).any()
    grid = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    plain = smooth_maps(grid, (4, 4), sigma=0)
    resized = F.interpolate(grid[:, None], size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(plain, resized.numpy())
    assert smooth_maps(grid, (4, 4), sigma=4).std() < plain.std()


def test_explain_maps_shape_range_and_localisation() -> None:
    train, labels, test, test_labels = smooth_blob_split(seed=0, n_normal=30, n_anom=4, n_test=6)
    det = PatchCore(**SMOKE).fit(TrainSet(train, labels))
    maps = det.explain(test)
    assert maps.shape == (12, 32, 32) and maps.dtype == np.float32
    assert maps.min() == 0.0 and maps.max() == 1.0  # scaled over the whole call
    assert maps[test_labels == 1].max(axis=(1, 2)).mean() > maps[test_labels == 0].max(axis=(1, 2)).mean()
    assert det.explain(test[:0]).shape == (0, 32, 32)


# ----------------------------------------------------------------------------- config, budgets
def test_config_parsing_and_checks() -> None:
    cfg = PatchCore.config_from_params({"layers": "1,2,3", "reweight_neighbours": "9",
                                        "squared_distance": "false", "coreset_fraction": "0.01"})
    assert cfg.layers == (1, 2, 3) and cfg.reweight_neighbours == 9 and cfg.squared_distance is False
    for bad in ({"layers": "2,5"}, {"coreset_fraction": "0"}, {"coreset_fraction": "1.5"},
                {"backbone": "vgg16"}):
        with pytest.raises(UserError):
            PatchCore.config_from_params(bad)
    images, labels = np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4)
    for bad_fit in ({"patch_size": 2}, {"layers": (3, 2)}):
        with pytest.raises(UserError):
            PatchCore(**{**SMOKE, **bad_fit}).fit(TrainSet(images, labels))
    with pytest.raises(UserError):  # no ImageNet weights exist for the narrow ResNet
        PatchCore(**{**SMOKE, "weights": "imagenet"}).fit(TrainSet(images, labels))
    with pytest.raises(UserError):  # below layer 3's stride
        PatchCore(**SMOKE).fit(TrainSet(np.zeros((4, 8, 8, 3), np.uint8), labels))
    with pytest.raises(UserError):  # no normal image
        PatchCore(**SMOKE).fit(TrainSet(images, np.ones(4)))


def test_budgets_and_required_weights() -> None:
    assert PatchCore.required_weights(PatchCoreConfig()) == ["wide_resnet50_2"]
    assert PatchCore.required_weights(PatchCoreConfig(weights="none")) == []
    paper = resolve_method_config(BUDGETS["paper"], "patchcore")
    assert paper.img_size == 256 and paper.config == PatchCoreConfig()  # the defaults are the paper's
    for name in ("quick", "smoke"):
        resolved = resolve_method_config(BUDGETS[name], "patchcore")
        assert resolved.config.weights == "none" and resolved.config.backbone == "resnet18_w16"
        assert resolved.img_size >= PatchCore.min_img_size(resolved.config)
        assert PatchCore.seconds_per_cell[name] > 0


# ----------------------------------------------------------------------------- contract, learning
def test_patchcore_passes_the_conformance_checks() -> None:
    report = check_detector(PatchCore, SMOKE)
    assert {"auc", "deterministic", "explain", "one_class_all_zero_labels",
            "one_class_ignores_anomalies"} <= set(report.passed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_features_still_separate_a_bright_square(seed: int) -> None:
    train, labels, test, test_labels = smooth_blob_split(seed=seed)
    det = PatchCore(**SMOKE).fit(TrainSet(train, labels, seed=seed))
    assert det.info["n_train_normals"] == 40 and det.info["ignored_labelled_anomalies"] == 6
    assert det.info["patches"] == 40 * 16 and det.info["memory_bank_size"] == 64
    assert roc_auc_score(test_labels, det.score(test)) > 0.95  # 1.0 on each seed when written
