"""Split rules of q2, q5, q6 and the K sweep; the packaged specs build their grids."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_dataset

from fsad_bench.data.layout import CategoryIndex, scan_category
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import SkipCell
from fsad_bench.protocol import load_protocol, packaged_protocols
from fsad_bench.published_settings import published_settings_differ
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.request import RunRequest
from fsad_bench.runner.runner import run_grid
from fsad_bench.splits import q2_split, q5_split, q6_split
from fsad_bench.store import ResultStore
from fsad_methods.mil import topk_count


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
    with pytest.raises(SkipCell, match="no anomaly class"):
        q2_split(index, known_class="nope", n_anomaly=5, seed=0)


def _index(classes: dict[str, int], n_train: int = 20, n_test_good: int = 10) -> CategoryIndex:
    """An in-memory category: ``classes`` maps each anomaly class to its number of test images."""
    index = CategoryIndex(root=Path("mem"))
    items = [("train", "good", n_train), ("test", "good", n_test_good)]
    items += [("test", c, n) for c, n in classes.items()]
    for split, cls, n in items:
        for i in range(n):
            index.files.append(f"{split}/{cls}/{i:03d}.png")
            index.split.append(split)
            index.cls.append(cls)
            index.masks.append(None)
    return index


def test_q2_small_known_class_gives_all_its_images_as_dra_does():
    # AITEX / Mastcam have known classes of fewer than 10 images: DRA labels all of them
    index = _index({"small": 7, "big": 30, "tiny": 5})
    split = q2_split(index, known_class="small", n_anomaly=10, seed=0)
    cls = np.array(index.cls)
    labelled = split.train_idx[split.train_labels == 1]
    assert len(labelled) == 7 and (cls[labelled] == "small").all()
    assert split.manifest["n_labelled"] == 7 and split.manifest["n_anomaly"] == 10
    assert set(cls[split.test_idx]) == {"good", "big", "tiny"}
    assert len(split.test_idx) == 10 + 30 + 5
    # a class of 6+ images with at least n_anomaly: exactly n_anomaly, the rest of the class leaves too
    big = q2_split(index, known_class="big", n_anomaly=10, seed=0)
    assert big.train_labels.sum() == 10 and "big" not in set(cls[big.test_idx])
    # the paper excludes classes of 1-5 samples
    with pytest.raises(SkipCell, match="fewer than 6"):
        q2_split(index, known_class="tiny", n_anomaly=10, seed=0)
    tiny = q2_split(index, known_class="tiny", n_anomaly=10, seed=0, min_class_images=5)
    assert tiny.train_labels.sum() == 5


def test_q2_known_classes_are_the_papers_30_sets():
    spec = load_protocol("q2")
    sets = [(ds, c) for ds, classes in spec.known_classes.items() for c in classes]
    assert len(sets) == 30  # sec. 6.6.1 and the p-value: 30 tier-2 datasets
    printed = pd.read_csv(resources.files("fsad_bench.published") / "table3.csv")
    printed = printed.dropna(subset=["known_class"])
    table3 = {(c if ds == "mvtec" else ds, k) for ds, c, k in
              printed[["dataset", "category", "known_class"]].itertuples(index=False)}
    assert len(table3) == 29 and table3 <= set(sets)
    assert set(sets) - table3 == {("hyperkvasir", "esophagitis-b-d")}  # the row Table 3 lacks
    assert spec.split_args == {"min_class_images": 6}


def test_q5_test_set_identical_across_n(index):
    splits = [q5_split(index, n_anomaly=n, seed=3, max_anomaly=12) for n in (2, 5, 12)]
    for s in splits:
        assert np.array_equal(s.test_idx, splits[0].test_idx)
    assert [s.train_labels.sum() for s in splits] == [2, 5, 12]
    small = set(splits[0].train_idx[splits[0].train_labels == 1])
    assert small <= set(splits[1].train_idx[splits[1].train_labels == 1])  # the first n of one draw
    assert len(splits[0].test_idx) == 12 + 36 - 12
    with pytest.raises(SkipCell, match="fewer than 10"):
        q5_split(index, n_anomaly=5, seed=0, max_anomaly=27)  # 9 would be left


def test_q5_keeps_sdd_with_54_anomalies():
    # SDD has 54 anomalies: the draw of 40 leaves 14 for a test set that is the same for every n
    # (the Q1 half rule would have skipped it: 40 > 54 // 2)
    spec = load_protocol("q5")
    assert "sdd" in spec.datasets
    index = _index({"defect": 54}, n_train=30, n_test_good=20)
    splits = {n: q5_split(index, n_anomaly=n, seed=1, **spec.split_args) for n in spec.settings["n_anomaly"]}
    assert sorted(splits) == [5, 10, 20, 40]
    for s in splits.values():
        assert np.array_equal(s.test_idx, splits[40].test_idx)
        assert s.manifest_hash != "" and s.manifest["max_anomaly"] == 40
    assert {n: int(s.train_labels.sum()) for n, s in splits.items()} == {5: 5, 10: 10, 20: 20, 40: 40}
    assert int(splits[5].test_labels.sum()) == 14 and len(splits[5].test_idx) == 20 + 14
    for small, large in ((5, 10), (10, 20), (20, 40)):  # nested draws: the first n of one permutation
        assert set(splits[small].train_idx) <= set(splits[large].train_idx)
    assert not set(splits[40].train_idx[splits[40].train_labels == 1]) & set(splits[40].test_idx)
    with pytest.raises(SkipCell, match="leave 9 of the 49"):
        q5_split(_index({"defect": 49}), n_anomaly=5, seed=1, **spec.split_args)


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
    size = spec.set_at("quick")["img_size"]  # the protocol's own change at the quick budget
    cells = (size // 32) ** 2
    ks = [topk_count(cells, r) for r in ratios]
    assert ks == sorted(ks) and ks[0] < ks[-1]
    assert [topk_count(14 * 14, r) for r in ratios] == [1, 9, 19, 29, 39]  # paper resolution


def test_every_packaged_spec_loads_and_every_method_declares_the_three_budgets():
    for name in packaged_protocols():
        spec = load_protocol(name)
        assert spec.setting_grid(), name
        for method in spec.methods:
            assert set(load_detector(method).budgets) >= {"paper", "quick", "smoke"}, (name, method)


def test_q2_grid_expands_classes_and_reports_impossible_cells(tmp_path):
    root = tmp_path / "data"
    make_tiny_dataset(root / "elpv", category="elpv", classes=("mono", "poly"), n_per_class=12)
    (root / "elpv/elpv/test/poly").rename(root / "elpv/elpv/test/poly_old")  # leave one class
    make_tiny_dataset(root / "hyperkvasir", category="hyperkvasir",
                      classes=("barretts", "esophagitis-a"), n_per_class=8)
    for i in range(3, 8):  # esophagitis-a keeps 3 images: fewer than the paper's smallest class (6)
        (root / f"hyperkvasir/hyperkvasir/test/esophagitis-a/{i:03d}.png").unlink()
    spec = load_protocol("q2")
    req = RunRequest(methods=["toy_detectors:Brightness"], datasets=["elpv", "hyperkvasir"], seeds=[0],
                      budget="smoke", data_root=root)
    cells, _ = build_cells(spec, req)
    assert sorted((c.dataset, c.setting["known_class"]) for c in cells) == [
        ("elpv", "mono"), ("elpv", "poly"), ("hyperkvasir", "barretts"),
        ("hyperkvasir", "barretts-short-segment"), ("hyperkvasir", "esophagitis-a"),
        ("hyperkvasir", "esophagitis-b-d")]
    with ResultStore(tmp_path / "out") as store:
        summary = run_grid(cells, store, progress=False)
        df = store.dataframe()
    assert summary.ok == 2 and not summary.failed
    status = {(r.dataset, r.setting["known_class"]): r.status for r in df.itertuples()}
    # mono runs (poly_old is the unseen class); barretts with all its 8 images (fewer than 10, as
    # DRA); a class of 1-5 images or an absent class: not applicable
    assert status.pop(("elpv", "mono")) == "ok"
    assert status.pop(("hyperkvasir", "barretts")) == "ok"
    assert set(status.values()) == {"skipped"}
    reasons = " ".join(df.error)
    assert "fewer than 6" in reasons and "no anomaly class" in reasons
    with ResultStore(tmp_path / "out") as store:
        manifests = store.dataframe(with_blobs=True).manifest
    assert [m["n_labelled"] for m in manifests if m.get("known_class") == "barretts"] == [8]
    with ResultStore(tmp_path / "out") as store:
        assert run_grid(cells, store, progress=False).skipped == len(cells)  # none is retried


def test_mastcam_runs_at_its_native_64_px_everywhere(tmp_path):
    # one rule: a cell's size is its budget's, but Mastcam's 64 x 64 frames are never upsampled
    # (the paper: "the input resolution (64 x 64)"); other datasets keep the budget's 448 px
    root = tmp_path / "data"
    # 25 per class: q5's largest draw (40) leaves its 10 test anomalies (a grid of which no cell can
    # hold its setting is refused before it runs)
    make_tiny_dataset(root / "mastcam", category="mastcam", classes=("bedrock", "veins"), n_per_class=25,
                      size=64)
    make_tiny_dataset(root / "aitex", category="aitex", classes=("Nep", "Fuzzyball"), n_per_class=25)
    methods = ["devnet", "flos", "minns", "deepsad", "kdad", "dsvdd"]

    def sizes(protocol, budget, overrides=()):
        req = RunRequest(methods=methods, datasets=["mastcam", "aitex"], seeds=[0], budget=budget,
                          weights="none", overrides=list(overrides), data_root=root)
        return {(c.dataset, c.method): c.img_size for c in build_cells(load_protocol(protocol), req)[0]}

    for protocol in ("q1", "q2", "q5"):
        paper = sizes(protocol, "paper")
        assert {m: paper["mastcam", m] for m in methods} == {
            "devnet": 64, "flos": 64, "minns": 64, "deepsad": 64, "kdad": 64, "dsvdd": 32}, protocol
        assert {m: paper["aitex", m] for m in methods} == {
            "devnet": 448, "flos": 448, "minns": 448, "deepsad": 448, "kdad": 128, "dsvdd": 32}, protocol
    assert set(sizes("q1", "quick").values()) == {64, 32}   # the quick budget is at most 64 px anyway
    # smoke: 32 px, two-scale ResNet methods at their 64 px minimum; Mastcam never above its 64
    assert set(sizes("q1", "smoke").values()) == {32, 64}
    # an explicit size is taken as asked
    assert sizes("q1", "paper", ["devnet.img_size=448"])["mastcam", "devnet"] == 448
    assert sizes("q1", "paper", ["devnet.img_size=448"])["mastcam", "flos"] == 64
    # hence no K sweep on Mastcam (Fig. 6): at 64 px ResNet-18's map is 2x2 and every K is one patch
    ksweep = load_protocol("ksweep")
    assert "mastcam" not in ksweep.datasets
    assert {topk_count((64 // 32) ** 2, s["topk_ratio"]) for s in ksweep.setting_grid()} == {1}
    # and no Mastcam in the ablation (Table 5 has no Mastcam row; AlexNet needs 2 x 63 px)
    assert "mastcam" not in load_protocol("q4").datasets
    # the published Mastcam numbers were made at 64 px
    def size_lines(img_size):
        lines = published_settings_differ("flos", {"logit": "authors"}, img_size, dataset="mastcam")
        return [line for line in lines if line.startswith("img_size")]

    assert size_lines(64) == [] and size_lines(448) != []
