"""Helpers for the own-data / API tests: plain-folder raw data and a toy detector with ``explain``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import blob_image
from PIL import Image

from fsad_bench.detectors.base import Detector, TrainSet


def make_raw_folders(root: Path, n_normal: int = 40, classes: tuple[str, ...] = ("blob", "spot"),
                     n_per_class: int = 12, size: int = 32, flat: bool = False, masks: bool = True,
                     mask_suffix: str = "_mask", seed: int = 0) -> dict[str, Path]:
    """anomalib-Folder-style raw data: normal/*.jpg, abnormal/<class>/*.png (or flat), masks mirrored."""
    rng = np.random.default_rng(seed)
    dirs = {"normal": root / "normal", "abnormal": root / "abnormal", "masks": root / "masks"}
    dirs["normal"].mkdir(parents=True)
    for i in range(n_normal):
        Image.fromarray(blob_image(rng, size, False)[0]).save(dirs["normal"] / f"n{i:03d}.jpg", quality=95)
    for c in classes:
        sub = "" if flat else c
        (dirs["abnormal"] / sub).mkdir(parents=True, exist_ok=True)
        if masks:
            (dirs["masks"] / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img, mask = blob_image(rng, size, True)
            Image.fromarray(img).save(dirs["abnormal"] / sub / f"{c}{i:02d}.png")
            if masks:
                Image.fromarray(mask).save(dirs["masks"] / sub / f"{c}{i:02d}{mask_suffix}.png")
    if not masks:
        del dirs["masks"]
    return dirs


class BrightMap(Detector):
    """Brightness score with a brightness map as ``explain`` (the tiny datasets' defects are bright)."""

    name = "brightmap"

    def fit(self, train: TrainSet) -> BrightMap:
        self.info = {"n_train": len(train.images)}
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).mean(1)

    def explain(self, images: np.ndarray) -> np.ndarray:
        maps = images.mean(axis=3)
        lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
        return (maps - lo) / np.maximum(hi - lo, 1e-9)
