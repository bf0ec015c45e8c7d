"""Per-cell exports: ``report DIR --format csv --long`` (one row per ok cell, read back by
``--from-csv`` into the same tables as the folder report) and ``--format parquet``."""

from __future__ import annotations

import json
import re
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsad_bench.cli import main
from fsad_bench.store import CellResult, ResultStore

SINGLE = ["aitex", "sdd", "elpv", "optical", "mastcam", "brainmri"]
MVTEC_CATEGORIES = ["carpet", "grid"]
METHODS = {"devnet": 0.85, "minns": 0.80, "kdad": 0.70}


def _put(store: ResultStore, i: int, protocol: str, dataset: str, category: str, method: str, seed: int,
         value: float | None, setting: dict, status: str = "ok", params: dict | None = None, **kw) -> None:
    store.put(CellResult(
        key=f"{protocol}-{i}", protocol=protocol, dataset=dataset, category=category, method=method,
        seed=seed, setting=setting, budget="quick", img_size=64 if method != "kdad" else 32, status=status,
        auc_roc=value, auc_pr=None if value is None else value - 0.1, device="cpu", weights="none",
        params=params or {"lr": 2e-4, "epochs": 2}, info={"weights": "none"},
        metrics={} if value is None else {"auc_roc": value, "auc_pr": value - 0.1}, code_version="0.1.0",
        wall_s=1.25,
        finished_at="2026-11-29T10:00:00+00:00", **kw))


def _fill(store: ResultStore, protocol: str, settings: list[dict], start: int = 0) -> int:
    """Cells on MVTec AD (two categories) and six single-category datasets, 3 methods x 3 seeds;
    values with many digits, so a rounding in the export would change the tables."""
    rng = np.random.default_rng(start)
    i = start
    for dataset, categories in [("mvtec", MVTEC_CATEGORIES)] + [(d, [d]) for d in SINGLE]:
        for category in categories:
            for method, base in METHODS.items():
                for seed in range(3):
                    for setting in settings:
                        value = base + 0.001 * setting.get("n_anomaly", 0) + rng.normal(0, 0.03)
                        _put(store, i := i + 1, protocol, dataset, category, method, seed, value, setting)
    return i


@pytest.fixture
def q1_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "q1"
    with ResultStore(folder) as store:
        i = _fill(store, "q1", [{"n_anomaly": 10}])
        _put(store, i + 1, "q1", "aitex", "aitex", "devnet", 3, None, {"n_anomaly": 10}, status="failed",
             error="RuntimeError: boom")
    return folder


