"""``report --from-csv`` refuses what would give a wrong table (a cell twice, an AUC outside [0, 1], a
seed or AUC that is no number) with one line naming the file and line, and says when a missing (NaN)
AUC takes a dataset out of a test instead of dropping it silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsad_bench.cli import main

HEADER = "dataset,category,method,seed,auc_roc\n"
DATASETS = ("aitex", "sdd", "elpv", "optical", "brainmri", "headct", "hyperkvasir")


def _good_rows() -> list[str]:
    return [f"{d},,{m},{s},{0.9 - 0.01 * i if m == 'devnet' else 0.7 + 0.01 * s:.3f}"
            for i, d in enumerate(DATASETS) for m in ("devnet", "minns") for s in range(3)]


def _write(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "long.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def _refused(path: Path, capsys) -> str:
    assert main(["report", "--from-csv", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no table printed from bad input
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(path) in lines[0]
    return lines[0]


def test_good_input_reports(tmp_path, capsys):
    assert main(["report", "--from-csv", str(_write(tmp_path, _good_rows()))]) == 0
    assert "| AITEX " in capsys.readouterr().out


def test_a_cell_given_twice_is_refused(tmp_path, capsys):
    rows = _good_rows()
    rows.append("aitex,aitex,minns,1,0.5")  # = 'aitex,,minns,1': category empty means the dataset
    err = _refused(_write(tmp_path, rows), capsys)
    assert "aitex/aitex minns seed 1 appears 2 times" in err and "lines 6, 44" in err


@pytest.mark.parametrize("value, what", [("1.2", "outside [0, 1]"), ("-0.1", "outside [0, 1]"),
                                         ("inf", "outside [0, 1]"), ("0,8", "not a number"),
                                         ("high", "not a number")])
def test_a_bad_auc_is_refused(tmp_path, capsys, value, what):
    rows = _good_rows()
    rows[4] = f'aitex,,minns,1,"{value}"' if "," in value else f"aitex,,minns,1,{value}"
    err = _refused(_write(tmp_path, rows), capsys)
    assert "line 6" in err and f"auc_roc {value!r} is {what}" in err


@pytest.mark.parametrize("seed", ["one", "1.5", ""])
def test_a_bad_seed_is_refused(tmp_path, capsys, seed):
    rows = _good_rows()
    rows[2] = f"aitex,,devnet,{seed},0.9"
    err = _refused(_write(tmp_path, rows), capsys)
    assert f"line 4: seed {seed!r} is not an integer" in err


def test_an_empty_dataset_or_method_is_refused(tmp_path, capsys):
    rows = _good_rows()
    rows[0] = ",,devnet,0,0.9"
    assert "line 2: empty dataset" in _refused(_write(tmp_path, rows), capsys)


def test_a_missing_auc_says_which_dataset_leaves_which_test(tmp_path, capsys):
    rows = _good_rows()
    rows[rows.index("sdd,,minns,1,0.710")] = "sdd,,minns,1,"  # one seed without a number
    assert main(["report", "--from-csv", str(_write(tmp_path, rows))]) == 0
    out = capsys.readouterr().out
    sdd = next(line for line in out.splitlines() if line.startswith("| SDD "))
    assert "| NaN " in sdd  # not the mean of the two seeds left, 0.705
    assert "0.705" not in out
    assert "left out: SDD (NaN AUC of MINNS)" in out  # the Wilcoxon test pairs 6 of 7 datasets
    assert "p-value (6)" in out


@pytest.mark.parametrize("value", ["NaN", "nan", "NAN", "-nan"])
def test_a_literal_nan_is_refused_an_empty_field_is_the_missing_value(tmp_path, capsys, value):
    rows = _good_rows()
    rows[4] = f"aitex,,minns,1,{value}"
    err = _refused(_write(tmp_path, rows), capsys)
    assert f"line 6: auc_roc {value!r} is not a number: leave the field empty if the value is missing" in err


@pytest.mark.parametrize("text, needle", [
    ("", "is empty: expected a header line dataset,category,method,seed"),
                                          ("\n\n", "is empty: expected a header line"),
                                          (HEADER, "has a header but no rows")])
def test_an_empty_file_is_refused(tmp_path, capsys, text, needle):
    path = tmp_path / "long.csv"
    path.write_text(text)
    assert needle in _refused(path, capsys)


def test_a_folder_and_a_csv_together_are_refused(tmp_path, capsys):
    path = _write(tmp_path, _good_rows())
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["report", str(folder), "--from-csv", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "not both" in captured.err and "give one of them" in captured.err and str(folder) in captured.err
    assert list(folder.iterdir()) == []
