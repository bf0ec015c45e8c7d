"""Detectors used by tests through the dotted-path plugin route (``toy_detectors:Class``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsad_bench.detectors.base import Detector, TrainSet


@dataclass
class BrightnessConfig:
    power: float = 1.0


class Brightness(Detector):
    """Score = mean brightness ** power (bright blobs are anomalies in the tiny datasets)."""

    Config = BrightnessConfig

    def fit(self, train: TrainSet) -> Brightness:
        self.info = {"n_train": len(train.images)}
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).mean(1) ** self.config.power


class AlwaysFails(Detector):
    """Raises during fit: the runner must record the cell as failed and go on."""

    def fit(self, train: TrainSet) -> AlwaysFails:
        raise RuntimeError("planned failure")

    def score(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise AssertionError("never reached")


@dataclass
class SlowConfig:
    seconds: float = 0.6


class Slow(Brightness):
    """Brightness that takes its time, so a test can kill a grid in mid-run."""

    Config = SlowConfig

    def fit(self, train: TrainSet) -> Slow:
        import time

        time.sleep(self.config.seconds)
        self.info = {}
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).mean(1)


class WrongLength(Brightness):
    """Scores one image too few: the runner must say so, not call the scores non-finite."""

    def score(self, images: np.ndarray) -> np.ndarray:
        return super().score(images)[:-1]


class NaNScores(Brightness):
    """Right length, one NaN: the runner must report the non-finite value."""

    def score(self, images: np.ndarray) -> np.ndarray:
        scores = super().score(images).astype(float)
        scores[0] = np.nan
        return scores
