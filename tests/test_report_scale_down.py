"""Reports of small folders (one dataset, a few, one seed): statistics a table has too few datasets or
seeds for are one line saying what they need, never rows or columns of n/a; a cell of one seed reads
'0.850 (1 seed)' (CSV keeps numbers and says how many seeds); the table comes before its notes; in
HTML long lists of setting differences and the run settings fold away, and the page stays
self-contained."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from fsad_bench.cli import main
from fsad_bench.report.layouts import protocol_report, statistics_part
from fsad_bench.report.tables import build_table
from fsad_bench.store import CellResult, ResultStore
from fsad_bench.upgrade import presentation_of

METHODS = {"devnet": 0.85, "minns": 0.80, "flos": 0.78}
ONE_LINE = "p-values and rank tests need >= 6 datasets; this table has 1: run more datasets to get them"


def _folder(tmp_path, datasets=("brainmri",), seeds=(0,)):
    folder = tmp_path / "res"
    i = 0
    with ResultStore(folder) as store:
        for d in datasets:
            for m, base in METHODS.items():
                for seed in seeds:
                    i += 1
                    store.put(CellResult(
                        key=f"k{i}", protocol="q1", dataset=d, category=d, method=m, seed=seed,
                        setting={"n_anomaly": 10}, budget="quick", img_size=64, status="ok",
                        auc_roc=base - 0.01 * seed, auc_pr=base, device="cpu", weights="none",
                        code_version="0.1.0", finished_at="2026-11-29T10:00:00+00:00"))
    return folder


def _report(folder, capsys, *args) -> str:
    assert main(["report", str(folder), *args]) == 0
    return capsys.readouterr().out


def test_one_dataset_one_seed_markdown(tmp_path, capsys):
    out = _report(_folder(tmp_path), capsys)
    assert "n/a" not in out and "± 0.000" not in out
    row = next(line for line in out.splitlines() if line.startswith("| BrainMRI"))
    assert [c.strip() for c in row.strip("|").split("|")][1:] == [
        "0.780 (1 seed)", "0.800 (1 seed)", "**0.850** (1 seed)"]  # FLOS, MINNS, DevNet (bold: best)
    assert out.count(ONE_LINE) == 1  # the tests the table cannot have: one line, no p-value row
    assert "p-value (" not in out and "statistics beyond the paper" not in out  # nothing beyond the table
    assert "the seed spread (±) needs >= 2 seeds; this table has 1 per cell: run more seeds to get it" in out
    # the table first, its notes after
    lines = out.splitlines()
    first_row = next(i for i, line in enumerate(lines) if line.startswith("| Data"))
    first_note = next(i for i, line in enumerate(lines) if line.startswith("> "))
    assert first_row < first_note
    assert lines.index(f"> {ONE_LINE}") > first_row


def test_one_seed_in_latex_and_csv(tmp_path, capsys):
    folder = _folder(tmp_path)
    tex = _report(folder, capsys, "--format", "latex")
    assert "\\textbf{0.850} (1 seed)" in tex and "0.780 (1 seed)" in tex and "$\\pm$ 0.000" not in tex
    assert tex.index("\\end{table}") < tex.index(f"% {ONE_LINE}")  # notes after the table
    csv = _report(folder, capsys, "--format", "csv")
    df = pd.read_csv(io.StringIO(csv))
    assert df[["method", "mean", "std", "n_seeds"]].values.tolist() == [
        ["flos", 0.78, 0.0, 1], ["minns", 0.80, 0.0, 1], ["devnet", 0.85, 0.0, 1]]


def test_a_few_datasets_rank_but_do_not_test(tmp_path, capsys):
    out = _report(_folder(tmp_path, datasets=("aitex", "sdd", "brainmri"), seeds=(0, 1, 2)), capsys)
    assert "n/a" not in out and "(1 seed)" not in out and "**0.840** ± 0.008" in out
    assert ONE_LINE.replace("has 1", "has 3") in out
    stats = out[out.index("statistics beyond the paper"):]
    header = next(line for line in stats.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Method", "avg rank (3)", "mean AUC (3)", "dataset spread", "seed spread"]
    assert ("rank tests (Friedman, Nemenyi) need >= 6 datasets with every method; this table has 3: run more "
            "datasets with every method to get them") in stats
    assert "Friedman over" not in stats and "not computed" not in stats


def test_statistics_drop_what_they_cannot_compute():
    recs = [dict(method=m, dataset=d, category=d, seed=0, value=v - 0.01 * i)
            for i, d in enumerate(["aitex", "sdd"]) for m, v in METHODS.items()]
    table = build_table(pd.DataFrame(recs), spec=presentation_of("q1"))
    part = statistics_part(table, "markdown", None, "q1", "Q1")
    header = next(line for line in part.body.splitlines() if line.startswith("| Method"))
    assert "seed spread" not in header and "avg rank (2)" in header
    assert "the seed spread needs >= 2 seeds; this table has 1 per cell: run more seeds to get it" \
        in part.body
    one = build_table(pd.DataFrame(recs[:3]), spec=presentation_of("q1"))
    assert statistics_part(one, "markdown", None, "q1", "Q1") is None  # one dataset: nothing beyond it
    # no reference method to test against: the line names only what the table could have had
    two = build_table(pd.DataFrame(recs[:3]).assign(method=["a", "b", "c"]))
    assert two.notes[0] == "rank tests need >= 6 datasets; this table has 1: run more datasets to get them"


def test_mixed_seeds_mark_only_the_single_seed_cells():
    recs = [dict(method="devnet", dataset="aitex", category="aitex", seed=s, value=0.80 + 0.01 * s)
            for s in range(3)] + [dict(method="minns", dataset="aitex", category="aitex", seed=0, value=0.7)]
    text = protocol_report(pd.DataFrame(recs), presentation_of("q1"), "markdown", "auc_roc", [])
    row = next(line for line in text.splitlines() if line.startswith("| AITEX"))
    assert "0.700 (1 seed)" in row and "**0.810** ± 0.008" in row
    assert "± = seed spread" in text and "needs >= 2 seeds" not in text


def test_curves_of_one_seed(tmp_path):
    recs = [dict(method=m, dataset="aitex", category="aitex", seed=0, value=v, setting={"n_anomaly": n})
            for n in (5, 10) for m, v in METHODS.items()]
    text = protocol_report(pd.DataFrame(recs), presentation_of("q5"), "markdown", "auc_roc", [])
    assert "0.850 (1 seed)" in text and "± 0.000" not in text
    csv = protocol_report(pd.DataFrame(recs), presentation_of("q5"), "csv", "auc_roc", [])
    assert set(pd.read_csv(io.StringIO(csv)).n_seeds) == {1}


def test_html_folds_long_lists_and_stays_self_contained(tmp_path, capsys):
    folder = _folder(tmp_path)
    assert main(["report", str(folder), "--format", "html", "--compare-paper"]) == 0
    page = (folder / "report.html").read_text()
    assert "<script" not in page.lower() and not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "n/a" not in page.split('<details id="settings"')[0]
    # each method's settings that differ from the published ones: one fold, its summary counting them
    folds = re.findall(r'<details class="note"><summary>‡ (\w+): settings differ from those behind the '
                       r"published numbers \((\d+) differences\)</summary><ul>(.*?)</ul></details>",
                       page, re.S)
    assert sorted(m for m, _, _ in folds) == ["DevNet", "FLOS", "MINNS"]
    for _, n, items in folds:
        assert int(n) == items.count("<li>") > 5
    # the table's run settings: the first line shown, the rest folded; the table before them
    table = page.index("<table><caption>Q1")
    run = page.index('<details class="note"><summary>budget quick: devnet, flos, minns at 64 px')
    # folded: the budget's caveat and the split settings the rows ran with
    assert table < run and "(2 more)</summary>" in page[run:run + 300]
    fold = page[run:page.index("</details>", run)]
    assert "NOT comparable with the paper" in fold and "<li>settings: n_anomaly=10</li>" in fold
    assert "0.850</b> (1 seed)" in page
    assert "how to read these numbers" in page


@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_text_formats_keep_settings_differences_on_one_line(tmp_path, capsys, fmt):
    out = _report(_folder(tmp_path), capsys, "--format", fmt, "--compare-paper")
    line = next(x for x in out.splitlines() if "DevNet: settings differ from those behind the published" in x)
    assert "img_size = 64 (published: 448" in line and "<details" not in out
