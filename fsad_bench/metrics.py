"""Detection metrics (scikit-learn, as in the authors' evaluation)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC-ROC and AUC-PR (average precision, as the authors report it) over test images."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        raise ValueError("the test set holds only one class; AUC is undefined")
    return {"auc_roc": float(roc_auc_score(labels, scores)),
            "auc_pr": float(average_precision_score(labels, scores))}


def pixel_metrics(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> dict:
    """Pixel-level AUC-ROC in both definitions, over test images (N,H,W) with labels (N,).

    ``pixel_auc_per_image`` — the authors' definition (DevNet's Table 4): the MEAN over test anomalies
    of each image's own pixel AUC (anomalies whose mask is empty are left out).
    ``pixel_auc_pooled`` — the usual pooled pixel AUROC (anomalib): one AUC over the pixels of all test
    images, normal images included (their masks are all zero).
    ``pixel_auc_each`` keeps the per-anomaly values (in test order) for the AUC-vs-F1 curve (Fig. 4).
    """
    maps, masks, labels = np.asarray(maps, float), np.asarray(masks) > 0, np.asarray(labels)
    if maps.shape != masks.shape:
        raise ValueError(f"explain() returned maps of shape {maps.shape}, masks are {masks.shape}")
    each = []
    for m, g in zip(maps[labels == 1], masks[labels == 1]):
        each.append(float(roc_auc_score(g.ravel(), m.ravel())) if 0 < g.sum() < g.size else float("nan"))
    valid = [v for v in each if v == v]
    if not valid:
        raise ValueError("no test anomaly has a non-empty mask")
    return {"pixel_auc_per_image": float(np.mean(valid)),
            "pixel_auc_pooled": float(roc_auc_score(masks.ravel(), maps.ravel())),
            "pixel_auc_each": [round(v, 5) if v == v else None for v in each]}
