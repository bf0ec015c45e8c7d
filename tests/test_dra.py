"""DRA: head targets and loss routing, CutMix bounds, the score combination, the batch and reference
draws, the learning-rate order, BatchNorm recalibration, determinism, external pseudo-anomaly folders,
the conformance checks, and that training beats the untrained network on a small set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch.optim.optimizer import register_optimizer_step_pre_hook

from fsad_bench.cli import main
from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import DataError, UserError
from fsad_bench.metrics import image_metrics
from fsad_bench.testing import check_detector
from fsad_methods.dra import DRA, DRABatches, DRAConfig, DRANetwork, epoch_learning_rate
from fsad_methods.dra_loss import HeadScores, anomaly_score, dra_loss, head_losses, head_targets
from fsad_methods.pseudo_anomalies import (
    CutMixPatch,
    PseudoAnomalies,
    colour_jitter,
    cutmix,
    draw_cutmix_patch,
    external_image_files,
    paste_cutmix,
)

#: the smoke budget's network at 32 px (the conformance set's size), cheap enough for unit tests
TINY = dict(backbone="resnet18_w16", weights="none", epochs=1, steps_per_epoch=2, batch_size=8,
            bn_recalibration=True)


def textures(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    """Smooth random colour textures around grey 110 (float, not clipped)."""
    smooth = gaussian_filter(rng.normal(size=(n, size, size, 3)), sigma=(0, 1, 1, 0))
    return 110 + 40 * smooth / smooth.std(axis=(1, 2, 3), keepdims=True)


def low_contrast_set(rng: np.random.Generator, n_normal: int, n_anomaly: int, size: int = 32
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Normals: textures; anomalies: the same textures at 40 % contrast. An anomaly is *closer* to the
    normals' mean than a normal is, so the untrained DRA (whose composite head scores a random
    projection of the distance to the reference) ranks anomalies low, and only training can learn
    to rank them high."""
    x = textures(rng, n_normal + n_anomaly, size)
    x[n_normal:] = 110 + 0.4 * (x[n_normal:] - 110)
    labels = np.r_[np.zeros(n_normal), np.ones(n_anomaly)].astype(np.int64)
    return np.clip(x, 0, 255).round().astype(np.uint8), labels


