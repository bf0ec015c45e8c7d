"""The detector contract, in the spirit of scikit-learn / PyOD ``BaseDetector``.

One instance serves one cell: ``fit`` once on a :class:`TrainSet`, then ``score`` (and optionally
``explain``) test images. Hyper-parameters are a dataclass (``Detector.Config``) filled from the
protocol spec, the budget and ``--set key=value``; never from module globals.

Fitted state (what ``fit`` sets): whatever the detector needs to score, plus ``info`` — a dict that
goes into the result record (e.g. which pretrained weights were used), and ``flags`` — a list of
``{"flag": name, "reason": text}`` that marks the result as suspect in the row and the report (e.g.
``diverged``: see :func:`fsad_methods.training.divergence`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fsad_bench.detectors.hparams import parse_config


@dataclass
class TrainSet:
    """What a detector may learn from. It never sees test labels.

    images: uint8 array (N, H, W, 3), already resized to the cell's image size.
    labels: int array (N,): 0 = normal (or unlabelled), 1 = labelled anomaly.
    seed:   seeds every random choice of the detector (init, sampler, augmentation).
    device: torch device string, e.g. "cpu" or "cuda:0".
    """

    images: np.ndarray
    labels: np.ndarray
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"TrainSet.images must be uint8 (N,H,W,3), got {self.images.dtype} "
                             f"{self.images.shape}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise ValueError("TrainSet.images and labels differ in length")

    @property
    def n_anomaly(self) -> int:
        return int(self.labels.sum())


@dataclass(frozen=True)
class TrainShape:
    """The size of a training set, as :meth:`Detector.bench_phases` needs it (no images)."""

    n_images: int
    n_normal: int
    img_size: int

    @property
    def n_anomaly(self) -> int:
        return self.n_images - self.n_normal


@dataclass(frozen=True)
class BenchPhase:
    """One optimiser phase of ``fit``, as ``fsad-bench bench`` times it.

    name:            what the phase trains (e.g. ``"autoencoder"``), shown in the JSON rows.
    steps:           optimiser steps (``optimizer.step()`` calls) the phase runs in a fit of the
                     described config on the described training set.
    images_per_step: training images through one optimiser step (mean over the phase's steps).
    flops_per_image: forward + backward FLOPs per training image, for the GPU roofline; None = unknown.
    """

    name: str
    steps: int
    images_per_step: float
    flops_per_image: float | None = None


@dataclass
class NoParams:
    """Config of a detector without hyper-parameters."""


@dataclass(frozen=True)
class MethodInfo:
    """What a report says about a method, recorded in the results store when the method runs (so a
    folder reports the same after its plugin is uninstalled): see :meth:`Detector.describe`."""

    display_name: str
    paper_column: str | None = None
    weights_notes: dict[str, str] = field(default_factory=dict)
    uses_labelled_anomalies: bool = True

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MethodInfo:
        return cls(str(data.get("display_name", "")), data.get("paper_column"),
                   dict(data.get("weights_notes") or {}), bool(data.get("uses_labelled_anomalies", True)))


class Detector(ABC):
    """Base class of every detector (ours and plugins).

    Subclasses set ``Config`` to a dataclass whose fields are the hyper-parameters with their
    defaults, and implement ``fit`` and ``score`` (higher score = more anomalous).

    **What ``fsad-bench bench`` needs (optional; the defaults work for any detector).** ``bench``
    times the detector's own ``fit`` on a synthetic training set and its ``score``, and counts every
    ``optimizer.step()`` during ``fit`` through torch's global step hook. Two class methods say what
    it is timing:

    * :meth:`bench_phases` ``(config, shape)``: the optimiser phases of ``fit`` with ``config`` on a
      training set of ``shape`` (:class:`TrainShape`), in the order they run, as :class:`BenchPhase`
      (steps, images per step, optionally FLOPs per image for the GPU roofline). ``bench`` refuses a
      declaration whose phases or step counts differ from the steps ``fit`` ran (that method gets no
      figures, the others are still measured); :func:`fsad_bench.testing.check_detector` checks the
      same. Images per step, s/step and the projected cell time come from it.
    * :meth:`bench_step_overrides` ``(config, n_steps, shape)``: hyper-parameter changes after which
      every phase runs about ``n_steps`` steps (``bench`` times a few steps, not a whole budget); the
      exact counts are whatever ``bench_phases`` gives for the changed config.

    Undeclared (``bench_phases`` returns None, the default): ``bench`` times the whole ``fit`` at the
    budget's settings, set-up included, and reports training images per second of fit (pipeline
    ``ours (whole fit)``), with no s/step and no projected cell time. ``bench_step_overrides``
    undeclared (``{}``): nothing is shortened, so the declared phases run their budget's step counts.
    Config fields named ``amp_bf16`` and ``channels_last`` receive ``bench --amp-bf16 /
    --channels-last``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoParams
    #: False for one-class methods that ignore labelled anomalies (documented in reports).
    uses_labelled_anomalies: ClassVar[bool] = True
    #: how reports title the method; "" = its registered name. Not inherited (see __init_subclass__).
    display_name: ClassVar[str] = ""
    #: the published table column (results/paper, e.g. "DevNet") that ``--compare-paper`` sets this
    #: method's numbers beside; None = not in the paper. Not inherited (see __init_subclass__).
    paper_column: ClassVar[str | None] = None
    #: weights value -> a line the report prints under tables made with it (e.g. what "none" means)
    weights_notes: ClassVar[dict[str, str]] = {}
    #: budget name ("paper", "quick", "smoke", or one of the method's own) -> the hyper-parameters of
    #: ``Config`` at that budget, plus optionally ``img_size`` (the image side in px; default: the
    #: budget's, see :mod:`fsad_bench.budgets`). A budget the method does not declare runs on the
    #: ``Config`` defaults (the run says so). Not inherited (see __init_subclass__).
    budgets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: budget name -> measured seconds of one cell on one CPU thread, for ``--dry-run``'s estimate when
    #: the results folder has no finished cell of the method yet. Not inherited.
    seconds_per_cell: ClassVar[dict[str, float]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass is another method: it must not be titled, compared with the published numbers, or
        # run at the budgets of the class it derives from unless it says so itself.
        for attr, empty in (("display_name", ""), ("paper_column", None), ("budgets", {}),
                            ("seconds_per_cell", {})):
            if attr not in cls.__dict__:
                setattr(cls, attr, empty)

    def __init__(self, config: Any | None = None, **overrides: Any) -> None:
        self.config = config if config is not None else self.Config()
        if overrides:
            self.config = dataclasses.replace(self.config, **overrides)
        self.info: dict[str, Any] = {}
        self.flags: list[dict[str, str]] = []

    @classmethod
    def config_from_params(cls, params: Mapping[str, Any]) -> Any:
        """Build ``Config`` from spec/``--set`` values, validated and parsed by the field types.

        Unknown keys, values of the wrong type and values outside a field's declared range are a
        :class:`UserError` on one line (see :mod:`fsad_bench.detectors.hparams`).
        """
        return parse_config(cls.Config, params, cls.name or cls.__name__)

    @classmethod
    def describe(cls, name: str) -> MethodInfo:
        """The report metadata of this detector running under ``name`` (its entry-point name or dotted
        path): the declared display name (else ``name``), paper column and weights notes."""
        return MethodInfo(cls.display_name or name, cls.paper_column, dict(cls.weights_notes),
                          cls.uses_labelled_anomalies)

    @classmethod
    def min_img_size(cls, config: Any) -> int:
        """Smallest image side (px) this configuration gives meaningful results for; the driver refuses
        a smaller ``img_size`` before the grid runs. Default 1 (no minimum)."""
        return 1

    @classmethod
    def required_weights(cls, config: Any) -> list[str]:
        """Backbones whose ImageNet weights the detector will load (checked once before a grid runs).

        Default: ``[config.backbone]`` when the config has ``weights == "imagenet"`` and a ``backbone``.
        """
        if getattr(config, "weights", None) == "imagenet" and getattr(config, "backbone", None):
            return [config.backbone]
        return []

    # -- what ``fsad-bench bench`` needs (optional; see the class docstring) ------------------------------

    @classmethod
    def bench_phases(cls, config: Any, shape: TrainShape) -> list[BenchPhase] | None:
        """The optimiser phases of ``fit`` with ``config`` on a training set of ``shape``, in the order
        they run (see the class docstring). Default None: not declared, ``bench`` times the whole fit."""
        return None

    @classmethod
    def bench_step_overrides(cls, config: Any, n_steps: int, shape: TrainShape) -> dict[str, Any]:
        """Hyper-parameter changes after which every phase runs about ``n_steps`` optimiser steps (see
        the class docstring). Default: none."""
        return {}

    @abstractmethod
    def fit(self, train: TrainSet) -> Detector:
        """Learn from normals (+ labelled anomalies); returns self."""

    @abstractmethod
    def score(self, images: np.ndarray) -> np.ndarray:
        """Anomaly scores, shape (N,), higher = more anomalous, for uint8 (N,H,W,3) images."""

    def explain(self, images: np.ndarray) -> np.ndarray | None:
        """Per-pixel anomaly maps (N,H,W) in [0, 1], or None if the method has none."""
        return None


__all__ = ["BenchPhase", "Detector", "MethodInfo", "NoParams", "TrainSet", "TrainShape", "field"]
