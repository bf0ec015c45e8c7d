"""Q1 splits: seeded, reproducible, disjoint, manifest stored, bad n_anomaly refused."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_tiny_dataset

from fsad_bench.data.cache import DECODE_COUNTER, load_category
from fsad_bench.data.layout import scan_category
from fsad_bench.errors import DataError, UserError
from fsad_bench.splits import q1_split


@pytest.fixture
def index(tmp_path):
    return scan_category(make_tiny_dataset(tmp_path))


def test_split_identical_across_runs_and_disjoint(index):
    a, b = q1_split(index, 5, seed=1), q1_split(index, 5, seed=1)
    assert np.array_equal(a.train_idx, b.train_idx) and np.array_equal(a.test_idx, b.test_idx)
    assert a.manifest_hash == b.manifest_hash
    assert not set(a.train_idx) & set(a.test_idx)
    assert a.train_labels.sum() == 5
    assert len(a.test_idx) == 12 + 20 - 5
    labelled = a.train_idx[a.train_labels == 1]
    assert all(index.split[i] == "test" and index.cls[i] != "good" for i in labelled)
    assert a.manifest["labelled_anomalies"] == [index.files[i] for i in labelled]
    assert q1_split(index, 5, seed=2).manifest_hash != a.manifest_hash


def test_split_does_not_depend_on_listing_order(tmp_path):
    a = scan_category(make_tiny_dataset(tmp_path / "a"))
    b = scan_category(make_tiny_dataset(tmp_path / "b"))
    for folder in {f.rsplit("/", 1)[0] for f in a.files}:
        names = [f for f in a.files if f.rsplit("/", 1)[0] == folder]
        assert names == sorted(names)
    assert q1_split(a, 4, 0).manifest == q1_split(b, 4, 0).manifest


def test_more_than_half_the_anomalies_is_refused(index):
    with pytest.raises(UserError, match="more than half"):
        q1_split(index, 11, seed=0)
    q1_split(index, 10, seed=0)


def test_decoded_cache_is_hit(index):
    before = DECODE_COUNTER["images"]
    first = load_category(index, 16, "tiny", "tiny")
    decoded = DECODE_COUNTER["images"] - before
    assert decoded == len(index.files)
    second = load_category(index, 16, "tiny", "tiny")
    assert DECODE_COUNTER["images"] - before == decoded  # nothing decoded the second time
    assert np.array_equal(first.images, second.images) and first.images.shape[1:] == (16, 16, 3)
    anomalies = index.where("test", anomalous=True)
    assert first.masks[anomalies].reshape(len(anomalies), -1).max(1).min() == 1


def test_missing_folder_and_corrupt_image_name_the_path(tmp_path):
    with pytest.raises(DataError, match="train/good"):
        scan_category(tmp_path / "nothing")
    cat = make_tiny_dataset(tmp_path / "bad")
    (cat / "test/good/999.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="999.png"):
        load_category(scan_category(cat), 16, "bad", "tiny")
