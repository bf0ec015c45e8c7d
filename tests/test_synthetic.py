"""Tests for the embedded synthetic dataset (layout, masks, determinism, atomicity)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsad_bench.data import synthetic
from fsad_bench.data.synthetic import CATEGORIES, DEFECTS, SYNTHETIC_VERSION, ensure, generate

SMALL = {"image_size": 64, "n_train": 6, "n_test_good": 3, "n_per_defect": 2}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    assert generate(root, seed=0, **SMALL) == root
    return root


def test_public_constants() -> None:
    assert isinstance(SYNTHETIC_VERSION, str) and SYNTHETIC_VERSION
    assert set(CATEGORIES) >= {"brick", "grass", "gravel"}
    assert set(DEFECTS) >= {"scratch", "stain", "hole", "crack"}
    assert "good" not in DEFECTS


def test_layout_and_counts(small_root: Path) -> None:
    assert _names(small_root) == sorted([*CATEGORIES, synthetic.COMPLETE_MARKER])
    for category in CATEGORIES:
        cat = small_root / category
        assert _names(cat) == ["ground_truth", "test", "train"]
        assert _names(cat / "train") == ["good"]
        assert _names(cat / "train" / "good") == [f"{i:03d}.png" for i in range(6)]
        assert _names(cat / "test") == sorted(["good", *DEFECTS])
        assert _names(cat / "test" / "good") == [f"{i:03d}.png" for i in range(3)]
        # Only defect classes have ground truth; normals (train or test) have none.
        assert _names(cat / "ground_truth") == sorted(DEFECTS)
        for defect in DEFECTS:
            assert _names(cat / "test" / defect) == ["000.png", "001.png"]
            assert _names(cat / "ground_truth" / defect) == ["000_mask.png", "001_mask.png"]
    assert not list(small_root.rglob("*/train/**/*_mask.png"))


def test_images_are_rgb_uint8_of_requested_size(small_root: Path) -> None:
    images = [p for p in small_root.rglob("*.png") if "ground_truth" not in p.parts]
    assert len(images) == len(CATEGORIES) * (6 + 3 + 2 * len(DEFECTS))
    for path in images:
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.mode == "RGB"
            assert im.size == (64, 64)


def test_every_defect_image_has_a_binary_nonempty_mask(small_root: Path) -> None:
    for category in CATEGORIES:
        for defect in DEFECTS:
            for image_path in sorted((small_root / category / "test" / defect).glob("*.png")):
                mask_path = (small_root / category / "ground_truth" / defect
                             / f"{image_path.stem}_mask.png")
                assert mask_path.is_file(), mask_path
                with Image.open(mask_path) as m:
                    assert m.mode == "L"
                    assert m.size[::-1] == _load(image_path).shape[:2]
                mask = _load(mask_path)
                assert mask.dtype == np.uint8
                assert set(np.unique(mask).tolist()) == {0, 255}
                fraction = float((mask > 0).mean())
                # Visible at 64 px, but still a localised defect.
                assert 0.002 <= fraction <= 0.25, (mask_path, fraction)


def test_marker_records_version_and_parameters(small_root: Path) -> None:
    marker = json.loads((small_root / ".complete").read_text())
    assert marker["version"] == SYNTHETIC_VERSION
    assert marker["params"] == {**SMALL, "seed": 0}


def test_same_seed_is_byte_identical_and_other_seed_differs(small_root: Path,
                                                            tmp_path: Path) -> None:
    again = generate(tmp_path / "again", seed=0, **SMALL)
    other = generate(tmp_path / "other", seed=1, **SMALL)
    reference = _hashes(small_root)
    assert len(reference) == len(CATEGORIES) * (6 + 3 + 4 * len(DEFECTS))
    assert _hashes(again) == reference
    other_hashes = _hashes(other)
    assert other_hashes.keys() == reference.keys()
    images = [k for k in reference if "ground_truth" not in k]
    assert all(other_hashes[k] != reference[k] for k in images)


def test_second_call_is_a_noop(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    generate(root, **SMALL)
    marker = root / ".complete"
    sample = root / "grass" / "test" / "crack" / "001.png"
    before = (marker.stat().st_mtime_ns, sample.stat().st_mtime_ns, sample.stat().st_ino)
    assert generate(root, **SMALL) == root
    assert ensure(root, **SMALL) == root
    after = (marker.stat().st_mtime_ns, sample.stat().st_mtime_ns, sample.stat().st_ino)
    assert after == before
    assert _names(tmp_path) == ["synthetic"]  # no temp/old directories left behind


def test_different_parameters_regenerate(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    generate(root, **SMALL)
    generate(root, **{**SMALL, "n_train": 2})
    assert _names(root / "brick" / "train" / "good") == ["000.png", "001.png"]
    assert json.loads((root / ".complete").read_text())["params"]["n_train"] == 2
    assert _names(tmp_path) == ["synthetic"]


def test_failed_generation_leaves_nothing(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_save = synthetic._save_png

    def flaky_save(array: np.ndarray, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError("disk full")
        real_save(array, path)

    monkeypatch.setattr(synthetic, "_save_png", flaky_save)
    root = tmp_path / "synthetic"
    with pytest.raises(OSError, match="disk full"):
        generate(root, **SMALL)
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_unrelated_directory(tmp_path: Path) -> None:
    root = tmp_path / "mvtec"
    root.mkdir()
    (root / "precious.txt").write_text("real data")
    with pytest.raises(FileExistsError):
        generate(root, **SMALL)
    assert (root / "precious.txt").read_text() == "real data"


def _mask_contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Largest per-channel shift of the in-mask mean, in units of outside std."""
    x = image.astype(np.float64)
    inside, outside = x[mask], x[~mask]
    return float((np.abs(inside.mean(0) - outside.mean(0)) / outside.std(0)).max())


