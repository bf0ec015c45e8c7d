"""A result the detector flagged as suspect (e.g. diverged training, the store's ``flags`` column) is
kept in the mean but never hidden: its table cell carries a dagger and a note lists each flagged
result, in every format, in the curve tables and beside the paper too."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from fsad_bench.cli import main
from fsad_bench.report.document import comparison_part
from fsad_bench.report.layouts import protocol_report
from fsad_bench.store import CellResult, ResultStore
from fsad_bench.upgrade import presentation_of

DIVERGED = [{"flag": "diverged", "reason": "mean loss of the last 5 steps 1e6 x the first"}]


def _frame(setting: dict | None = None) -> pd.DataFrame:
    recs = []
    for d in ("aitex", "sdd"):
        for m, base in (("devnet", 0.9), ("minns", 0.8)):
            for seed in range(3):
                flags = DIVERGED if (d, m, seed) == ("sdd", "minns", 1) else []
                recs.append(dict(dataset=d, category=d, method=m, seed=seed, value=base, flags=flags,
                                 setting=setting or {}, budget="paper"))
    return pd.DataFrame(recs)


def _line(text: str, start: str) -> str:
    return next(x for x in text.splitlines() if x.startswith(start))


def test_markdown_marks_the_cell_and_lists_the_result():
    text = protocol_report(_frame(), presentation_of("q1"), "markdown", "auc_roc", [])
    assert "0.800 ± 0.000 †" in _line(text, "| SDD ")
    assert "†" not in _line(text, "| AITEX ")
    assert "> † SDD, MINNS, seed 1: diverged (mean loss of the last 5 steps 1e6 x the first)" in text


@pytest.mark.parametrize("fmt, mark", [("latex", "0.800 $\\pm$ 0.000 $^\\dagger$"),
                                       ("html", "0.800 ± 0.000 †")])
def test_latex_and_html_mark_it_too(fmt, mark):
    text = protocol_report(_frame(), presentation_of("q1"), fmt, "auc_roc", [])
    assert mark in text and "SDD, MINNS, seed 1: diverged" in text
    if fmt == "latex":
        assert text.count("{") == text.count("}")


def test_csv_has_a_flags_column():
    text = protocol_report(_frame(), presentation_of("q1"), "csv", "auc_roc", [])
    df = pd.read_csv(io.StringIO(text), keep_default_na=False)
    flagged = df[df["flags"] != ""]
    assert flagged[["row", "method", "flags"]].values.tolist() == [["SDD", "minns", "diverged"]]


def test_an_average_row_includes_its_flagged_category():
    df = _frame()
    df = df.assign(category=df.dataset.map({"aitex": "carpet", "sdd": "grid"}), dataset="mvtec")
    text = protocol_report(df, presentation_of("q1"), "markdown", "auc_roc", [])
    assert "†" in _line(text, "| Grid ") and "†" in _line(text, "| **MVTEC AD** ")
    assert "†" not in _line(text, "| Carpet ")


def test_curves_mark_the_point():
    frames = [_frame({"n_anomaly": n}) for n in (5, 10)]
    frames[0]["flags"] = [[] for _ in range(len(frames[0]))]  # flagged only at n = 10
    text = protocol_report(pd.concat(frames, ignore_index=True), presentation_of("q5"), "markdown", "auc_roc",
                           [])
    assert "†" in _line(text, "| SDD    | 10 ") and "†" not in _line(text, "| SDD    | 5 ")
    assert "SDD, n_anomaly=10, MINNS, seed 1: diverged" in text


def test_beside_the_paper_the_flagged_cell_is_marked():
    body = comparison_part(_frame(), presentation_of("q1"), "markdown").body
    assert "†" in _line(body, "| SDD    | MINNS")
    assert "† SDD, MINNS: includes flagged results: diverged (seed 1: mean loss" in body


def test_a_flagged_row_of_the_store_reaches_every_format(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        for seed, value in enumerate((0.9, 0.1, 0.9)):
            for method in ("devnet", "minns"):
                store.put(CellResult(
                    key=f"{method}-{seed}", protocol="q1", dataset="aitex", category="aitex", method=method,
                    seed=seed, setting={"n_anomaly": 10}, budget="paper", img_size=448, status="ok",
                    auc_roc=value, auc_pr=value, weights="imagenet", code_version="0.1.0",
                    flags=DIVERGED if (method, seed) == ("devnet", 1) else []))
    for fmt, mark in (("markdown", "†"), ("latex", "$^\\dagger$"), ("csv", "diverged"), ("html", "†")):
        assert main(["report", str(folder), "--format", fmt, "-o", str(tmp_path / f"r.{fmt}")]) == 0
        text = (tmp_path / f"r.{fmt}").read_text()
        assert mark in text, fmt
        if fmt != "csv":
            assert "AITEX, DevNet, seed 1: diverged" in text, fmt