def _first_table(text: str) -> list[str]:
    """The rows of the first Markdown table and the note lines after it, without the line naming the
    source."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("|")
               and (i + 1 == len(lines) or not lines[i + 1].startswith("|")))
    notes = end + 2 if end + 1 < len(lines) and not lines[end + 1] else end + 1
    while notes < len(lines) and lines[notes].startswith("> "):
        notes += 1
    return [line for line in lines[start:notes] if "source:" not in line]


def _first_latex_table(text: str) -> str:
    return re.search(r"\\begin\{table\}.*?\\end\{table\}", text, re.S).group(0)


def test_long_csv_is_one_row_per_ok_cell_with_the_stores_values(q1_folder, tmp_path, capsys):
    out = tmp_path / "long.csv"
    assert main(["report", str(q1_folder), "--format", "csv", "--long", "-o", str(out)]) == 0
    assert "1 failed or not applicable cell(s) left out" in capsys.readouterr().err
    frame = pd.read_csv(out)
    assert list(frame.columns[:7]) == ["protocol", "dataset", "category", "method", "seed", "auc_roc",
                                       "auc_pr"]
    n_ok = (2 + len(SINGLE)) * len(METHODS) * 3
    assert len(frame) == n_ok and frame.key.is_unique and (frame.protocol == "q1").all()
    assert (frame["setting.n_anomaly"] == 10).all()
    assert {"budget", "img_size", "weights", "params", "code_version", "wall_s"} <= set(frame.columns)
    assert not {"status", "error", "scores", "manifest"} & set(frame.columns)
    with ResultStore(q1_folder) as store:
        stored = store.dataframe().set_index("key")
    merged = frame.merge(stored, on="key", suffixes=("", "_store"))
    assert len(merged) == len(frame)
    assert (merged.auc_roc == merged.auc_roc_store).all()  # exact: no digit lost in the CSV
    assert (merged.auc_pr == merged.auc_pr_store).all()
    assert json.loads(frame.params[0]) == {"epochs": 2, "lr": 2e-4}
    assert frame[frame.method == "kdad"].img_size.eq(32).all()


@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_long_csv_reads_back_into_the_same_table_2(q1_folder, tmp_path, capsys, fmt):
    out = tmp_path / "long.csv"
    assert main(["report", str(q1_folder), "--format", "csv", "--long", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", str(q1_folder), "--format", fmt]) == 0
    from_folder = capsys.readouterr().out
    assert main(["report", "--from-csv", str(out), "--format", fmt]) == 0
    from_csv = capsys.readouterr().out
    if fmt == "markdown":
        table = _first_table(from_folder)
        assert any("MVTEC AD" in line for line in table) and any("p-value" in line for line in table)
        assert any("budget quick" in line for line in table)  # the run header comes back too
        assert _first_table(from_csv) == table
    else:
        table = _first_latex_table(from_folder)
        assert "\\caption{Q1" in table and "not comparable with the paper" in table
        assert _first_latex_table(from_csv) == table


def test_long_csv_of_a_curve_protocol_reads_back_into_the_same_curves(tmp_path, capsys):
    folder = tmp_path / "q5"
    with ResultStore(folder) as store:
        _fill(store, "q5", [{"n_anomaly": n} for n in (5, 10, 20)])
    out = tmp_path / "q5.csv"
    assert main(["report", str(folder), "--format", "csv", "--long", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", str(folder)]) == 0
    from_folder = capsys.readouterr().out
    assert main(["report", "--from-csv", str(out)]) == 0
    table = _first_table(from_folder)
    assert len([line for line in table if line.startswith("| ")]) == 1 + 7 * 3  # header + datasets x n
    assert _first_table(capsys.readouterr().out) == table


def _grids(text: str) -> list[list[str]]:
    """Every Markdown grid of a text (runs of '|' lines)."""
    grids, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            grids, current = grids + [current], []
    return grids


def test_long_csv_keeps_configurations_apart_as_the_folder_report(q1_folder, tmp_path, capsys):
    with ResultStore(q1_folder) as store:  # DevNet again at another learning rate on two datasets
        for i, dataset in enumerate(("aitex", "sdd")):
            for seed in range(3):
                _put(store, 20_000 + 3 * i + seed, "q1", dataset, dataset, "devnet", seed, 0.6 + seed / 100,
                     {"n_anomaly": 10}, params={"lr": 1e-2, "epochs": 2})
    out = tmp_path / "long.csv"
    assert main(["report", str(q1_folder), "--format", "csv", "--long", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", str(q1_folder), "--compare-paper"]) == 0
    from_folder = capsys.readouterr().out
    assert main(["report", "--from-csv", str(out), "--compare-paper"]) == 0
    from_csv = capsys.readouterr().out
    assert "configuration 2 of 2" in from_folder and "lr=0.01 (DevNet)" in from_folder
    tables = [g for g in _grids(from_csv) if g[0].startswith("| Data ") and "Method" not in g[0]]
    assert len(tables) == 2 and tables[0] != tables[1]  # one table per learning rate, never pooled
    assert all(t in _grids(from_folder) for t in tables)
    # ours beside the paper, per configuration, with the settings read back from the CSV's params
    compared = from_folder[from_folder.index("> configuration: "):from_folder.index("1 failed cell(s)")]
    assert from_csv[from_csv.index("> configuration: "):].strip() == compared.strip()


def test_from_csv_refuses_cells_of_several_protocols(q1_folder, tmp_path, capsys):
    with ResultStore(q1_folder) as store:  # Q5 cells beside Q1's: other n_anomaly, same datasets
        _fill(store, "q5", [{"n_anomaly": 5}], start=10_000)
    out = tmp_path / "mixed.csv"
    assert main(["report", str(q1_folder), "--format", "csv", "--long", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", "--from-csv", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "protocols q1, q5" in err and str(out) in err


def test_parquet_round_trips_with_pandas(q1_folder, tmp_path, capsys):
    from fsad_bench.report.export import long_frame
    from fsad_bench.report.results import read_results

    assert main(["report", str(q1_folder), "--format", "parquet"]) == 0  # default: DIR/cells.parquet
    assert "written to" in capsys.readouterr().err
    parquet = pd.read_parquet(q1_folder / "cells.parquet")
    expected, left_out = long_frame(read_results(q1_folder))
    assert left_out == 1 and len(parquet) == len(expected) == (2 + len(SINGLE)) * len(METHODS) * 3
    assert list(parquet.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(parquet, expected, check_dtype=False)  # values exact, "" stays ""
    assert parquet.seed.dtype.kind == "i" and parquet["setting.n_anomaly"].dtype.kind == "i"
    assert parquet.auc_roc.dtype.kind == "f"
    # the same cells as the long CSV
    csv = tmp_path / "long.csv"
    assert main(["report", str(q1_folder), "--format", "csv", "--long", "-o", str(csv)]) == 0
    assert (pd.read_csv(csv).auc_roc.to_numpy() == parquet.auc_roc.to_numpy()).all()


def test_parquet_without_pyarrow_is_one_line_naming_the_extra(q1_folder, tmp_path, capsys, monkeypatch):
    from fsad_bench.report import export

    # pyarrow not installed, as the export sees it (pandas itself uses pyarrow for strings when present)
    monkeypatch.setattr(export, "find_spec", lambda name: None if name == "pyarrow" else find_spec(name))
    out = tmp_path / "cells.parquet"
    assert main(["report", str(q1_folder), "--format", "parquet", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'fsad-bench[parquet]'" in err
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--format", "markdown", "--long"], "--long is for --format csv"),
    (["--from-csv", "x.csv", "--format", "parquet"], "export a results folder"),
])
def test_export_options_misused_are_one_line_exit_2(q1_folder, capsys, argv, needle):
    args = ["report"] + ([] if "--from-csv" in argv else [str(q1_folder)]) + argv
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