def test_defect_regions_differ_from_normal_texture(small_root: Path) -> None:
    anomalous, control = [], []
    for category in CATEGORIES:
        good = _load(small_root / category / "test" / "good" / "000.png")
        for defect in DEFECTS:
            for stem in ("000", "001"):
                image = _load(small_root / category / "test" / defect / f"{stem}.png")
                mask = _load(small_root / category / "ground_truth" / defect
                             / f"{stem}_mask.png") > 0
                anomalous.append(_mask_contrast(image, mask))
                # Same mask laid over a defect-free image as the control.
                control.append(_mask_contrast(good, mask))
    assert np.median(anomalous) > 3.0 * np.median(control)
    assert np.mean(np.array(anomalous) > np.array(control)) >= 0.8


@pytest.mark.parametrize("size", [64, 128])
def test_defects_change_only_the_masked_area(size: int) -> None:
    """Compare each anomalous image with the normal image it was pasted onto."""
    pad = max(2, round(0.12 * size))
    for cat_idx, category in enumerate(CATEGORIES):
        photo = synthetic._load_photo(category)
        for defect in DEFECTS:
            for index in range(3):
                base, image, mask = synthetic._render_sample(photo, cat_idx, defect, index,
                                                             size, seed=0)
                assert mask is not None and base.shape == image.shape == (size, size, 3)
                inside = mask > 0
                diff = np.abs(image.astype(np.int16) - base.astype(np.int16)).max(axis=-1)
                # Every defect, even a subtle one, changes its pixels noticeably.
                assert diff[inside].mean() > 10, (category, defect, index)
                # Far from the mask (soft edges allowed nearby) nothing changes.
                near = np.zeros_like(inside)
                ys, xs = np.nonzero(inside)
                for y, x in zip(ys, xs, strict=True):
                    near[max(0, y - pad):y + pad + 1, max(0, x - pad):x + pad + 1] = True
                assert diff[~near].max(initial=0) <= 1, (category, defect, index)


def test_normal_splits_have_no_mask_and_vary() -> None:
    photo = synthetic._load_photo("brick")
    base, image, mask = synthetic._render_sample(photo, 0, "train", 0, 64, seed=0)
    assert mask is None and np.array_equal(base, image)
    _, other, _ = synthetic._render_sample(photo, 0, "train", 1, 64, seed=0)
    _, test_good, _ = synthetic._render_sample(photo, 0, "good", 0, 64, seed=0)
    assert not np.array_equal(image, other)
    assert not np.array_equal(image, test_good)


@pytest.mark.parametrize("bad", [{"image_size": 8}, {"n_train": 0}, {"n_per_defect": 0},
                                 {"seed": -1}])
def test_invalid_parameters(tmp_path: Path, bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path / "x", **{**SMALL, **bad})
    assert not (tmp_path / "x").exists()
