"""Q3: pixel AUC in both definitions against hand-computed values; the protocol end to end with
its figures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fsad_bench.cli import main
from fsad_bench.data.cache import decode_mask
from fsad_bench.metrics import pixel_metrics, resize_mask
from fsad_bench.store import ResultStore


def test_pixel_auc_both_definitions_hand_computed():
    # two anomalies and one normal image of 2x2 pixels
    masks = np.array([[[1, 0], [0, 0]], [[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    maps = np.array([[[0.9, 0.1], [0.2, 0.3]],      # anomaly 1: its defect pixel ranks first -> AUC 1
                     [[0.5, 0.1], [0.4, 0.6]],      # anomaly 2: pairs (0.5|0.4) (0.5|0.6) (0.1|0.4)
                     [[0.7, 0.0], [0.0, 0.0]]])     # (0.1|0.6) -> 1 of 4 pairs ranked right -> 0.25
    labels = np.array([1, 1, 0])
    m = pixel_metrics(maps, masks, labels)
    assert m["pixel_auc_each"] == [1.0, 0.25]
    assert m["pixel_auc_per_image"] == pytest.approx((1.0 + 0.25) / 2)  # the authors' number
    # pooled over all 12 pixels: positives 0.9, 0.5, 0.1; negatives 0.1 0.2 0.3 0.4 0.6 0.7 0 0 0
    pos, neg = [0.9, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.0, 0.0, 0.0]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    assert m["pixel_auc_pooled"] == pytest.approx(wins / (len(pos) * len(neg)))


def test_pixel_metrics_reject_mismatched_maps():
    with pytest.raises(ValueError, match="shape"):
        pixel_metrics(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)), np.array([1]))


def test_q3_end_to_end_with_figures(data_root, tmp_path, capsys):
    out = tmp_path / "q3"
    assert main(["run", "--protocol", "q3", "--methods", "devnet", "--datasets", "brainmri",
                 "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0", "--out", str(out),
                 "--no-progress"]) == 0
    with ResultStore(out) as store:
        row = store.dataframe(with_blobs=True).iloc[0]
    assert 0 <= row.metrics["pixel_auc_per_image"] <= 1 and 0 <= row.metrics["pixel_auc_pooled"] <= 1
    assert {e["class"] for e in row.scores["examples"]} == {"blob", "spot"}
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pixel_auc_per_image" in text and "pixel_auc_pooled" in text
    for name in ("q3_auc_vs_f1.png", "q3_heatmaps.png", "q3_auc_vs_f1.pdf"):
        assert (out / "figures" / name).stat().st_size > 3000
    # a method without explain() cannot run a localisation protocol: one-line error, exit 2
    assert main(["run", "--protocol", "q3", "--methods", "toy_detectors:Brightness", "--datasets",
                 "brainmri", "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0", "--out",
                 str(tmp_path / "q3b"), "--no-progress"]) == 2
    assert "has no explain()" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# masks resized as the authors' localisation does (cv2.resize INTER_LINEAR, then > 0)

def test_resize_mask_hand_computed():
    # 8 -> 2 px: INTER_LINEAR samples source x = (dx + 0.5) * 4 - 0.5 = 1.5 and 5.5, i.e. pixels 1-2
    # and 5-6 at weight 1/2 each, and nothing else (no antialiasing)
    mask = np.zeros((8, 8), np.uint8)
    mask[1, 1] = 255                      # weight 1/4 at output (0, 0): kept (> 0)
    mask[7, 7] = 255                      # never sampled: dropped
    np.testing.assert_array_equal(resize_mask(mask, 2), [[1, 0], [0, 0]])
    # PIL's BILINEAR widens its window when shrinking and keeps (7, 7) too; NEAREST drops (1, 1)
    assert (np.asarray(Image.fromarray(mask).resize((2, 2), Image.BILINEAR)) > 0).sum() == 2
    assert (np.asarray(Image.fromarray(mask).resize((2, 2), Image.NEAREST)) > 0).sum() == 0
    # a weight below half a grey level rounds to 0 in the authors' uint8 result
    faint = np.zeros((8, 8), np.float32)
    faint[1, 1] = 1.9                     # 1.9 / 4 = 0.475 < 0.5
    assert resize_mask(faint, 2).sum() == 0
    # same size: the mask itself; larger: every pixel the defect reaches
    np.testing.assert_array_equal(resize_mask(mask, 8), mask > 0)
    assert resize_mask(mask, 16)[1:5, 1:5].all() and resize_mask(mask, 16).dtype == np.uint8


def test_decoded_masks_keep_a_thin_defect_and_per_image_auc_counts_it(tmp_path):
    # a 1-px scratch on an even column of a 64 px mask: NEAREST to 32 px samples the odd columns
    # only and loses it (the old cache: an empty mask, so the anomaly silently left the per-image
    # mean); the authors' bilinear > 0 keeps it as column 5 (source columns 10-11, rows 8-39)
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 10] = 255
    path = tmp_path / "000_mask.png"
    Image.fromarray(mask).save(path)
    decoded = decode_mask(path, 32)
    assert (np.asarray(Image.fromarray(mask).resize((32, 32), Image.NEAREST)) > 0).sum() == 0
    assert set(np.flatnonzero(decoded.any(axis=0))) == {5}
    assert decoded[4:20, 5].all() and decoded.sum() == 16
    maps = np.zeros((2, 32, 32))
    maps[0, :, 5] = 1.0                                     # a map that finds the scratch
    maps[1] = np.random.default_rng(0).random((32, 32))
    masks = np.stack([decoded, np.zeros_like(decoded)])
    masks[1, 0, 0] = 1
    m = pixel_metrics(maps, masks, np.array([1, 1]))
    assert len([v for v in m["pixel_auc_each"] if v is not None]) == 2 and m["pixel_auc_each"][0] > 0.9


def test_resize_mask_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for src, size in ((1024, 448), (700, 448), (128, 448), (900, 64), (33, 32)):
        mask = np.zeros((src, src), np.uint8)
        for _ in range(4):
            y, x = rng.integers(0, src - 8, 2)
            h, w = rng.integers(1, max(2, src // 5), 2)
            mask[y:y + h, x:x + w] = 255
        authors = (cv2.resize(mask, (size, size)) > 0).astype(np.uint8)
        np.testing.assert_array_equal(resize_mask(mask, size), authors)
