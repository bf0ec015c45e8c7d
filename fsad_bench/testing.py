"""Conformance checks for detectors, in the spirit of scikit-learn's ``check_estimator``.

``check_detector(MyDetector, params)`` fits the detector on a tiny separable image set and checks
the contract the runner relies on; each failed check raises an ``AssertionError`` whose message
starts with ``check_detector[<check>]`` and names the detector. Every built-in detector's tests use
it, and a plugin's tests should too::

    from fsad_bench.testing import check_detector

    def test_conformance():
        check_detector(MyDetector, {"grid": 4})

The checks (in this order):

* ``config``: ``Config`` is a dataclass whose defaults construct; ``config_from_params(params)``
  builds the config, and ``config_from_params`` of its own fields gives it back (round trip).
* ``fit``: ``fit`` on a :class:`TrainSet` of uint8 (N, H, W, 3) images returns the detector itself.
* ``score_shape`` / ``score_finite``: ``score`` gives one finite number per image, shape (N,).
* ``no_input_mutation``: ``fit`` and ``score`` leave their input arrays unchanged.
* ``score_per_image``: an image's score does not depend on the other images scored with it (the
  test images permuted, and scored one at a time, give the same scores up to float tolerance); a
  detector never sees test labels, and must not learn from the test batch either.
* ``auc``: AUC-ROC on the test set >= ``min_auc`` (default :data:`DEFAULT_MIN_AUC` = 0.7); anomalies
  carry a bright square, which any working detector separates. ``min_auc=None`` skips it, for
  detectors that cannot learn this at the given (tiny) budget, e.g. one-class methods at a few steps.
* ``deterministic``: a second instance fitted with the same seed gives the same scores
  (``rtol`` 1e-5).
* ``bench_phases`` (when the detector declares them): the optimisers that stepped during ``fit``,
  and how often, are the declared phases and step counts, at ``params`` and after
  ``bench_step_overrides(config, 3, ...)``; ``fsad-bench bench`` relies on both.
* ``explain``: returns None or finite (N, H, W) maps in [0, 1] (for 4 test anomalies), and leaves
  its input unchanged.
* ``info_json``: ``info`` (stored with every result) is a dict that strict JSON can encode.
* for ``uses_labelled_anomalies = False`` only: ``one_class_all_zero_labels`` (training with every
  label 0 works) and ``one_class_ignores_anomalies`` (removing the labelled anomalies from the
  training set does not change the scores).

Checks run on CPU by default and take a few fits of the given ``params``: pass small ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from fsad_bench.bench import StepClock
from fsad_bench.detectors.base import Detector, TrainSet, TrainShape

#: Default AUC-ROC threshold of the ``auc`` check on the tiny separable set.
DEFAULT_MIN_AUC = 0.7


@dataclass
class ConformanceReport:
    """What :func:`check_detector` checked: the checks that passed, those skipped (with why), the AUC."""

    detector: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    auc: float | None = None


def separable_images(n_normal: int, n_anomaly: int, size: int = 32, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size, 3) smooth grey textures, normals first; each anomaly carries a bright
    square of side size/4 at a random place. Returns (images, labels)."""
    rng = np.random.default_rng(seed)
    n = n_normal + n_anomaly
    cell = max(size // 4, 1)
    coarse = rng.normal(110, 12, (n, -(-size // cell), -(-size // cell), 3))
    images = np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :size, :size]
    images = images + rng.normal(0, 4, images.shape)
    side = max(size // 4, 1)
    for img in images[n_normal:]:
        y, x = rng.integers(0, size - side + 1, 2)
        img[y:y + side, x:x + side] += 100
    labels = np.r_[np.zeros(n_normal, np.int64), np.ones(n_anomaly, np.int64)]
    return np.clip(images, 0, 255).astype(np.uint8), labels


class _Skipped(Exception):
    """Raised inside a check that does not apply to this detector (its message says why)."""


class _Checks:
    def __init__(self, name: str) -> None:
        self.report = ConformanceReport(name)

    @contextlib.contextmanager
    def check(self, check: str) -> Iterator[None]:
        """Run one check: a failed assertion or any exception becomes an AssertionError naming it."""
        try:
            yield
        except _Skipped as why:
            self.report.skipped[check] = str(why)
            return
        except AssertionError as exc:
            raise AssertionError(f"check_detector[{check}] {self.report.detector}: {exc}") from exc
        except Exception as exc:
            raise AssertionError(f"check_detector[{check}] {self.report.detector}: raised "
                                 f"{type(exc).__name__}: {exc}") from exc
        self.report.passed.append(check)


def _scores(det: Detector, images: np.ndarray) -> np.ndarray:
    return np.asarray(det.score(images), dtype=np.float64)


def _close(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    scale = max(float(np.abs(a).max(initial=0.0)), 1e-12)
    return bool(np.allclose(a, b, rtol=rtol, atol=rtol * scale))


def _check_phases(cls: type[Detector], config: Any, shape: TrainShape, ran: list[int], when: str) -> None:
    declared = cls.bench_phases(config, shape) or []
    assert ran == [p.steps for p in declared], (f"bench_phases{when} declares "
                                                f"{[(p.name, p.steps) for p in declared]} optimiser steps, "
                                                f"fit ran {ran} (per optimiser)")
    assert all(p.images_per_step > 0 for p in declared), "a phase declares no images per step"


def check_detector(cls: type[Detector], params: Mapping[str, Any] | None = None, *, img_size: int = 32,
                   min_auc: float | None = DEFAULT_MIN_AUC, seed: int = 0, device: str = "cpu",
                   n_normal: int = 32, n_anomaly: int = 6, n_test: int = 12) -> ConformanceReport:
    """Check that ``cls`` with hyper-parameters ``params`` keeps the detector contract (module doc).

    The training set has ``n_normal`` normals and ``n_anomaly`` labelled anomalies, the test set
    ``n_test`` of each, all ``img_size`` px. Raises AssertionError ``check_detector[<check>] ...``
    on the first failed check; returns what was checked.
    """
    name = getattr(cls, "name", "") or getattr(cls, "__name__", repr(cls))
    run = _Checks(name)
    train_x, train_y = separable_images(n_normal, n_anomaly, img_size, seed)
    test_x, test_y = separable_images(n_test, n_test, img_size, seed + 1)

    with run.check("config"):
        assert dataclasses.is_dataclass(cls.Config), f"Config {cls.Config!r} is not a dataclass"
        cls.Config()
        config = cls.config_from_params(dict(params or {}))
        round_trip = cls.config_from_params(dataclasses.asdict(config))
        assert round_trip == config, (f"config_from_params(asdict(config)) gave {round_trip!r}, "
                                      f"not {config!r}")

    def fitted(images: np.ndarray, labels: np.ndarray) -> Detector:
        det = cls(config)
        out = det.fit(TrainSet(images, labels, seed=seed, device=device))
        assert out is det, f"fit returned {out!r}, not the detector itself"
        return det

    originals = (train_x.copy(), train_y.copy(), test_x.copy())
    with run.check("fit"):
        det = fitted(train_x, train_y)
    with run.check("score_shape"):
        scores = _scores(det, test_x)
        assert scores.shape == (len(test_x),), f"score gave shape {scores.shape}, expected ({len(test_x)},)"
    with run.check("score_finite"):
        assert np.isfinite(scores).all(), f"{int((~np.isfinite(scores)).sum())} non-finite scores"
    with run.check("no_input_mutation"):
        for before, after, what in zip(originals, (train_x, train_y, test_x),
                                       ("training images", "training labels", "test images")):
            assert np.array_equal(before, after), f"the {what} were changed in place"
    with run.check("score_per_image"):
        perm = np.random.default_rng(seed).permutation(len(test_x))
        permuted = _scores(det, test_x[perm])
        assert _close(scores[perm], permuted, 1e-4), "scores change when the test images are permuted"
        singles = np.concatenate([_scores(det, test_x[i:i + 1]) for i in range(3)])
        assert _close(scores[:3], singles, 1e-4), "an image scored alone gets another score than in a batch"
    if min_auc is None:
        run.report.skipped["auc"] = "min_auc=None"
    else:
        with run.check("auc"):
            auc = run.report.auc = float(roc_auc_score(test_y, scores))
            assert auc >= min_auc, (f"AUC-ROC {auc:.3f} < {min_auc} on the separable set (bright "
                                    "squares); pass params that learn, or min_auc=None")
    with run.check("deterministic"):
        with StepClock(device) as clock:
            again = _scores(fitted(train_x, train_y), test_x)
        assert _close(scores, again, 1e-5), (f"a second fit with seed {seed} gave other scores (max diff "
                                             f"{np.abs(scores - again).max():.3g})")
    shape = TrainShape(len(train_x), n_normal, img_size)
    with run.check("bench_phases"):
        if cls.bench_phases(config, shape) is None:
            raise _Skipped("no bench_phases declared (bench times the whole fit)")
        _check_phases(cls, config, shape, clock.counts(), "")
        changes = cls.bench_step_overrides(config, 3, shape)
        short = cls.config_from_params({**dataclasses.asdict(config), **changes})
        with StepClock(device) as clock:
            cls(short).fit(TrainSet(train_x, train_y, seed=seed, device=device))
        _check_phases(cls, short, shape, clock.counts(), f" after bench_step_overrides {changes}")
    with run.check("explain"):
        shown = test_x[-4:].copy()  # a few anomalies: saliency maps cost a backward pass each
        maps = det.explain(shown)
        assert np.array_equal(shown, test_x[-4:]), "explain changed its input images in place"
        if maps is not None:
            maps = np.asarray(maps)
            expected = (len(shown), img_size, img_size)
            assert maps.shape == expected, f"explain gave shape {maps.shape}, expected {expected}"
            assert np.isfinite(maps).all(), "explain gave non-finite values"
            assert maps.min() >= 0 and maps.max() <= 1, f"explain maps span [{maps.min()}, {maps.max()}]"
    with run.check("info_json"):
        assert isinstance(det.info, dict), f"info is a {type(det.info).__name__}, not a dict"
        json.dumps(det.info, allow_nan=False)
    if cls.uses_labelled_anomalies:
        reason = "uses_labelled_anomalies is True"
        run.report.skipped.update(one_class_all_zero_labels=reason, one_class_ignores_anomalies=reason)
    else:
        with run.check("one_class_all_zero_labels"):
            zero = _scores(fitted(train_x, np.zeros_like(train_y)), test_x)
            assert zero.shape == scores.shape and np.isfinite(zero).all(), "no finite scores"
        with run.check("one_class_ignores_anomalies"):
            normals = _scores(fitted(train_x[train_y == 0], train_y[train_y == 0]), test_x)
            assert _close(scores, normals, 1e-5), ("uses_labelled_anomalies is False, but removing the "
                                                   "labelled anomalies from training changes the scores")
    return run.report
