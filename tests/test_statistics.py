"""Statistics beyond the paper: Holm, Friedman, Nemenyi and average ranks on fixed inputs, checked
against hand computations and scipy / statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import friedmanchisquare, studentized_range
from statsmodels.stats.multitest import multipletests

from fsad_bench.report.layouts import statistics_part
from fsad_bench.report.stats import average_ranks, friedman_nemenyi, holm, paired_wilcoxon
from fsad_bench.report.tables import build_table
from fsad_bench.upgrade import presentation_of

# 8 datasets x 4 methods of mean AUCs (fixed, with a tie in the last row)
MATRIX = pd.DataFrame(
    [[.90, .85, .80, .70], [.88, .86, .79, .72], [.95, .90, .91, .80], [.70, .72, .65, .60],
     [.83, .80, .81, .75], [.99, .97, .96, .90], [.77, .70, .74, .69], [.85, .85, .80, .70]],
    columns=["devnet", "minns", "flos", "kdad"])


def test_holm_matches_hand_computation_and_statsmodels():
    raw = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": None}
    adjusted = holm(raw)
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02, "e": None})
    ps = [0.01, 0.04, 0.03, 0.005]
    assert [adjusted[k] for k in "abcd"] == pytest.approx(list(multipletests(ps, method="holm")[1]))
    assert holm({"a": None}) == {"a": None}


def test_average_ranks_by_hand():
    ranks = average_ranks(MATRIX)
    # devnet is first everywhere except row 4 (2nd) and the tie in row 8 (1.5): (6 + 2 + 1.5) / 8
    assert ranks["devnet"] == pytest.approx((6 * 1 + 2 + 1.5) / 8)
    assert ranks["kdad"] == pytest.approx(4.0)
    assert sum(ranks.values()) == pytest.approx(1 + 2 + 3 + 4)  # ranks of each row sum to 10


def test_friedman_and_nemenyi_match_scipy_and_formula():
    test = friedman_nemenyi(MATRIX)
    ref = friedmanchisquare(*[MATRIX[c] for c in MATRIX])
    assert test.statistic == pytest.approx(ref.statistic) and test.p_value == pytest.approx(ref.pvalue)
    k, n = 4, 8
    # Demsar (2006) Table 5a: q_0.05 = 2.569 for k = 4
    assert test.critical_difference == pytest.approx(2.569 * np.sqrt(k * (k + 1) / (6 * n)), abs=1e-3)
    r = test.average_ranks
    z = abs(r["devnet"] - r["kdad"]) / np.sqrt(k * (k + 1) / (6 * n))
    expected = studentized_range.sf(z * np.sqrt(2), k, np.inf)
    assert test.posthoc.loc["devnet", "kdad"] == pytest.approx(expected, rel=1e-3)
    assert test.posthoc.loc["devnet", "kdad"] < 0.05 < test.posthoc.loc["devnet", "minns"]


def test_too_few_datasets_or_methods_give_reasons_not_numbers():
    few = friedman_nemenyi(MATRIX.iloc[:3])
    assert few.p_value is None and few.reason == "needs >= 6 datasets with every method, has 3"
    assert few.average_ranks  # ranks are descriptive: still given
    two = friedman_nemenyi(MATRIX[["devnet", "kdad"]])
    assert two.p_value is None and "needs >= 3 methods" in two.reason
    w = paired_wilcoxon(MATRIX.devnet[:5], MATRIX.kdad[:5])
    assert w.p_value is None and w.reason == "needs >= 6 datasets, has 5"


def _long(matrix: pd.DataFrame) -> pd.DataFrame:
    datasets = ["aitex", "sdd", "elpv", "optical", "mastcam", "brainmri", "headct", "hyperkvasir"]
    recs = [(m, d, d, seed, matrix.loc[i, m] + (seed - 1) * 0.01)
            for i, d in enumerate(datasets) for m in matrix for seed in range(3)]
    return pd.DataFrame(recs, columns=["method", "dataset", "category", "seed", "value"])


def test_statistics_section_labels_spreads_and_draws_cd(tmp_path):
    table = build_table(_long(MATRIX), spec=presentation_of("q1"))
    labels = [label for label, _ in table.pvalue_rows]
    assert labels == ["p-value (8)", "Holm p (8) (ours)"]
    part = statistics_part(table, "markdown", tmp_path, "q1_auc_roc", "Q1")
    assert "Friedman over 8 datasets" in part.body and "critical difference" in part.body
    assert "dataset spread" in part.body and "seed spread" in part.body
    devnet_row = next(line for line in part.body.splitlines() if line.startswith("| DevNet"))
    # seed spread: values are mean + (-0.01, 0, 0.01) -> population std 0.008 on every dataset
    cells = [c.strip() for c in devnet_row.strip("|").split("|")]
    assert cells[1] == f"{(6 + 2 + 1.5) / 8:.2f}" and cells[-1] == "0.008"
    assert cells[-2] == f"{MATRIX.devnet.std(ddof=0):.3f}"
    pngs = [p for p in part.figures if p.suffix == ".png"]
    assert len(pngs) == 1 and pngs[0].stat().st_size > 5000
    assert pngs[0].with_suffix(".pdf").is_file()
