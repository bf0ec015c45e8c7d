"""Tests for the KDAD baseline: loss/score against hand-computed values, networks, training signal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import UserError
from fsad_bench.testing import check_detector
from fsad_methods.kdad import KDAD, KDADConfig, build_student, build_teacher
from fsad_methods.kdad_loss import (
    direction_distance,
    kdad_loss,
    kdad_score,
    layer_distances,
    magnitude_distance,
)


# ----------------------------------------------------------------------------- loss (hand-computed)
def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two samples of a 2x1x2 map (C=2, H=1, W=2): 4 values per sample."""
    s = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]],
                      [[[1.0, 2.0]], [[0.0, 2.0]]]])
    t = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]],
                      [[[2.0, 4.0]], [[0.0, 4.0]]]])
    return s, t


def test_direction_is_one_cosine_over_the_flattened_map() -> None:
    s, t = _pair()
    # sample 0: (1,0,0,0) vs (0,1,0,0) -> orthogonal -> 1 - 0 = 1
    # sample 1: (1,2,0,2) vs (2,4,0,4) -> parallel   -> 1 - 1 = 0
    assert torch.allclose(direction_distance(s, t), torch.tensor([1.0, 0.0]), atol=1e-6)
    # not a per-position cosine over channels: a position-wise mean would differ for this pair
    a = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # positions: (1,0) and (0,1)
    b = torch.tensor([[[[1.0, 0.0]], [[0.0, 3.0]]]])  # positions: (1,0) and (0,3): each cos = 1
    flat_cos = (1 * 1 + 1 * 3) / (math.sqrt(2) * math.sqrt(10))
    assert direction_distance(a, b).item() == pytest.approx(1 - flat_cos, abs=1e-6)


def test_magnitude_is_per_sample_mean_squared_error() -> None:
    s, t = _pair()
    # sample 0: diffs (1,-1,0,0) -> 2/4 = 0.5; sample 1: (-1,-2,0,-2) -> 9/4 = 2.25
    assert torch.allclose(magnitude_distance(s, t), torch.tensor([0.5, 2.25]))


def test_loss_and_score_combine_layers_with_lamda() -> None:
    s, t = _pair()
    s2, t2 = torch.ones(2, 3, 1, 1), torch.ones(2, 3, 1, 1) * 2.0  # parallel, MSE 1 for both samples
    lamda = 0.5
    per_sample = torch.tensor([1.0 + lamda * 0.5 + 0.0 + lamda * 1.0,
                               0.0 + lamda * 2.25 + 0.0 + lamda * 1.0])
    assert torch.allclose(kdad_score([s, s2], [t, t2], lamda), per_sample, atol=1e-6)
    assert torch.allclose(layer_distances([s, s2], [t, t2], lamda), per_sample, atol=1e-6)
    # the authors' form: sum_l [mean_b(1 - cos) + lamda * nn.MSELoss()(s_l, t_l)]
    authors = sum((1 - torch.nn.CosineSimilarity()(a.view(2, -1), b.view(2, -1))).mean()
                  + lamda * torch.nn.MSELoss()(a, b) for a, b in ((s, t), (s2, t2)))
    assert kdad_loss([s, s2], [t, t2], lamda).item() == pytest.approx(authors.item(), abs=1e-6)
    assert kdad_loss([s, s2], [t, t2], lamda).item() == pytest.approx(per_sample.mean().item(), abs=1e-6)


def test_loss_rejects_mismatched_layers() -> None:
    with pytest.raises(ValueError):
        kdad_loss([torch.ones(1, 2, 1, 1)], [torch.ones(1, 3, 1, 1)], 0.5)
    with pytest.raises(ValueError):
        kdad_loss([], [], 0.5)


# ----------------------------------------------------------------------------- networks
def test_student_is_the_authors_config_b_and_matches_teacher_maps() -> None:
    torch.manual_seed(0)
    student, teacher = build_student(), build_teacher("none")
    assert student.taps == (11, 20, 29, 38)  # the authors' output[3], [6], [9], [12]
    assert teacher.taps == (9, 16, 23, 30)   # VGG16 pools 2..5
    convs = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 16, 128, 16, 16, 256, 16, 16, 512, 16, 16, 512]
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in student.modules()) == 8  # not before a pool
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        shapes_s = [tuple(m.shape) for m in student(x)]
        shapes_t = [tuple(m.shape) for m in teacher(x)]
    assert shapes_s == shapes_t == [(2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4), (2, 512, 2, 2)]
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_required_weights_and_config_checks() -> None:
    assert KDAD.required_weights(KDADConfig()) == ["vgg16"]
    assert KDAD.required_weights(KDADConfig(weights="none")) == []
    assert KDAD.uses_labelled_anomalies is False
    cfg = KDAD.config_from_params({"lamda": "0.01", "epochs": "3", "teacher_bf16": "true"})
    assert cfg.lamda == 0.01 and cfg.epochs == 3 and cfg.teacher_bf16 is True
    small = TrainSet(np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4))
    with pytest.raises(UserError):
        KDAD(weights="none").fit(small)
    with pytest.raises(UserError):
        KDAD(weights="none", input_norm="nope").fit(TrainSet(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4)))