@contextmanager
def optimiser_steps_disabled() -> Iterator[list[int]]:
    """Every torch.optim step skips every parameter (gradients dropped before the step); counts them."""
    steps: list[int] = []

    def drop_gradients(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        steps.append(1)
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    handle = register_optimizer_step_pre_hook(drop_gradients)
    try:
        yield steps
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------
# heads: targets, loss routing, score combination

LABELS = torch.tensor([0, 1, 2, 0, 2, 1])  # normal, seen, pseudo, normal, pseudo, seen


def test_head_targets_on_a_hand_made_batch():
    t = head_targets(LABELS)
    # holistic: every sample, 1 for normals (it scores normality)
    assert t.holistic.mask.tolist() == [True] * 6
    assert t.holistic.target.tolist() == [1, 0, 0, 1, 0, 0]
    # seen: no pseudo-anomalies; 1 for labelled anomalies
    assert t.seen.mask.tolist() == [True, True, False, True, False, True]
    assert t.seen.target.tolist() == [0, 1, 0, 1]
    # pseudo: no labelled anomalies; 1 for pseudo-anomalies
    assert t.pseudo.mask.tolist() == [True, False, True, True, True, False]
    assert t.pseudo.target.tolist() == [0, 1, 0, 1]
    # composite: every sample, 1 for everything not normal
    assert t.composite.mask.tolist() == [True] * 6
    assert t.composite.target.tolist() == [0, 1, 1, 0, 1, 1]


def test_loss_of_all_zero_scores_is_the_margin_times_each_heads_positive_share():
    zeros = HeadScores(*(torch.zeros(6) for _ in range(4)))
    gen = torch.Generator().manual_seed(0)
    # scores 0 ~ the prior's mean: targets 0 cost ~0, targets 1 cost ~margin 5
    losses = head_losses(zeros, LABELS, n_ref=200_000, generator=gen)
    expected = [5 * 2 / 6, 5 * 2 / 4, 5 * 2 / 4, 5 * 4 / 6]
    assert [x.item() for x in losses] == pytest.approx(expected, abs=0.03)
    total = dra_loss(zeros, LABELS, n_ref=200_000, generator=torch.Generator().manual_seed(0))
    assert total.item() == pytest.approx(sum(expected), abs=0.1)


def test_loss_reaches_each_head_only_through_its_samples():
    scores = HeadScores(*(torch.full((6,), 1.0, requires_grad=True) for _ in range(4)))
    dra_loss(scores, LABELS, generator=torch.Generator().manual_seed(0)).backward()
    hol, seen, pseudo, comp = (s.grad for s in scores)
    normal, seen_anom, pseudo_anom = LABELS == 0, LABELS == 1, LABELS == 2
    # the seen head never learns from pseudo-anomalies, the pseudo head never from labelled anomalies
    assert (seen[pseudo_anom] == 0).all() and (seen[~pseudo_anom] != 0).all()
    assert (pseudo[seen_anom] == 0).all() and (pseudo[~seen_anom] != 0).all()
    # at score 1 (below the margin): targets 1 are pushed up (negative gradient), targets 0 down
    assert (hol[normal] < 0).all() and (hol[~normal] > 0).all()
    assert (seen[seen_anom] < 0).all() and (seen[normal] > 0).all()
    assert (pseudo[pseudo_anom] < 0).all() and (pseudo[normal] > 0).all()
    assert (comp[~normal] < 0).all() and (comp[normal] > 0).all()


def test_a_head_without_samples_adds_zero():
    labels = torch.tensor([2, 2, 2])  # no normal, no labelled anomaly: the seen head has no sample
    scores = HeadScores(*(torch.full((3,), 2.0, requires_grad=True) for _ in range(4)))
    losses = head_losses(scores, labels, generator=torch.Generator().manual_seed(0))
    assert losses.seen.item() == 0.0 and all(torch.isfinite(x) for x in losses)
    dra_loss(scores, labels).backward()
    assert (scores.seen.grad == 0).all()


def test_score_combination_on_hand_made_head_outputs():
    heads = HeadScores(holistic=torch.tensor([1.0, 2.0, 0.0]), seen=torch.tensor([3.0, 0.0, 0.25]),
                       pseudo=torch.tensor([0.5, 1.0, 0.25]), composite=torch.tensor([2.0, 0.0, 0.5]))
    # -holistic + seen + pseudo + composite: a high normality score lowers the anomaly score
    assert anomaly_score(heads).tolist() == [4.5, -1.0, 1.0]


def test_network_score_is_the_combination_of_heads_averaged_over_scales():
    torch.manual_seed(0)
    net = DRANetwork("resnet18_w16", "none", n_scales=2).eval()
    x, ref = torch.randn(3, 3, 64, 64), torch.randn(5, 3, 64, 64)
    net.set_reference(ref)
    with torch.no_grad():
        heads = net.head_scores(x)
        half = F.interpolate(x, size=(32, 32), mode="nearest")
        full_ref, half_ref = (f.mean(0, keepdim=True) for f in net.features(ref))
        per_scale = [net.heads(net.trunk(x), full_ref), net.heads(net.trunk(half), half_ref)]
        expected = HeadScores(*((a + b) / 2 for a, b in zip(*per_scale)))
        assert all(torch.allclose(h, e, atol=1e-6) for h, e in zip(heads, expected))
        assert torch.allclose(net(x), -heads.holistic + heads.seen + heads.pseudo + heads.composite)
        # the training forward with the reference in front of the batch scores the same in eval mode
        trained_view = net.training_scores(torch.cat([ref, x]), n_reference=5)
        assert all(torch.allclose(h, e, atol=1e-5) for h, e in zip(trained_view, heads))
    assert (heads.holistic >= 0).all() and (heads.seen >= 0).all()  # |.| as the authors' heads


def test_network_without_reference_refuses_to_score():
    net = DRANetwork("resnet18_w16", "none").eval()
    with pytest.raises(RuntimeError, match="set_reference"):
        net(torch.randn(1, 3, 64, 64))


# ----------------------------------------------------------------------------------------------
# CutMix pseudo-anomalies


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (448, 448), (40, 96)])
def test_cutmix_patch_bounds_over_many_draws(size):
    h, w = size
    rng = np.random.default_rng(0)
    draws = [draw_cutmix_patch(h, w, rng) for _ in range(400)]
    fractions = np.array([d.area / (h * w) for d in draws])
    aspects = np.array([d.aspect for d in draws])
    assert fractions.min() >= 0.02 and fractions.max() <= 0.15
    assert aspects.min() >= 0.3 - 1e-12 and aspects.max() <= 1 / 0.3 + 1e-12
    for d in draws:
        assert 0 <= d.source_y <= h - d.height and 0 <= d.source_x <= w - d.width
        assert 0 <= d.target_y <= h - d.height and 0 <= d.target_x <= w - d.width
        assert sorted(d.order) == [0, 1, 2, 3]
        assert 0.9 <= d.brightness <= 1.1 and 0.9 <= d.contrast <= 1.1 and 0.9 <= d.saturation <= 1.1
        assert -0.1 <= d.hue <= 0.1
    # the draws cover the ranges, not one corner of them
    assert fractions.min() < 0.04 and fractions.max() > 0.12
    assert aspects.min() < 0.5 and aspects.max() > 2.0


