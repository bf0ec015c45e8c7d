"""Significance tests used in the paper's tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon


@dataclass
class PairedTest:
    p_value: float | None  # None when the test cannot be computed
    n: int                 # number of paired datasets
    reason: str = ""       # why p_value is None


def paired_wilcoxon(a: np.ndarray, b: np.ndarray, min_n: int = 2) -> PairedTest:
    """Paired two-sided Wilcoxon signed-rank test over per-dataset means (scipy's defaults).

    Returns no number when fewer than ``min_n`` pairs exist or all differences are zero.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = len(a)
    if n < min_n:
        return PairedTest(None, n, f"needs >= {min_n} datasets")
    if np.allclose(a - b, 0):
        return PairedTest(None, n, "all differences are zero")
    return PairedTest(float(wilcoxon(a, b, alternative="two-sided").pvalue), n)
