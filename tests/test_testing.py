"""``fsad_bench.testing.check_detector``: a detector that keeps the contract passes every check; each
way of breaking the contract fails the check that names it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.testing import DEFAULT_MIN_AUC, check_detector, separable_images


@dataclass
class BrightConfig:
    power: float = 1.0


class Bright(Detector):
    """Score = the brightest patch's mean, ** power (the anomalies' bright square): contract-abiding."""

    name = "bright"
    Config = BrightConfig
    uses_labelled_anomalies = False

    def fit(self, train: TrainSet) -> Bright:
        self.info = {"n_normals": int((train.labels == 0).sum())}
        return self

    def patch_max(self, images: np.ndarray) -> np.ndarray:
        n, h, w, _ = images.shape
        patches = images[:, : h // 8 * 8, : w // 8 * 8].astype(np.float64).reshape(n, h // 8, 8, w // 8, 8, 3)
        return patches.mean(axis=(2, 4, 5)).reshape(n, -1).max(axis=1)

    def score(self, images: np.ndarray) -> np.ndarray:
        return self.patch_max(images) ** self.config.power


class WrongShape(Bright):
    def score(self, images: np.ndarray) -> np.ndarray:
        return super().score(images)[:, None]


class NonFinite(Bright):
    def score(self, images: np.ndarray) -> np.ndarray:
        s = super().score(images)
        s[0] = np.nan
        return s


class BatchDependent(Bright):
    """Standardises each score against the batch being scored: it learns from the test set."""

    def score(self, images: np.ndarray) -> np.ndarray:
        s = super().score(images)
        return (s - s.mean()) / (s.std() + 1e-9)


class Unseeded(Bright):
    def fit(self, train: TrainSet) -> Unseeded:
        self.offset = np.random.default_rng().normal()  # ignores train.seed
        return super().fit(train)

    def score(self, images: np.ndarray) -> np.ndarray:
        return super().score(images) + self.offset


class MutatesInput(Bright):
    def score(self, images: np.ndarray) -> np.ndarray:
        out = super().score(images)
        images[:, 0, 0, 0] = 0  # e.g. an in-place normalisation
        return out


class ExplainMutates(Bright):
    def explain(self, images: np.ndarray) -> np.ndarray:
        images //= 2
        return np.zeros(images.shape[:3])


class BadMaps(Bright):
    def explain(self, images: np.ndarray) -> np.ndarray:
        return np.full(images.shape[:3], 2.0)


class NumpyInfo(Bright):
    def fit(self, train: TrainSet) -> NumpyInfo:
        self.info = {"threshold": np.float32(0.5)}  # not JSON: the result record could not be stored
        return self


class ConfigNotADataclass(Bright):
    Config = dict


@dataclass
class DoublingConfig:
    power: float = 1.0

    def __post_init__(self) -> None:
        self.power *= 2  # config_from_params(asdict(config)) != config


class NoRoundTrip(Bright):
    Config = DoublingConfig


class OneClassThatPeeks(Bright):
    """Claims to be one-class but scores by the distance to the labelled anomalies."""

    def fit(self, train: TrainSet) -> OneClassThatPeeks:
        anomalies = train.images[train.labels == 1]
        self.ref = self.patch_max(anomalies).mean() if len(anomalies) else 255.0
        self.info = {}
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return -np.abs(self.patch_max(images) - self.ref)


class Constant(Bright):
    def score(self, images: np.ndarray) -> np.ndarray:
        return np.zeros(len(images))


@dataclass
class StepsConfig(BrightConfig):
    steps: int = 4


class Steps(Bright):
    """Bright plus a torch optimiser that steps ``steps`` times (its bench declaration)."""

    Config = StepsConfig
    extra_steps = 0  # a wrong declaration: fit runs more steps than declared

    @classmethod
    def bench_phases(cls, config: StepsConfig, shape: TrainShape) -> list[BenchPhase]:
        return [BenchPhase("train", config.steps, shape.n_images)]

    @classmethod
    def bench_step_overrides(cls, config: StepsConfig, n_steps: int, shape: TrainShape) -> dict:
        return {"steps": n_steps}

    def fit(self, train: TrainSet) -> Steps:
        w = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(self.config.steps + self.extra_steps):
            opt.zero_grad()
            (w - 1).pow(2).sum().backward()
            opt.step()
        return super().fit(train)


class WrongSteps(Steps):
    extra_steps = 1


class DeclarationRaises(Bright):
    @classmethod
    def bench_phases(cls, config: BrightConfig, shape: TrainShape) -> list[BenchPhase]:
        return [BenchPhase("train", config.epochs, 1)]  # BrightConfig has no epochs


def test_a_bench_declaration_is_checked_against_the_steps_fit_runs():
    assert "bench_phases" in check_detector(Steps).passed
    with pytest.raises(AssertionError, match=r"check_detector\[bench_phases\] bright: bench_phases declares "
                                             r"\[\('train', 4\)\] optimiser steps, fit ran \[5\]"):
        check_detector(WrongSteps)


def test_a_detector_that_keeps_the_contract_passes_every_check():
    report = check_detector(Bright, {"power": "2"})
    assert report.passed == ["config", "fit", "score_shape", "score_finite", "no_input_mutation",
                             "score_per_image", "auc", "deterministic", "explain", "info_json",
                             "one_class_all_zero_labels", "one_class_ignores_anomalies"]
    assert report.skipped == {"bench_phases": "no bench_phases declared (bench times the whole fit)"}
    assert report.auc == 1.0 and report.detector == "bright"


@pytest.mark.parametrize("cls, check", [
    (WrongShape, "score_shape"), (NonFinite, "score_finite"), (BatchDependent, "score_per_image"),
    (Unseeded, "deterministic"), (MutatesInput, "no_input_mutation"), (BadMaps, "explain"),
    (ExplainMutates, "explain"),
    (NumpyInfo, "info_json"), (ConfigNotADataclass, "config"), (NoRoundTrip, "config"),
    (OneClassThatPeeks, "one_class_ignores_anomalies"), (Constant, "auc"),
    (DeclarationRaises, "bench_phases"),
])
def test_each_broken_contract_fails_the_check_that_names_it(cls, check):
    with pytest.raises(AssertionError, match=rf"^check_detector\[{check}\] {cls.name}: "):
        check_detector(cls)


def test_min_auc_none_skips_only_the_auc_check():
    report = check_detector(Constant, min_auc=None)
    assert "auc" not in report.passed and report.skipped["auc"] == "min_auc=None" and report.auc is None
    assert "auc" not in check_detector(Bright, min_auc=None).passed
    assert DEFAULT_MIN_AUC == 0.7


def test_a_labelled_method_skips_the_one_class_checks():
    labelled = type("Labelled", (Bright,), {"uses_labelled_anomalies": True, "name": "labelled"})
    report = check_detector(labelled)
    assert set(report.skipped) == {"one_class_all_zero_labels", "one_class_ignores_anomalies", "bench_phases"}


def test_an_exception_in_fit_names_the_fit_check():
    class Raises(Bright):
        def fit(self, train: TrainSet) -> Raises:
            raise ValueError("boom")

    with pytest.raises(AssertionError, match=r"check_detector\[fit\] bright: raised ValueError: boom"):
        check_detector(Raises)


def test_the_separable_set_is_uint8_and_separable_by_brightness():
    images, labels = separable_images(5, 3, size=32, seed=1)
    assert images.dtype == np.uint8 and images.shape == (8, 32, 32, 3)
    assert labels.tolist() == [0] * 5 + [1] * 3
    peaks = Bright().patch_max(images)
    assert peaks[labels == 1].min() > peaks[labels == 0].max()
    assert dataclasses.is_dataclass(BrightConfig)
