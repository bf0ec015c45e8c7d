"""Detection metrics (scikit-learn, as in the authors' evaluation) and the authors' mask resizing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0-255 mask (H, W) resized to (size, size) as the authors' localisation code does, uint8 0/1.

    DevNet's ``localization.py`` resizes each ground-truth mask with ``cv2.resize(label, (448,
    448))`` - OpenCV's default INTER_LINEAR: bilinear between the two nearest source pixels on
    each axis, half-pixel centres, *no* antialiasing when shrinking - into uint8, then keeps
    ``label > 0``: every pixel the defect reaches at all. Here: torch's bilinear interpolation
    (``align_corners=False, antialias=False``, the same sampling), rounded half to even to the
    integer grey level, then > 0. Against OpenCV 5.0 on 1,080 random masks (1024/900/700/128/32 px
    to 448/128/64/32 px) this gave identical masks except 4 pixels in 4 masks (900 -> 448) where
    OpenCV's 11-bit fixed-point weights round the other way. Neither PIL's BILINEAR (antialiased:
    it widens its window when shrinking) nor NEAREST gives the authors' masks.
    """
    source = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    resized = F.interpolate(source, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return (torch.round(resized[0, 0]) > 0).numpy().astype(np.uint8)


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC-ROC and AUC-PR (average precision, as the authors report it) over test images."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        raise ValueError("the test set holds only one class; AUC is undefined")
    return {"auc_roc": float(roc_auc_score(labels, scores)),
            "auc_pr": float(average_precision_score(labels, scores))}


def pixel_metrics(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> dict:
    """Pixel-level AUC-ROC in both definitions, over test images (N,H,W) with labels (N,).

    ``masks`` are the authors' masks at the maps' size (:func:`resize_mask`, as the data cache
    decodes them): both definitions below use them.

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