def test_cutmix_changes_only_the_target_rectangle():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 256, (3, 64, 64), dtype=np.uint8))
    before = image.clone()
    for _ in range(50):
        d = draw_cutmix_patch(64, 64, rng)
        out = paste_cutmix(image, d)
        assert torch.equal(image, before)  # the input is never modified
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[d.target_y:d.target_y + d.height, d.target_x:d.target_x + d.width] = True
        assert torch.equal(out[:, ~inside], image[:, ~inside])
        source = image[:, d.source_y:d.source_y + d.height, d.source_x:d.source_x + d.width]
        assert torch.equal(out[:, inside].reshape(3, d.height, d.width), colour_jitter(source, d))
    out = cutmix(image, np.random.default_rng(2))
    assert out.shape == image.shape and out.dtype == torch.uint8 and not torch.equal(out, image)


def test_neutral_jitter_pastes_the_source_patch_unchanged():
    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    d = CutMixPatch(height=4, width=6, source_y=1, source_x=2, target_y=20, target_x=10, brightness=1.0,
                    contrast=1.0, saturation=1.0, hue=0.0, order=(3, 2, 1, 0))
    out = paste_cutmix(image, d)
    assert torch.equal(out[:, 20:24, 10:16], image[:, 1:5, 2:8])
    darker = paste_cutmix(image, CutMixPatch(4, 6, 1, 2, 20, 10, 0.9, 1.0, 1.0, 0.0, (0, 1, 2, 3)))
    assert (darker[:, 20:24, 10:16].int() <= image[:, 1:5, 2:8].int()).all()


