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