# ----------------------------------------------------------------------------- training signal
def _smooth_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth noise texture in [0, 1]: coarse noise upsampled bilinearly, grey-ish, per image."""
    coarse = rng.random((size // 8 + 1, size // 8 + 1))
    xs = np.linspace(0, coarse.shape[0] - 1, size)
    x0 = np.floor(xs).astype(int).clip(0, coarse.shape[0] - 2)
    f = xs - x0
    rows = coarse[x0] * (1 - f)[:, None] + coarse[x0 + 1] * f[:, None]
    img = rows[:, x0] * (1 - f)[None, :] + rows[:, x0 + 1] * f[None, :]
    img = 0.35 + 0.3 * img
    return np.repeat(img[..., None], 3, axis=2)


def tiny_set(seed: int, size: int = 32, n_normal: int = 40, n_anom: int = 6, n_test: int = 20
             ) -> tuple[TrainSet, np.ndarray, np.ndarray]:
    """Normals = smooth textures; anomalies = the same plus one bright square blob (8 px)."""
    rng = np.random.default_rng(seed)

    def normal() -> np.ndarray:
        return _smooth_texture(rng, size)

    def anomaly() -> np.ndarray:
        img = normal()
        y, x = rng.integers(2, size - 10, 2)
        img[y:y + 8, x:x + 8] = 1.0
        return img

    def u8(imgs: list[np.ndarray]) -> np.ndarray:
        return (np.stack(imgs) * 255).round().clip(0, 255).astype(np.uint8)

    train_x = u8([normal() for _ in range(n_normal)] + [anomaly() for _ in range(n_anom)])
    train_y = np.array([0] * n_normal + [1] * n_anom)
    test_x = u8([normal() for _ in range(n_test)] + [anomaly() for _ in range(n_test)])
    test_y = np.array([0] * n_test + [1] * n_test)
    return TrainSet(train_x, train_y, seed=seed), test_x, test_y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trains_on_normals_and_scores_the_blob_above_chance(seed: int) -> None:
    train, test_x, test_y = tiny_set(seed)
    det = KDAD(weights="none", epochs=8, batch_size=8, input_norm="imagenet").fit(train)
    scores = det.score(test_x)
    assert scores.shape == (len(test_x),) and np.all(np.isfinite(scores))
    assert det.info["teacher"] == "random" and det.info["ignored_labelled_anomalies"] == 6
    assert det.info["n_train_normals"] == 40 and det.info["teacher_cache"] is True
    assert det.loss_history[-1] < det.loss_history[0]
    assert roc_auc_score(test_y, scores) > 0.8


def test_deterministic_and_cache_does_not_change_results() -> None:
    train, test_x, _ = tiny_set(0, n_normal=16, n_test=4)
    a = KDAD(weights="none", epochs=2, batch_size=8).fit(train).score(test_x)
    b = KDAD(weights="none", epochs=2, batch_size=8).fit(train).score(test_x)
    c = KDAD(weights="none", epochs=2, batch_size=8, teacher_cache_mb=0).fit(train)
    assert c.info["teacher_cache"] is False
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c.score(test_x), rtol=1e-4, atol=1e-6)


def test_max_steps_caps_training() -> None:
    train, _, _ = tiny_set(0, n_normal=16, n_test=2)
    det = KDAD(weights="none", epochs=50, batch_size=8, max_steps=3).fit(train)
    assert det.info["steps"] == 3 and det.info["epochs_run"] == 1.5


def test_kdad_passes_the_conformance_checks() -> None:
    smoke = dict(weights="none", epochs=1, batch_size=8, max_steps=2, input_norm="imagenet")  # the smoke
    # budget's settings
    # one-class at two steps: no AUC asked, every contract check is
    report = check_detector(KDAD, smoke, min_auc=None, n_test=6)
    assert {"one_class_ignores_anomalies", "bench_phases", "explain"} <= set(report.passed)
