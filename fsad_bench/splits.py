"""Seeded train/test splits built from sorted file lists; each carries its manifest.

A split never depends on the method: it is a function of (category index, protocol setting, seed).
The manifest names the labelled training anomalies and the test files, and its hash is stored with
every result, so anyone can check two results were computed on the same split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from pydantic import Field

from fsad_bench.data.layout import CategoryIndex
from fsad_bench.detectors.hparams import NonNegInt, PositiveInt
from fsad_bench.errors import SettingDoesNotFit, SkipCell, UserError
from fsad_bench.registry import Registry

#: split rules by name (a protocol spec's ``split``)
SPLIT_RULES: Registry = Registry("split rule")

# A split rule's arguments are typed: a protocol's [settings] / [split_args] and `--set n_anomaly=...`
# are validated against these annotations before any cell is built.
#: a fraction of the training normals replaced by anomalies, in [0, 1)
ContaminationRate = Annotated[float, Field(ge=0, lt=1)]


@dataclass
class Split:
    train_idx: np.ndarray     # indices into CategoryIndex.files
    train_labels: np.ndarray  # 0 normal / 1 labelled anomaly (what the detector sees)
    test_idx: np.ndarray
    test_labels: np.ndarray   # ground truth, for metrics only
    manifest: dict = field(default_factory=dict)

    @property
    def manifest_hash(self) -> str:
        blob = json.dumps(self.manifest, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _manifest(index: CategoryIndex, rule: str, seed: int, labelled: np.ndarray, test: np.ndarray,
              **extra) -> dict:
    return {"rule": rule, "seed": seed, **extra,
            "labelled_anomalies": [index.files[i] for i in labelled],
            "n_train_normal": len(index.where("train")),
            "test": [index.files[i] for i in test]}


@SPLIT_RULES.register("q1")
def q1_split(index: CategoryIndex, n_anomaly: NonNegInt, seed: int) -> Split:
    """Q1: ``n_anomaly`` test anomalies of any class, drawn with ``seed``, become labelled training
    anomalies and leave the test set. Train normals = train/good; test = test/good + the rest.

    As in the authors' code, asking for more than half of the available anomalies is refused
    (:class:`SettingDoesNotFit`, with the largest ``n_anomaly`` that fits).
    """
    anomalies = index.where("test", anomalous=True)
    if n_anomaly < 0:
        raise UserError(f"n_anomaly must be >= 0, got {n_anomaly}")
    if n_anomaly > len(anomalies) // 2:
        raise SettingDoesNotFit(f"n_anomaly={n_anomaly} is more than half of the {len(anomalies)} anomalies "
                                f"in {index.root}; use n_anomaly <= {len(anomalies) // 2}",
                                fits={"n_anomaly": len(anomalies) // 2})
    labelled = np.sort(np.random.default_rng(seed).permutation(anomalies)[:n_anomaly])
    train_idx, train_labels, test = _train_test(index, labelled, labelled)
    return Split(train_idx, train_labels, test, index.labels[test],
                 _manifest(index, "q1", seed, labelled, test, n_anomaly=n_anomaly))


def _train_test(index: CategoryIndex, labelled: np.ndarray, removed: np.ndarray,
                polluted: np.ndarray | None = None, dropped: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_idx, train_labels, test_idx): train = train/good (minus ``dropped``) + ``polluted``
    (labelled normal) + ``labelled`` (labelled anomalies); test = test files minus ``removed``."""
    polluted = np.sort(polluted) if polluted is not None else np.zeros(0, np.int64)
    normals = np.setdiff1d(index.where("train"), dropped if dropped is not None else [])
    train_idx = np.concatenate([normals, polluted, labelled]).astype(np.int64)
    train_labels = np.r_[np.zeros(len(normals) + len(polluted), np.int64), np.ones(len(labelled), np.int64)]
    return train_idx, train_labels, np.setdiff1d(index.where("test"), removed)


#: Q2: smallest known class that is used. The paper excludes "anomaly classes [that] contain only
#: 1-5 samples, which are too small to train generalized models" (sec. 6.6.1).
Q2_MIN_CLASS_IMAGES = 6
#: Q5: fewest test anomalies the fixed test set may keep (as Q6's rule: fewer than 10 is not applicable).
Q5_MIN_TEST_ANOMALIES = 10