def test_cutmix_draws_are_seeded():
    a = [draw_cutmix_patch(64, 64, np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert draw_cutmix_patch(64, 64, np.random.default_rng(8)) != a[0]


# ----------------------------------------------------------------------------------------------
# batches, reference draws, learning-rate order


def test_batches_are_two_thirds_normals_and_seeded():
    labels = np.array([0] * 30 + [1] * 6)
    a = DRABatches(labels, 48, 5, 0.5, True, seed=3)
    b = DRABatches(labels, 48, 5, 0.5, True, seed=3)
    pseudo_share = []
    for _ in range(20):
        idx, lab = a.batch()
        idx_b, lab_b = b.batch()
        assert np.array_equal(idx, idx_b) and np.array_equal(lab, lab_b)
        assert len(idx) == 48 and (labels[idx[:32]] == 0).all() and (labels[idx[32:]] == 1).all()
        assert set(lab[:32]) <= {0, 2} and (lab[32:] == 1).all()
        pseudo_share.append((lab[:32] == 2).mean())
        ref, ref_pseudo = a.reference()
        assert np.array_equal(ref, b.reference()[0]) and len(ref) == 5 and (labels[ref] == 0).all()
    assert 0.4 < np.mean(pseudo_share) < 0.6  # each normal slot becomes a pseudo-anomaly with p = 1/2
    only_normals = DRABatches(np.zeros(10, np.int64), 9, 5, 0.0, False, seed=0)
    idx, lab = only_normals.batch()
    assert len(idx) == 9 and (lab == 0).all() and not only_normals.reference()[1].any()


def test_learning_rate_follows_the_authors_scheduler_order():
    lrs = [epoch_learning_rate(2e-4, 0.1, 10, e, step_first=True) for e in range(30)]
    # scheduler.step() at the start of each epoch: the first decay comes after 9 epochs, not 10
    assert lrs[:9] == [2e-4] * 9 and lrs[9] == pytest.approx(2e-5) and lrs[19] == pytest.approx(2e-6)
    assert lrs[29] == pytest.approx(2e-7)
    devnet_order = [epoch_learning_rate(2e-4, 0.1, 10, e, step_first=False) for e in range(11)]
    assert devnet_order[:10] == [2e-4] * 10 and devnet_order[10] == pytest.approx(2e-5)


@pytest.mark.parametrize("step_first, expected", [(True, [1e-3, 1e-4, 1e-4]), (False, [1e-3, 1e-3, 1e-4])])
def test_fit_uses_that_learning_rate_per_epoch(step_first, expected):
    seen: list[float] = []
    x, y = low_contrast_set(np.random.default_rng(0), 12, 3)
    with register_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"])):
        DRA(**{**TINY, "epochs": 3, "steps_per_epoch": 1, "lr": 1e-3, "lr_step_epochs": 2,
               "scheduler_step_first": step_first}).fit(TrainSet(x, y, seed=0))
    assert seen == pytest.approx(expected)


@contextmanager
def register_hook(hook) -> Iterator[None]:
    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_test_reference_modes():
    x, y = low_contrast_set(np.random.default_rng(0), 12, 3)
    authors = DRA(**TINY).fit(TrainSet(x, y, seed=0)).info["test_reference"]
    assert authors["mode"] == "authors" and len(authors["train_indices"]) == 5
    assert all(y[i] == 0 for i in authors["train_indices"]) and len(authors["pseudo_anomalies"]) == 5
    normals = DRA(**TINY, test_reference="normals").fit(TrainSet(x, y, seed=0)).info["test_reference"]
    idx = normals["train_indices"]
    assert len(set(idx)) == 5 and all(y[i] == 0 for i in idx) and not any(normals["pseudo_anomalies"])


def test_batchnorm_recalibration_gives_the_composite_head_its_test_time_statistics():
    x, y = low_contrast_set(np.random.default_rng(0), 20, 4)
    det = DRA(**TINY).fit(TrainSet(x, y, seed=0))  # 24 images: one recalibration chunk per scale
    net = det.network.eval()
    conv, bn = net.composite.residual[0], net.composite.residual[1]
    with torch.no_grad():
        inputs = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        feats = net.features((inputs - mean) / std)  # eval-mode trunk, as at test time
        pre_bn = [conv(ref - f) for f, ref in zip(feats, net.reference_means)]
    # cumulative average over the two scales' batches of the training images' residuals
    expected = torch.stack([p.mean(dim=(0, 2, 3)) for p in pre_bn]).mean(0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# determinism, configuration


def test_fit_is_deterministic_for_a_seed():
    x, y = low_contrast_set(np.random.default_rng(1), 12, 3)
    a = DRA(**TINY).fit(TrainSet(x, y, seed=3))
    b = DRA(**TINY).fit(TrainSet(x, y, seed=3))
    assert np.array_equal(a.score(x), b.score(x))
    assert a.info == b.info and a.loss_history == b.loss_history
    c = DRA(**TINY).fit(TrainSet(x, y, seed=4))
    assert not np.array_equal(a.score(x), c.score(x))


def test_config_defaults_are_the_authors_code_and_the_paper_text_is_selectable():
    c = DRAConfig()
    assert (c.epochs, c.steps_per_epoch, c.batch_size, c.lr, c.weight_decay) == (30, 20, 48, 2e-4, 1e-5)
    assert (c.lr_step_epochs, c.lr_gamma, c.grad_clip, c.rotation) == (10, 0.1, 1.0, 180.0)
    assert (c.reference_size, c.topk_ratio, c.n_scales, c.margin, c.n_ref) == (5, 0.1, 2, 5.0, 5000)
    assert (c.pseudo_anomaly_rate, c.reference_pseudo_anomalies, c.scheduler_step_first) == (0.5, True, True)
    assert (c.backbone, c.weights, c.pseudo_anomaly_dir) == ("resnet18", "imagenet", "")
    assert (c.bn_recalibration, c.test_reference) == (False, "authors")
    text = DRA.config_from_params({"lr": "1e-3", "weight_decay": "1e-2"})  # --set dra.lr=1e-3 ...
    assert (text.lr, text.weight_decay) == (1e-3, 1e-2)
    assert DRA.budgets["paper"] == {"img_size": 448, "weights": "imagenet", "backbone": "resnet18",
                                    "epochs": 30, "steps_per_epoch": 20, "batch_size": 48, "lr": 2e-4,
                                    "weight_decay": 1e-5}
    assert DRA.required_weights(c) == ["resnet18"] and DRA.required_weights(DRAConfig(weights="none")) == []
    assert DRA.min_img_size(c) == 64 and DRA.min_img_size(DRAConfig(n_scales=1)) == 32
    with pytest.raises(UserError, match="topk_ratio"):
        DRA.config_from_params({"topk_ratio": 0})


# ----------------------------------------------------------------------------------------------
# external pseudo-anomaly images


def _write_images(folder: Path, colours: dict[str, tuple[int, int, int]]) -> None:
    for rel, colour in colours.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 10), colour).save(path)


def test_external_pseudo_anomalies_are_the_folders_images(tmp_path):
    colours = {"b/x.png": (255, 0, 0), "a.jpg": (0, 255, 0), "b/y.bmp": (0, 0, 255)}
    _write_images(tmp_path / "lag", colours)
    (tmp_path / "lag" / "notes.txt").write_text("not an image")
    files = external_image_files(tmp_path / "lag")
    assert [p.relative_to(tmp_path / "lag").as_posix() for p in files] == ["a.jpg", "b/x.png", "b/y.bmp"]
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    maker = PseudoAnomalies(images, np.arange(4), np.random.default_rng(0), files)
    made = [maker.make() for _ in range(30)]
    assert maker.kind == "external" and all(m.shape == (3, 16, 16) for m in made)
    centres = {tuple(m[:, 8, 8].tolist()) for m in made}  # resized, not CutMix'ed: solid colours (jpg ~)
    assert len(centres) == 3 and (255, 0, 0) in centres and (0, 0, 255) in centres
    x, y = low_contrast_set(np.random.default_rng(0), 12, 3)
    det = DRA(**TINY, pseudo_anomaly_dir=str(tmp_path / "lag")).fit(TrainSet(x, y, seed=0))
    assert det.info["pseudo_anomalies"].startswith("external: 3 images in")
    assert DRA(**TINY).fit(TrainSet(x, y, seed=0)).info["pseudo_anomalies"] == "cutmix"


@pytest.mark.parametrize("make, needle", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no images"),
    (lambda p: (p / "file.png").write_bytes(b"") or p / "file.png", "is not a folder"),
])
def test_bad_pseudo_anomaly_folder_is_a_one_line_user_error(tmp_path, make, needle):
    folder = make(tmp_path)
    with pytest.raises(UserError) as err:
        DRA.config_from_params({"pseudo_anomaly_dir": str(folder)})
    message = str(err.value)
    assert needle in message and str(folder) in message and "leave" in message and "\n" not in message


