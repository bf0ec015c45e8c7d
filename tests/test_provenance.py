"""Stale reuse: a cell's key covers the data's content and the detector's code, so re-prepared data,
an edited detector or an upgraded plugin is computed again instead of "already finished"; the decode
cache is keyed by file content; ``--rerun all`` recomputes every cell."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_dataset

import fsad_bench.data.cache as cache
import fsad_bench.provenance as provenance
from fsad_bench.cli import main
from fsad_bench.data.layout import scan_category
from fsad_bench.protocol import load_protocol
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.job import run_cell
from fsad_bench.runner.request import RunRequest
from fsad_bench.runner.runner import run_grid
from fsad_bench.store import ResultStore

BRIGHT = "toy_detectors:Brightness"


def _cells(data_root, methods=(BRIGHT,), seeds=(0,)):
    req = RunRequest(methods=list(methods), datasets=["brainmri"], seeds=list(seeds), budget="smoke",
                      data_root=data_root)
    return build_cells(load_protocol("q1"), req)[0]


def _npy_category(root: Path, seed: int = 0) -> Path:
    """A category stored as .npy images: every file has the same byte size whatever its pixels."""
    rng = np.random.default_rng(seed)
    cat = root / "npyset" / "npyset"
    for sub, n in (("train/good", 6), ("test/good", 4), ("test/blob", 4)):
        (cat / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(cat / sub / f"{i:03d}.npy", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    return cat


def _rewrite_keeping_size_and_mtime(path: Path, array: np.ndarray) -> None:
    st = path.stat()
    time.sleep(0.05)  # let the kernel's coarse clock tick past the file's last status change
    np.save(path, array)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_re_prepared_dataset_is_recomputed_not_already_finished(data_root, tmp_path):
    with ResultStore(tmp_path / "out") as store:
        first = run_grid(_cells(data_root), store, progress=False)
        before = store.dataframe()
    assert first.ok == 1
    make_tiny_dataset(data_root / "brainmri", category="brainmri", seed=1)  # same names, other pixels
    with ResultStore(tmp_path / "out") as store:
        second = run_grid(_cells(data_root), store, progress=False)
        after = store.dataframe()
    assert (second.ok, second.skipped) == (1, 0)
    assert len(after) == 2 and after.data_fingerprint.nunique() == 2
    assert set(before.data_fingerprint) < set(after.data_fingerprint)


def test_same_size_and_mtime_rewrite_gets_new_pixels_and_a_new_key(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "SETTLE_NS", 0)  # cache every digest at once (the strictest case)
    cat = _npy_category(tmp_path)
    index = scan_category(cat)
    old = cache.load_category(index, 16, "npyset", "npyset")
    target = cat / index.files[0]
    new_pixels = 255 - np.load(target)
    _rewrite_keeping_size_and_mtime(target, new_pixels)
    new = cache.load_category(scan_category(cat), 16, "npyset", "npyset")
    assert np.array_equal(new.images[0], new_pixels) and not np.array_equal(new.images[0], old.images[0])
    assert new.fingerprint != old.fingerprint


def test_unchanged_files_are_not_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "SETTLE_NS", 0)
    index = scan_category(_npy_category(tmp_path))
    first = cache.data_fingerprint(index)
    hashed = []
    original = provenance._hash_file
    monkeypatch.setattr(provenance, "_hash_file", lambda p: hashed.append(p) or original(p))
    assert cache.data_fingerprint(index) == first and hashed == []
    _rewrite_keeping_size_and_mtime(index.root / index.files[2], np.zeros((16, 16, 3), np.uint8))
    assert cache.data_fingerprint(index) != first and hashed == [index.root / index.files[2]]


def test_recently_changed_files_are_always_hashed(tmp_path):
    # a file whose status changed within SETTLE_NS is never trusted from the cache
    index = scan_category(_npy_category(tmp_path))
    provenance.file_digests(index.root, index.files)
    sidecar = provenance._sidecar(index.root)
    assert not sidecar.exists()


def _plugin(site: Path, version: str = "0.1.0") -> Path:
    """Package 'weighty' (detector + loss module + an unrelated module) registered by a dist-info."""
    pkg = site / "weighty"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "loss.py").write_text("def weight():\n    return 1.0\n")
    (pkg / "unrelated.py").write_text("X = 1\n")
    (pkg / "detector.py").write_text(textwrap.dedent("""
        from fsad_bench.detectors.base import Detector
        from weighty.loss import weight

        class Weighted(Detector):
            def fit(self, train):
                return self

            def score(self, images):
                return images.reshape(len(images), -1).mean(1) * weight()
        """))
    info = site / "weighty-0.1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: weighty\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[fsad_bench.detectors]\nweighted = weighty.detector:Weighted\n")
    return pkg


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    pkg = _plugin(site)
    monkeypatch.syspath_prepend(str(site))
    yield site, pkg
    for name in [m for m in sys.modules if m.split(".")[0] == "weighty"]:
        sys.modules.pop(name)


def test_editing_a_detectors_loss_or_upgrading_it_changes_the_key(plugin_site, data_root, tmp_path):
    site, pkg = plugin_site
    cell = _cells(data_root, ["weighted"])[0]
    (pkg / "loss.py").write_text("def weight():\n    return 2.0\n")
    edited = _cells(data_root, ["weighted"])[0]
    assert edited.key != cell.key
    assert cell.detector_identity["target"] == "weighty.detector:Weighted"
    assert (cell.detector_identity["distribution"], cell.detector_identity["version"]) == ("weighty", "0.1.0")
    assert edited.detector_identity["source_digest"] != cell.detector_identity["source_digest"]
    (pkg / "unrelated.py").write_text("X = 2\n")  # not imported by the detector: same code runs
    assert _cells(data_root, ["weighted"])[0].key == edited.key
    _plugin(site, version="0.2.0")  # upgrade: new version (the files are rewritten as they were)
    upgraded = _cells(data_root, ["weighted"])[0]
    assert upgraded.detector_identity["version"] == "0.2.0" and upgraded.key not in {cell.key, edited.key}
    with ResultStore(tmp_path / "out") as store:
        run_grid([upgraded], store, progress=False)
        row = store.get(upgraded.key)
    assert row["status"] == "ok"
    assert (row["detector_dist"], row["detector_version"]) == ("weighty", "0.2.0")
    assert row["detector_target"] == "weighty.detector:Weighted"
    assert row["detector_source"] == upgraded.detector_identity["source_digest"]
    assert row["data_fingerprint"] == upgraded.data_fingerprint


def test_code_or_data_changed_after_the_grid_was_built_fails_the_cell(plugin_site, data_root):
    site, pkg = plugin_site
    cell = _cells(data_root, ["weighted"])[0]
    (pkg / "loss.py").write_text("def weight():\n    return 3.0\n")
    result = run_cell(cell)
    assert result.status == "failed" and "changed after the grid was built" in result.error
    assert "source digest of detector weighted" in result.error

    cell = _cells(data_root)[0]
    make_tiny_dataset(data_root / "brainmri", category="brainmri", seed=5)
    result = run_cell(cell)
    assert result.status == "failed" and "data of brainmri/brainmri changed" in result.error


def test_every_row_records_data_and_detector(data_root, tmp_path):
    cells = _cells(data_root, seeds=(0, 1))
    with ResultStore(tmp_path / "out") as store:
        run_grid(cells, store, progress=False)
        df = store.dataframe()
    assert (df.detector_target == BRIGHT).all() and (df.detector_dist == "unregistered").all()
    assert df.data_fingerprint.str.len().eq(24).all() and df.detector_source.str.len().eq(64).all()


def test_rerun_all_recomputes_every_cell(data_root, tmp_path, capsys):
    args = ["run", "--methods", BRIGHT, "--datasets", "brainmri", "--data-root", str(data_root), "--budget",
            "smoke", "--seeds", "0,1", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    assert main(args) == 0
    assert "0 cells ran ok, 2 already finished" in capsys.readouterr().err
    assert main([*args, "--rerun", "all"]) == 0
    assert "2 cells ran ok, 0 already finished" in capsys.readouterr().err
    assert main([*args, "--rerun", "failed"]) == 0
    assert "0 cells ran ok, 2 already finished" in capsys.readouterr().err
