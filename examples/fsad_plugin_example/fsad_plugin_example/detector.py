"""A complete fsad-bench detector in one module: its hyper-parameters, its budgets and the class.

Score = the largest distance, over a grid of patches, between a test patch's mean colour and the
same patch's mean colour over the training normals (in units of its std). Labelled anomalies are
ignored, so it is a one-class method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsad_bench.detectors import Detector, TrainSet


@dataclass
class PatchColourConfig:
    grid: int = 4          # patches per side; set with --set patchcolour.grid=8
    eps: float = 1e-3


class PatchColour(Detector):
    """Max z-score of patch mean colours against the training normals."""

    name = "patchcolour"
    Config = PatchColourConfig
    uses_labelled_anomalies = False
    display_name = "PatchColour"   # its column title in reports
    # Its hyper-parameters (and image size) at each budget: `fsad-bench run --budget quick` uses the
    # "quick" table; a budget it does not declare runs on PatchColourConfig's defaults.
    budgets = {
        "paper": {"img_size": 256, "grid": 8},
        "quick": {"img_size": 64, "grid": 4},
        "smoke": {"img_size": 32, "grid": 2},
    }

    def _patch_means(self, images: np.ndarray) -> np.ndarray:
        n, h, w, _ = images.shape
        g = self.config.grid
        crop = images[:, : h // g * g, : w // g * g].astype(np.float64)
        return crop.reshape(n, g, h // g, g, w // g, 3).mean(axis=(2, 4))  # (n, g, g, 3)

    def fit(self, train: TrainSet) -> PatchColour:
        normals = self._patch_means(train.images[train.labels == 0])
        self.mean_, self.std_ = normals.mean(0), normals.std(0) + self.config.eps
        self.info = {"n_normals": int((train.labels == 0).sum())}
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        z = np.abs(self._patch_means(images) - self.mean_) / self.std_
        return z.reshape(len(images), -1).max(axis=1)
