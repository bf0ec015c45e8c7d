"""No image file is decoded twice: a real cell decodes each file of its category once, a second
cell on the same category decodes none, and training touches neither PIL nor a DataLoader."""

from __future__ import annotations

from collections import Counter

import numpy as np
import PIL.Image
import pytest
import torch

import fsad_bench.data.cache as cache
from fsad_bench.data.layout import scan_category
from fsad_bench.detectors.base import TrainSet
from fsad_bench.protocol import load_protocol
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.job import run_cell
from fsad_bench.runner.request import RunRequest
from fsad_bench.splits import SPLIT_RULES
from fsad_methods.devnet import DevNet


def _forbid(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} called")
    return fail


@pytest.fixture
def decoded_paths(monkeypatch):
    """Every path decode_image is called with (the loader looks the function up at call time)."""
    seen: Counter = Counter()
    original = cache.decode_image

    def counting(path, size):
        seen[str(path)] += 1
        return original(path, size)

    monkeypatch.setattr(cache, "decode_image", counting)
    return seen


def test_each_file_is_decoded_once_and_a_second_cell_decodes_none(data_root, decoded_paths, monkeypatch):
    req = RunRequest(methods=["devnet", "flos"], datasets=["brainmri"], seeds=[0, 1], budget="smoke",
                      data_root=data_root)
    cells, _ = build_cells(load_protocol("q1"), req)
    assert len(cells) == 4
    index = scan_category(data_root / "brainmri" / "brainmri")
    before = cache.DECODE_COUNTER["images"]
    first = run_cell(cells[0])
    assert first.status == "ok", first.error
    assert set(decoded_paths) == {str(index.root / f) for f in index.files}
    assert max(decoded_paths.values()) == 1
    assert cache.DECODE_COUNTER["images"] - before == len(index.files)

    # the other cells (other seed, other method) of the category: nothing decoded, PIL never opened
    decoded_paths.clear()
    monkeypatch.setattr(PIL.Image, "open", _forbid("PIL.Image.open"))
    for cell in cells[1:]:
        result = run_cell(cell)
        assert result.status == "ok", result.error
    assert not decoded_paths and cache.DECODE_COUNTER["images"] - before == len(index.files)


def test_devnet_training_uses_no_pil_and_no_dataloader(data_root, monkeypatch):
    index = scan_category(data_root / "brainmri" / "brainmri")
    data = cache.load_category(index, 32, "brainmri", "brainmri")
    split = SPLIT_RULES["q1"](index, n_anomaly=4, seed=0)
    for name in ("open", "fromarray"):
        monkeypatch.setattr(PIL.Image, name, _forbid(f"PIL.Image.{name}"))
    for name in ("resize", "rotate", "convert", "transform"):
        monkeypatch.setattr(PIL.Image.Image, name, _forbid(f"PIL.Image.Image.{name}"))
    # no DataLoader, so no worker processes to restart each epoch
    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", _forbid("DataLoader"))
    before = cache.DECODE_COUNTER["images"]
    det = DevNet(DevNet.Config(backbone="resnet18_w16", weights="none", epochs=2, steps_per_epoch=2,
                               batch_size=8))
    det.fit(TrainSet(data.images[split.train_idx], split.train_labels, seed=0))
    scores = det.score(data.images[split.test_idx])
    assert np.all(np.isfinite(scores)) and cache.DECODE_COUNTER["images"] == before
