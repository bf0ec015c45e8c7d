"""Report: mean ± std layout, MVTec average row, p-values equal scipy's Wilcoxon."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from fsad_bench.cli import main
from fsad_bench.report.render import render
from fsad_bench.report.tables import build_table, load_long_csv
from fsad_bench.upgrade import presentation_of

# Paper Table 2 means (DevNet vs MINNS) on the 8 non-MVTec datasets plus 2 MVTec categories.
DEVNET = {"aitex": .887, "sdd": .988, "elpv": .846, "optical": .782, "mastcam": .790, "brainmri": .958,
          "headct": .982, "hyperkvasir": .829}
MINNS = {"aitex": .813, "sdd": .961, "elpv": .788, "optical": .774, "mastcam": .803, "brainmri": .943,
         "headct": .984, "hyperkvasir": .647}
MVTEC = {"carpet": (.867, .876), "grid": (.967, .983)}


def _long() -> pd.DataFrame:
    recs = []
    for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
        for d in DEVNET:
            recs.append(("devnet", d, d, seed, DEVNET[d] + jitter))
            recs.append(("minns", d, d, seed, MINNS[d] + jitter))
        for cat, (dv, mi) in MVTEC.items():
            recs.append(("devnet", "mvtec", cat, seed, dv + jitter))
            recs.append(("minns", "mvtec", cat, seed, mi + jitter))
    return pd.DataFrame(recs, columns=["method", "dataset", "category", "seed", "value"])


def test_table_layout_and_values():
    table = build_table(_long(), spec=presentation_of("q1"))
    labels = [r.label for r in table.rows]
    assert labels[:3] == ["Carpet", "Grid", "MVTEC AD"] and "AITEX" in labels
    mv = next(r for r in table.rows if r.label == "MVTEC AD")
    assert mv.is_average and mv.cells["devnet"][0] == pytest.approx((.867 + .967) / 2)
    # std over seeds of the per-seed category average: jitter -0.01, 0, 0.01 -> population std
    assert mv.cells["devnet"][1] == pytest.approx(np.std([-0.01, 0, 0.01]))
    assert table.methods == ["minns", "devnet"]


def test_pvalues_equal_scipy():
    table = build_table(_long(), spec=presentation_of("q1"))
    rows = dict(table.pvalue_rows)
    dev9 = [DEVNET[d] for d in sorted(DEVNET)] + [(.867 + .967) / 2]
    min9 = [MINNS[d] for d in sorted(DEVNET)] + [(.876 + .983) / 2]
    p9 = wilcoxon(dev9, min9, alternative="two-sided").pvalue
    dev10 = [DEVNET[d] for d in sorted(DEVNET)] + [.867, .967]
    min10 = [MINNS[d] for d in sorted(DEVNET)] + [.876, .983]
    p10 = wilcoxon(dev10, min10, alternative="two-sided").pvalue
    assert rows["p-value (9)"]["minns"] == f"{p9:.4f}"
    assert rows["p-value (10)"]["minns"] == f"{p10:.4f}"


def test_too_few_datasets_gives_no_number():
    df = _long()
    table = build_table(df[df.dataset == "aitex"], spec=presentation_of("q1"))
    # one dataset: no p-value row of n/a, one line saying what the tests need
    assert table.pvalue_rows == []
    assert "p-values need >= 6 datasets; this table has 1: run more datasets to get them" in table.notes
    assert not any("n/a" in n or "Wilcoxon" in n for n in table.notes)


def test_render_formats_bold_best():
    table = build_table(_long(), spec=presentation_of("q1"))
    md = render(table, "markdown")
    assert "| **0.887** ± 0.008 |" in md  # AITEX: DevNet best
    tex = render(table, "latex")
    assert "\\toprule" in tex and "\\textbf{0.887} $\\pm$ 0.008" in tex
    assert tex.count("{") == tex.count("}")
    for line in tex.splitlines():
        if line.endswith("\\\\"):
            assert line.count("&") == len(table.methods)
    csv = render(table, "csv")
    assert csv.splitlines()[0].startswith("row,average_row,method,mean,std")


def test_report_from_csv_matches(tmp_path, capsys):
    df = _long()
    csv = df.rename(columns={"value": "auc_roc"})
    csv.loc[csv.dataset != "mvtec", "category"] = ""
    path = tmp_path / "long.csv"
    csv.to_csv(path, index=False)
    assert load_long_csv(path).value.sum() == pytest.approx(df.value.sum())
    assert main(["report", "--from-csv", str(path)]) == 0
    out = capsys.readouterr().out
    assert "p-value (9)" in out and "MVTEC AD" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,method\nx,y\n")
    assert main(["report", "--from-csv", str(bad)]) == 2


def _cells_frame(settings: list[dict], datasets=("synthetic",),
                 categories=("brick", "grass")) -> pd.DataFrame:
    recs = []
    for d in datasets:
        for c in categories:
            for m, base in (("devnet", 0.8), ("flos", 0.7)):
                for seed in (0, 1):
                    for i, s in enumerate(settings):
                        recs.append(dict(dataset=d, category=c, method=m, seed=seed, setting=s,
                                         value=base + 0.01 * i + 0.02 * seed, protocol="x"))
    return pd.DataFrame(recs)


def test_curve_report_and_figure(tmp_path):
    from fsad_bench.report.layouts import protocol_report

    df = _cells_frame([{"n_anomaly": n} for n in (5, 10, 20, 40)])
    text = protocol_report(df, presentation_of("q5"), "markdown", "auc_roc", [], tmp_path / "fig")
    # mean over categories per seed, then mean ± population std over seeds: 0.8 + 0.01 + 0.01 ± 0.01
    row = [line for line in text.splitlines() if line.startswith("| SYNTHETIC") and "| 10 " in line]
    assert len(row) == 1 and "0.820 ± 0.010" in row[0] and "0.720 ± 0.010" in row[0]
    assert (tmp_path / "fig" / "q5.png").stat().st_size > 5000 and (tmp_path / "fig" / "q5.pdf").exists()
    csv = protocol_report(df, presentation_of("q5"), "csv", "auc_roc", [], None)
    assert csv.splitlines()[0] == "dataset,n_anomaly,method,mean,std,n_seeds,flags"
    assert len(csv.splitlines()) == 1 + 8


def test_open_set_table_rows_are_known_classes():
    from fsad_bench.report.tables import build_table, open_set_frame

    df = _cells_frame([{"known_class": k, "n_anomaly": 10} for k in ("color", "cut", "hole")],
                      datasets=("mvtec",), categories=("carpet",))
    table = build_table(open_set_frame(df), multi=True, spec=presentation_of("q1"))
    labels = [r.label for r in table.rows]
    assert labels == ["Color", "Cut", "Hole", "Carpet"]
    # p-values pair the 3 known-class sets (too few for a p-value: one line says so)
    assert len(table.unit_means["per_category"]) == 3 and table.pvalue_rows == []
    assert ("p-values need >= 6 datasets; this table has 1 (3 counting each category row as a dataset): "
            "run more datasets to get them") in table.notes


def test_open_set_latex_has_tier_columns_and_equal_cell_counts():
    from fsad_bench.report.layouts import protocol_report

    df = _cells_frame([{"known_class": k, "n_anomaly": 10} for k in ("color", "cut")],
                      datasets=("mvtec",), categories=("carpet", "metal_nut"))
    tex = protocol_report(df, presentation_of("q2"), "latex", "auc_roc", [])
    assert "Data (Tier-1) & Data (Tier-2)" in tex and "\\label{tab:q2-auc-roc}" in tex
    rows = [line for line in tex.splitlines() if line.endswith("\\\\")]
    assert all(line.count("&") == 1 + 2 for line in rows)  # two name columns + DevNet and FLOS
    assert "Carpet & Color" in tex and " & \\textbf{Mean} & " in tex
    md = protocol_report(df, presentation_of("q2"), "markdown", "auc_roc", [])
    assert "| Metal_Nut " in md and "| **Mean** " in md
