"""Q3: pixel AUC in both definitions against hand-computed values; the protocol end to end with
its figures."""

from __future__ import annotations

import numpy as np
import pytest

from fsad_bench.cli import main
from fsad_bench.metrics import pixel_metrics
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