def test_bad_pseudo_anomaly_folder_fails_the_run_before_the_grid(tmp_path, capsys):
    code = main(["run", "--methods", "dra", "--budget", "smoke", "--seeds", "0", "--out",
                 str(tmp_path / "out"), "--set", f"dra.pseudo_anomaly_dir={tmp_path / 'nowhere'}",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pseudo_anomaly_dir" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unreadable_external_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    maker = PseudoAnomalies(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), np.arange(2),
                            np.random.default_rng(0), external_image_files(tmp_path))
    with pytest.raises(DataError, match="broken.png"):
        maker.make()


# ----------------------------------------------------------------------------------------------
# conformance and learning


def test_dra_passes_the_conformance_checks():
    # the smoke budget's network with 6 steps at lr 1e-3: 2 steps do not separate the tiny set
    report = check_detector(DRA, {**TINY, "steps_per_epoch": 6, "lr": 1e-3})
    assert {"auc", "deterministic", "explain", "bench_phases", "score_per_image"} <= set(report.passed)


def test_training_beats_the_untrained_network():
    params = {**TINY, "epochs": 3, "steps_per_epoch": 10, "batch_size": 12, "lr": 1e-3, "lr_step_epochs": 100}
    trained, untrained = [], []
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        x, y = low_contrast_set(rng, 40, 6)
        xt, yt = low_contrast_set(rng, 20, 20)
        trained.append(image_metrics(yt, DRA(**params).fit(TrainSet(x, y, seed=seed)).score(xt))["auc_roc"])
        with optimiser_steps_disabled() as steps:
            det = DRA(**params).fit(TrainSet(x, y, seed=seed))
        assert len(steps) == 30
        untrained.append(image_metrics(yt, det.score(xt))["auc_roc"])
    assert min(trained) > 0.9, trained
    assert all(t > u + 0.2 for t, u in zip(trained, untrained)), (trained, untrained)
    assert np.mean(trained) - np.mean(untrained) > 0.5, (trained, untrained)
