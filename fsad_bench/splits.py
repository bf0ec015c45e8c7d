"""Seeded train/test splits built from sorted file lists; each carries its manifest.

A split never depends on the method: it is a function of (category index, protocol setting, seed).
The manifest names the labelled training anomalies and the test files, and its hash is stored with
every result, so anyone can check two results were computed on the same split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from fsad_bench.data.layout import CategoryIndex
from fsad_bench.errors import UserError


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


def q1_split(index: CategoryIndex, n_anomaly: int, seed: int) -> Split:
    """Q1: ``n_anomaly`` test anomalies of any class, drawn with ``seed``, become labelled training
    anomalies and leave the test set. Train normals = train/good; test = test/good + the rest.

    As in the authors' code, asking for more than half of the available anomalies is refused.
    """
    anomalies = index.where("test", anomalous=True)
    if n_anomaly < 0:
        raise UserError(f"n_anomaly must be >= 0, got {n_anomaly}")
    if n_anomaly > len(anomalies) // 2:
        raise UserError(f"n_anomaly={n_anomaly} is more than half of the {len(anomalies)} anomalies in "
                        f"{index.root}; use n_anomaly <= {len(anomalies) // 2}")
    rng = np.random.default_rng(seed)
    labelled = np.sort(rng.permutation(anomalies)[:n_anomaly])
    train_normal = index.where("train")
    test = np.setdiff1d(index.where("test"), labelled)
    train_idx = np.concatenate([train_normal, labelled])
    train_labels = np.concatenate([np.zeros(len(train_normal), np.int64), np.ones(len(labelled), np.int64)])
    labels = index.labels
    return Split(train_idx, train_labels, test, labels[test],
                 _manifest(index, "q1", seed, labelled, test, n_anomaly=n_anomaly))


SPLIT_RULES = {"q1": q1_split}
