"""Split rules of q2, q5, q6 and the K sweep; the packaged specs build their grids."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_tiny_dataset

from fsad_bench.data.layout import scan_category
from fsad_bench.errors import SkipCell
from fsad_bench.models.mil import topk_count
from fsad_bench.protocol import load_protocol, packaged_protocols
from fsad_bench.runner.generator import GridRequest, build_cells
from fsad_bench.runner.runner import run_grid
from fsad_bench.splits import q2_split, q5_split, q6_split
from fsad_bench.store import ResultStore


@pytest.fixture
def index(tmp_path):
    return scan_category(make_tiny_dataset(tmp_path, n_train=40, classes=("blob", "spot", "tiny"),
                                           n_per_class=12))


def test_q2_known_class_absent_from_test(index):
    split = q2_split(index, known_class="spot", n_anomaly=5, seed=0)
    cls = np.array(index.cls)
    assert (cls[split.train_idx[split.train_labels == 1]] == "spot").all()
    assert split.train_labels.sum() == 5
    assert "spot" not in set(cls[split.test_idx])
    assert {"blob", "tiny", "good"} == set(cls[split.test_idx])
    assert split.manifest["known_class"] == "spot"
    with pytest.raises(SkipCell, match="fewer than n_anomaly"):
        q2_split(index, known_class="spot", n_anomaly=13, seed=0)
    with pytest.raises(SkipCell, match="no anomaly class"):
        q2_split(index, known_class="nope", n_anomaly=5, seed=0)


def test_q5_test_set_identical_across_n(index):
    splits = [q5_split(index, n_anomaly=n, seed=3, max_anomaly=12) for n in (2, 5, 12)]
    for s in splits:
        assert np.array_equal(s.test_idx, splits[0].test_idx)
    assert [s.train_labels.sum() for s in splits] == [2, 5, 12]
    small = set(splits[0].train_idx[splits[0].train_labels == 1])
    assert small <= set(splits[1].train_idx[splits[1].train_labels == 1])  # the first n of one draw
    assert len(splits[0].test_idx) == 12 + 36 - 12
    with pytest.raises(SkipCell, match="more than half"):
        q5_split(index, n_anomaly=5, seed=0, max_anomaly=19)


def test_q6_polluting_anomalies_are_unlabelled_and_leave_the_test_set(index):
    split = q6_split(index, contamination=0.25, n_anomaly=5, seed=1)
    polluted = [index.files.index(f) for f in split.manifest["polluting_anomalies"]]
    assert len(polluted) == 10  # round(0.25 * 40)
    train = dict(zip(split.train_idx.tolist(), split.train_labels.tolist()))
    assert all(train[i] == 0 and index.cls[i] != "good" for i in polluted)
    assert not set(polluted) & set(split.test_idx)
    assert len(split.train_idx) == 40 + 5  # normals replaced, not added
    assert sum(index.cls[i] != "good" for i, y in train.items() if y == 0) == 10
    assert len(split.test_idx) == 12 + 36 - 15
    clean = q6_split(index, contamination=0.0, n_anomaly=5, seed=1)
    assert clean.manifest["polluting_anomalies"] == [] and len(clean.train_idx) == 45
    with pytest.raises(SkipCell, match="contamination"):
        q6_split(index, contamination=0.75, n_anomaly=5, seed=1)


def test_ksweep_changes_k():
    spec = load_protocol("ksweep")
    ratios = [s["topk_ratio"] for s in spec.setting_grid()]
    assert ratios == [0.01, 0.05, 0.10, 0.15, 0.20]
    size = spec.budget("quick").method_params("devnet")["img_size"]
    cells = (size // 32) ** 2
    ks = [topk_count(cells, r) for r in ratios]
    assert ks == sorted(ks) and ks[0] < ks[-1]
    assert [topk_count(14 * 14, r) for r in ratios] == [1, 9, 19, 29, 39]  # paper resolution


def test_every_packaged_spec_loads_with_three_budgets():
    for name in packaged_protocols():
        spec = load_protocol(name)
        assert set(spec.budgets) >= {"paper", "quick", "smoke"}, name
        assert spec.setting_grid(), name


def test_q2_grid_expands_classes_and_reports_impossible_cells(tmp_path):
    root = tmp_path / "data"
    make_tiny_dataset(root / "elpv", category="elpv", classes=("mono", "poly"), n_per_class=12)
    (root / "elpv/elpv/test/poly").rename(root / "elpv/elpv/test/poly_old")  # leave one class
    make_tiny_dataset(root / "hyperkvasir", category="hyperkvasir",
                      classes=("barretts", "esophagitis-a"), n_per_class=8)
    spec = load_protocol("q2")
    req = GridRequest(methods=["toy_detectors:Brightness"], datasets=["elpv", "hyperkvasir"], seeds=[0],
                      budget="smoke", data_root=root)
    cells, _ = build_cells(spec, req)
    assert sorted((c.dataset, c.setting["known_class"]) for c in cells) == [
        ("elpv", "mono"), ("elpv", "poly"), ("hyperkvasir", "barretts"),
        ("hyperkvasir", "barretts-short-segment"), ("hyperkvasir", "esophagitis-a")]
    with ResultStore(tmp_path / "out") as store:
        summary = run_grid(cells, store, progress=False)
        df = store.dataframe()
    assert summary.ok == 1 and not summary.failed
    status = {(r.dataset, r.setting["known_class"]): r.status for r in df.itertuples()}
    # mono runs (poly_old is the unseen class); too few images or an absent class: not applicable
    assert status.pop(("elpv", "mono")) == "ok"
    assert set(status.values()) == {"skipped"}
    reasons = " ".join(df.error)
    assert "fewer than n_anomaly" in reasons and "no anomaly class" in reasons
    with ResultStore(tmp_path / "out") as store:
        assert run_grid(cells, store, progress=False).skipped == len(cells)  # none is retried