@SPLIT_RULES.register("q2")
def q2_split(index: CategoryIndex, known_class: str, n_anomaly: PositiveInt, seed: int,
             min_class_images: PositiveInt = Q2_MIN_CLASS_IMAGES) -> Split:
    """Q2 (open set, DRA's hard setting): labelled anomalies drawn with ``seed`` from
    ``known_class`` only; that whole class leaves the test set, which holds the normals and every
    other class (unseen in training).

    A class with fewer than ``n_anomaly`` images gives all of them (``min(n_anomaly, class size)``
    labelled anomalies, recorded as ``n_labelled`` in the manifest), as DRA's code does (its
    ``know_class_data[0:nAnomaly]``): that is how the paper's 30 open-set datasets include the small
    AITEX and Mastcam classes. Classes of fewer than ``min_class_images`` (6) images are not
    applicable, as the paper excludes the classes of 1-5 samples."""
    if known_class not in index.defect_classes:
        raise SkipCell(f"no anomaly class {known_class!r} in {index.root} "
                       f"(classes: {', '.join(index.defect_classes)})")
    if len(index.defect_classes) < 2:
        raise SkipCell(f"{index.root} has one anomaly class: no unseen class is left for the test set")
    if n_anomaly < 1:
        raise UserError(f"n_anomaly must be >= 1 for the open-set split, got {n_anomaly}")
    pool = index.where("test", cls=known_class)
    if len(pool) < min_class_images:
        raise SkipCell(f"class {known_class!r} has {len(pool)} images, fewer than {min_class_images} "
                       f"(the paper excludes classes of 1-{min_class_images - 1} samples)")
    labelled = np.sort(np.random.default_rng(seed).permutation(pool)[:n_anomaly])
    train_idx, train_labels, test = _train_test(index, labelled, pool)
    return Split(train_idx, train_labels, test, index.labels[test],
                 _manifest(index, "q2", seed, labelled, test, known_class=known_class, n_anomaly=n_anomaly,
                           n_labelled=len(labelled), min_class_images=min_class_images))


@SPLIT_RULES.register("q5")
def q5_split(index: CategoryIndex, n_anomaly: NonNegInt, seed: int, max_anomaly: PositiveInt,
             min_test_anomalies: PositiveInt = Q5_MIN_TEST_ANOMALIES) -> Split:
    """Q5 (sample efficiency): the largest draw (``max_anomaly``) is made with ``seed`` and removed
    from the test set for every n, so the test set is identical across n ("with the test data
    unchanged", paper sec. 6.8.2); training uses the draw's first ``n_anomaly``.

    Not applicable when fewer than ``min_test_anomalies`` (10) anomalies would remain for testing.
    The authors' Q1 half rule is not applied to the largest draw: it would drop SDD (54 anomalies,
    40 > 27), which the paper's Fig. 7 shows at n = 40; with this rule SDD keeps 14 test anomalies."""
    anomalies = index.where("test", anomalous=True)
    if not 0 <= n_anomaly <= max_anomaly:
        raise UserError(f"n_anomaly={n_anomaly} must be between 0 and the largest draw "
                        f"max_anomaly={max_anomaly}")
    if len(anomalies) - max_anomaly < min_test_anomalies:
        raise SkipCell(f"the largest draw ({max_anomaly}) would leave {len(anomalies) - max_anomaly} of the "
                       f"{len(anomalies)} anomalies in {index.root} for testing, "
                       f"fewer than {min_test_anomalies}")
    drawn = np.random.default_rng(seed).permutation(anomalies)[:max_anomaly]
    labelled = np.sort(drawn[:n_anomaly])
    train_idx, train_labels, test = _train_test(index, labelled, drawn)
    return Split(train_idx, train_labels, test, index.labels[test],
                 _manifest(index, "q5", seed, labelled, test, n_anomaly=n_anomaly, max_anomaly=max_anomaly,
                           min_test_anomalies=min_test_anomalies))


@SPLIT_RULES.register("q6")
def q6_split(index: CategoryIndex, contamination: ContaminationRate, n_anomaly: NonNegInt,
             seed: int) -> Split:
    """Q6 (contamination): ``round(contamination * n_train_normal)`` training normals, drawn with
    ``seed``, are replaced by unlabelled anomalies (labelled normal), so the unlabelled set keeps its
    size and holds exactly that fraction of anomalies. Labelled anomalies (``n_anomaly``) and
    polluting anomalies come from one seeded permutation of the test anomalies and both leave the
    test set (the paper's rule; DRA's code forgets to remove the polluting ones). Skipped when fewer
    than ``n_anomaly`` anomalies would remain for testing."""
    rng = np.random.default_rng(seed)
    anomalies = index.where("test", anomalous=True)
    train_normal = index.where("train")
    n_pollute = int(round(contamination * len(train_normal)))
    if n_anomaly + n_pollute + n_anomaly > len(anomalies):
        raise SkipCell(f"contamination {contamination:g} needs {n_pollute} polluting + {n_anomaly} labelled "
                       f"anomalies, leaving fewer than {n_anomaly} of the {len(anomalies)} for the test set")
    order = rng.permutation(anomalies)
    labelled, polluted = np.sort(order[:n_anomaly]), np.sort(order[n_anomaly:n_anomaly + n_pollute])
    dropped = np.sort(rng.permutation(train_normal)[:n_pollute])
    train_idx, train_labels, test = _train_test(index, labelled, order[:n_anomaly + n_pollute],
                                                polluted, dropped)
    manifest = _manifest(index, "q6", seed, labelled, test, contamination=contamination, n_anomaly=n_anomaly,
                         polluting_anomalies=[index.files[i] for i in polluted],
                         dropped_normals=[index.files[i] for i in dropped])
    return Split(train_idx, train_labels, test, index.labels[test], manifest)

