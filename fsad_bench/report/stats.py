"""Significance tests of the reports: the paper's paired Wilcoxon p-values, and beyond the paper
Holm-corrected p-values, the Friedman test, average ranks and the Nemenyi post-hoc test behind the
critical-difference diagram. The tests themselves come from scipy, statsmodels and scikit-posthocs;
this module only decides what is paired with what and when there are too few datasets to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import friedmanchisquare, studentized_range, wilcoxon

#: The smallest number of paired datasets at which a two-sided exact Wilcoxon signed-rank test can
#: reach p < 0.05 (n = 6 gives p = 2/64 = 0.031 at best); below it a p-value can never be significant.
MIN_WILCOXON = 6
#: Friedman's chi-square approximation and the Nemenyi test are unreliable on very few datasets
#: (Demsar, JMLR 2006); we ask for as many datasets as the Wilcoxon test does, and >= 3 methods.
MIN_FRIEDMAN_DATASETS = 6
MIN_FRIEDMAN_METHODS = 3


@dataclass
class PairedTest:
    p_value: float | None  # None when the test cannot be computed
    n: int                 # number of paired datasets
    reason: str = ""       # why p_value is None


def paired_wilcoxon(a: np.ndarray, b: np.ndarray, min_n: int = MIN_WILCOXON) -> PairedTest:
    """Paired two-sided Wilcoxon signed-rank test over per-dataset means, with scipy's defaults spelled
    out: zero differences dropped (``zero_method="wilcox"``), no continuity correction, the exact
    distribution when no difference is zero or tied, else scipy's choice for ties (``method="auto"``).
    These reproduce every p-value of the paper's Table 2 from its printed means.

    Returns no number when fewer than ``min_n`` pairs exist or all differences are zero.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = len(a)
    if n < min_n:
        return PairedTest(None, n, f"needs >= {min_n} datasets, has {n}")
    if np.allclose(a - b, 0):
        return PairedTest(None, n, "all differences are zero")
    result = wilcoxon(a, b, zero_method="wilcox", correction=False, alternative="two-sided", method="auto")
    return PairedTest(float(result.pvalue), n)


def holm(p_values: dict[str, float | None]) -> dict[str, float | None]:
    """Holm step-down adjusted p-values over the family of the tests that have a p-value
    (statsmodels' ``multipletests``); tests without a number stay without one."""
    from statsmodels.stats.multitest import multipletests

    named = {k: v for k, v in p_values.items() if v is not None}
    if not named:
        return dict(p_values)
    adjusted = multipletests(list(named.values()), method="holm")[1]
    out = dict(p_values)
    out.update({k: float(p) for k, p in zip(named, adjusted)})
    return out


@dataclass
class RankTest:
    """Friedman test over methods x datasets, average ranks (1 = best) and Nemenyi post-hoc p-values."""

    methods: list[str]
    n_datasets: int
    average_ranks: dict[str, float] = field(default_factory=dict)
    statistic: float | None = None
    p_value: float | None = None
    critical_difference: float | None = None  # Nemenyi CD at alpha (in ranks)
    posthoc: pd.DataFrame | None = None       # pairwise Nemenyi p-values
    alpha: float = 0.05
    reason: str = ""                           # why there is no test


def average_ranks(matrix: pd.DataFrame) -> dict[str, float]:
    """Mean rank of each method (columns) over datasets (rows); higher AUC = better = rank 1,
    ties get their average rank."""
    return matrix.rank(axis=1, ascending=False, method="average").mean().to_dict()


def friedman_nemenyi(matrix: pd.DataFrame, alpha: float = 0.05,
                     min_datasets: int = MIN_FRIEDMAN_DATASETS) -> RankTest:
    """Friedman test (scipy) and Nemenyi post-hoc (scikit-posthocs) on a datasets x methods matrix of
    mean AUCs. Rows with a missing method are dropped (the test needs complete blocks)."""
    matrix = matrix.dropna(axis=0, how="any")
    methods, n = list(matrix.columns), len(matrix)
    test = RankTest(methods, n, alpha=alpha)
    if n:
        test.average_ranks = average_ranks(matrix)
    if len(methods) < MIN_FRIEDMAN_METHODS:
        test.reason = f"needs >= {MIN_FRIEDMAN_METHODS} methods, has {len(methods)}"
        return test
    if n < min_datasets:
        test.reason = f"needs >= {min_datasets} datasets with every method, has {n}"
        return test
    if np.allclose(matrix.to_numpy() - matrix.to_numpy()[:, :1], 0):
        test.reason = "all methods score the same on every dataset"
        return test
    import scikit_posthocs as sp

    result = friedmanchisquare(*[matrix[m].to_numpy(float) for m in methods])
    test.statistic, test.p_value = float(result.statistic), float(result.pvalue)
    test.posthoc = sp.posthoc_nemenyi_friedman(matrix.to_numpy(float))
    test.posthoc.index = test.posthoc.columns = methods
    k = len(methods)
    # Nemenyi's critical difference: q_alpha / sqrt(2) * sqrt(k (k + 1) / (6 N)) (Demsar 2006, eq. 5)
    q = studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    test.critical_difference = float(q * np.sqrt(k * (k + 1) / (6 * n)))
    return test
