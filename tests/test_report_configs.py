"""A table cell pools only rows of one resolved configuration: a folder holding rows of several
(n_anomaly, image size, hyper-parameters, budget, code version, data, detector code) gets one table per
configuration, headed by what differs, and never a mean ± 'seed spread' over different settings."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from fsad_bench.cli import main
from fsad_bench.report.configs import config_groups
from fsad_bench.store import CellResult, ResultStore

PAPER_DEVNET = {"epochs": 50, "lr": 2e-4, "weights": "imagenet"}
PAPER_MINNS = {"epochs": 50, "lr": 2e-4, "weights": "imagenet"}


def _put(store: ResultStore, method: str, values: tuple[float, ...], *, dataset: str = "aitex",
         category: str = "aitex", setting: dict | None = None, img_size: int = 448,
         params: dict | None = None,
         protocol: str = "q1", code_version: str = "0.1.0", tag: str = "") -> None:
    for seed, value in enumerate(values):
        setting_ = {"n_anomaly": 10} if setting is None else setting
        params_ = params if params is not None else (PAPER_DEVNET if method == "devnet" else PAPER_MINNS)
        store.put(CellResult(
            key=f"{protocol}-{dataset}-{category}-{method}-{seed}-{setting_}-{img_size}-{params_}-{code_version}-{tag}",
            protocol=protocol, dataset=dataset, category=category, method=method, seed=seed, setting=setting_,
            budget="paper", img_size=img_size, status="ok", auc_roc=value, auc_pr=value, device="cpu",
            weights="imagenet", params=dict(params_), code_version=code_version,
            finished_at=f"2026-11-29T10:00:0{seed}+00:00"))


def _report(folder: Path, capsys, *extra: str) -> str:
    assert main(["report", str(folder), *extra]) == 0
    return capsys.readouterr().out


def _cell(text: str, row: str, column: int) -> str:
    """The cell of a markdown table row starting with ``row`` (column 1 = the first method)."""
    line = next(x for x in text.splitlines() if x.startswith(f"| {row} "))
    return [c.strip() for c in line.strip().strip("|").split("|")][column]


def _sections(text: str) -> dict[str, str]:
    """Markdown report sections by their '## ' title."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_rows_of_two_n_anomaly_are_two_tables_not_one_pooled_cell(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        _put(store, "devnet", (0.90, 0.90, 0.90))
        _put(store, "devnet", (0.50, 0.50, 0.50), setting={"n_anomaly": 5})
        _put(store, "minns", (0.80, 0.80, 0.80))
        _put(store, "minns", (0.60, 0.60, 0.60), setting={"n_anomaly": 5})
    out = _report(folder, capsys)
    # the old report printed DevNet 0.700 ± 0.200 ('seed spread' of two settings)
    assert "0.700" not in out and "± 0.200" not in out
    sections = _sections(out)
    five = next(s for t, s in sections.items() if t.endswith("[n_anomaly=5]"))
    ten = next(s for t, s in sections.items() if t.endswith("[n_anomaly=10]"))
    assert _cell(five, "AITEX", 1) == "**0.600** ± 0.000" and _cell(five, "AITEX", 2) == "0.500 ± 0.000"
    assert "**0.900** ± 0.000" in ten and "0.800 ± 0.000" in ten
    assert "0.500" not in ten and "0.900" not in five


def test_one_method_with_two_learning_rates_gets_a_table_each_beside_the_others(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        _put(store, "devnet", (0.90, 0.91, 0.92))
        _put(store, "devnet", (0.40, 0.41, 0.42), params={**PAPER_DEVNET, "lr": 0.01})
        _put(store, "minns", (0.80, 0.80, 0.80))
    sections = _sections(_report(folder, capsys))
    titles = [t for t in sections if t.startswith("Q1") and "statistics" not in t]
    assert len(titles) == 2, titles
    assert any(t.endswith("[lr=0.0002 (DevNet)]") for t in titles)
    low = next(s for t, s in sections.items() if t.endswith("[lr=0.01 (DevNet)]"))
    high = next(s for t, s in sections.items() if t.endswith("[lr=0.0002 (DevNet)]"))
    assert _cell(low, "AITEX", 2) == "0.410 ± 0.008" and _cell(high, "AITEX", 2) == "**0.910** ± 0.008"
    # MINNS has one configuration: the same cell in both tables
    assert _cell(low, "AITEX", 1) == "**0.800** ± 0.000" and _cell(high, "AITEX", 1) == "0.800 ± 0.000"


def test_a_size_changed_for_every_method_aligns_across_methods(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        for img, shift in ((32, 0.0), (48, 0.1)):
            _put(store, "devnet", (0.70 + shift,) * 3, img_size=img)
            _put(store, "minns", (0.60 + shift,) * 3, img_size=img)
    sections = _sections(_report(folder, capsys))
    small = next(s for t, s in sections.items() if t.endswith("[img_size=32]"))
    large = next(s for t, s in sections.items() if t.endswith("[img_size=48]"))
    assert _cell(small, "AITEX", 1) == "0.600 ± 0.000" and _cell(small, "AITEX", 2) == "**0.700** ± 0.000"
    assert _cell(large, "AITEX", 1) == "0.700 ± 0.000" and _cell(large, "AITEX", 2) == "**0.800** ± 0.000"
    # no table of one method at one size only
    assert sum(t.endswith("]") and "[img_size=" in t for t in sections) == 2


def test_a_single_configuration_keeps_the_plain_title(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        _put(store, "devnet", (0.90, 0.91, 0.92))
        _put(store, "minns", (0.80, 0.80, 0.80))
    out = _report(folder, capsys)
    assert "[" not in "".join(t for t in _sections(out))
    assert _cell(out, "AITEX", 2) == "**0.910** ± 0.008"


def test_curves_vary_their_axis_but_not_the_rest(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        for n in (5, 10):
            _put(store, "devnet", (0.70 + n / 100,) * 2, protocol="q5", setting={"n_anomaly": n})
            _put(store, "devnet", (0.30 + n / 100,) * 2, protocol="q5", setting={"n_anomaly": n},
                 params={**PAPER_DEVNET, "epochs": 3})
    sections = _sections(_report(folder, capsys))
    curves = {t: s for t, s in sections.items() if t.startswith("Q5")}
    assert len(curves) == 2 and all("n_anomaly=" not in t for t in curves), list(curves)
    full = next(s for t, s in curves.items() if t.endswith("[epochs=50]"))
    short = next(s for t, s in curves.items() if t.endswith("[epochs=3]"))
    assert "0.750 ± 0.000" in full and "0.800 ± 0.000" in full and "0.350" not in full
    assert "0.350 ± 0.000" in short and "0.400 ± 0.000" in short and "0.750" not in short
    figures = sorted(p.name for p in (folder / "figures").glob("q5*.png"))
    assert len(figures) == 2  # one figure per configuration, neither overwriting the other


def test_open_set_known_classes_are_rows_not_configurations(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        for k, v in (("mono", 0.6), ("poly", 0.8)):
            _put(store, "devnet", (v,) * 2, protocol="q2", dataset="elpv", category="elpv",
                 setting={"n_anomaly": 10, "known_class": k})
    sections = _sections(_report(folder, capsys))
    tables = [t for t in sections if t.startswith("Q2") and "statistics" not in t]
    assert len(tables) == 1 and "[" not in tables[0]


def test_compare_paper_never_pools_configurations(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        _put(store, "devnet", (0.887,) * 3)                       # the paper's AITEX 0.887
        _put(store, "devnet", (0.487,) * 3, params={**PAPER_DEVNET, "lr": 0.01})
    out = _report(folder, capsys, "--compare-paper")
    rows = [x for x in out.splitlines() if x.startswith("| AITEX") and "0.887 ± 0.013" in x
            and "| Table 2 " in x]
    ours = sorted(line.split("|")[4].strip() for line in rows)
    assert ours == ["0.487 ± 0.000", "0.887 ± 0.000"]  # old: one row, 0.687 ± 0.200


def test_compare_paper_sets_ours_beside_numbers_made_with_as_many_labelled_anomalies(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        _put(store, "devnet", (0.887,) * 3)                                  # 10 labelled anomalies
        _put(store, "devnet", (0.600,) * 3, setting={"n_anomaly": 1})
        _put(store, "devnet", (0.487,) * 3, setting={"n_anomaly": 5})
    out = _report(folder, capsys, "--compare-paper")
    rows = [[c.strip() for c in x.strip("|").split("|")] for x in out.splitlines() if x.startswith("| AITEX")
            and "paper's DevNet" in x or x.startswith("| AITEX") and "| DevNet " in x]
    beside = sorted((r[2], r[3], r[4]) for r in rows if len(r) > 4)
    # 10: the DevNet paper's Table 2 and DRA's Table 1 (both 0.887 ± 0.013); 1: DRA's Table 1 only
    # (0.598 ± 0.070); 5: no published number was made with 5, so none stands beside it
    assert beside == [("DRA Table 1", "0.600 ± 0.000", "0.598 ± 0.070"),
                      ("DRA Table 1", "0.887 ± 0.000", "0.887 ± 0.013"),
                      ("Table 2", "0.887 ± 0.000", "0.887 ± 0.013")]
    assert "no published numbers of Table 2 with 1 labelled anomalies" in out
    assert "0.487" not in "".join("|".join(r) for r in rows)


def test_a_newer_code_version_is_its_own_table(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        _put(store, "devnet", (0.90,) * 3, code_version="0.1.0")
        _put(store, "devnet", (0.70,) * 3, code_version="0.2.0")
    sections = _sections(_report(folder, capsys))
    assert any(t.endswith("[code_version=0.1.0]") for t in sections)
    assert any(t.endswith("[code_version=0.2.0]") for t in sections)


def test_rows_that_differ_in_nothing_recorded_are_an_error(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        _put(store, "devnet", (0.90,) * 3, tag="a")
        _put(store, "devnet", (0.70,) * 3, tag="b")  # same configuration, other keys
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "aitex/aitex devnet seed 0" in err and len(err.strip().splitlines()) == 1


# --- the grouping itself, on frames (data fingerprints and detector identities included) ---------

def _frame(rows: list[dict]) -> pd.DataFrame:
    base = dict(protocol="q1", dataset="aitex", category="aitex", setting={"n_anomaly": 10}, budget="paper",
                img_size=64, params={"lr": 0.001}, weights="none", code_version="0.1.0", value=0.5,
                finished_at="2026-01-01")
    return pd.DataFrame([{**base, **r} for r in rows])


def test_data_fingerprints_of_a_category_split_and_align_by_first_use():
    rows = []
    for cat, prints in (("carpet", ("c1", "c2")), ("grid", ("g1", "g2")), ("wood", ("w1",))):
        for i, fp in enumerate(prints):
            for m in ("a", "b"):
                rows += [dict(dataset="mvtec", category=cat, method=m, seed=s, data_fingerprint=fp,
                              finished_at=f"2026-01-0{i + 1}") for s in (0, 1)]
    groups = config_groups(_frame(rows))
    assert len(groups) == 2  # not 2 x 2: the first and the second data of each category go together
    for g in groups:
        assert g.rows.groupby(["category"]).data_fingerprint.nunique().max() == 1
        assert set(g.rows.category) == {"carpet", "grid", "wood"}
    assert sorted(g.heading for g in groups) == ["data version 1 (mvtec/carpet, mvtec/grid)",
                                                 "data version 2 (mvtec/carpet, mvtec/grid)"]


def test_detector_identity_splits_only_the_method_whose_code_changed():
    rows = [dict(method="a", seed=s, detector_source=src, detector_version="1.0", finished_at=t)
            for s in (0, 1) for src, t in (("aaaa1111", "2026-01-01"), ("bbbb2222", "2026-01-02"))]
    rows += [dict(method="b", seed=s, detector_source="cccc", detector_version="1.0") for s in (0, 1)]
    groups = config_groups(_frame(rows))
    assert len(groups) == 2
    for g in groups:
        assert g.rows[g.rows.method == "a"].detector_source.nunique() == 1
        assert len(g.rows[g.rows.method == "b"]) == 2  # b ran once: in both tables
    assert all("detector code" in g.heading for g in groups)


def test_axis_keys_are_not_configurations():
    rows = [dict(method="a", seed=0, setting={"n_anomaly": n}, params={"lr": 0.001, "topk_ratio": k})
            for n in (5, 10) for k in (0.1, 0.2)]
    assert len(config_groups(_frame(rows), axis=("n_anomaly", "topk_ratio"))) == 1
    assert len(config_groups(_frame(rows), axis=("n_anomaly",))) == 2
    assert len(config_groups(_frame(rows))) == 4


@pytest.mark.parametrize("missing", ["setting", "params", "budget"])
def test_frames_without_configuration_columns_are_one_group(missing):
    df = _frame([dict(method="a", seed=s) for s in range(3)]).drop(columns=[missing])
    (group,) = config_groups(df)
    assert group.heading == "" and len(group.rows) == 3


def test_a_dataset_at_its_native_size_is_not_another_configuration(tmp_path, capsys):
    # Mastcam runs at its native 64 px while the budget asks for 448 (fsad_bench.input_size)
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        _put(store, "devnet", (0.90,) * 3)
        _put(store, "devnet", (0.80,) * 3, dataset="mastcam", category="mastcam", img_size=64)
        _put(store, "devnet", (0.50,) * 3, img_size=32)
        _put(store, "devnet", (0.40,) * 3, dataset="mastcam", category="mastcam", img_size=32)
    sections = _sections(_report(folder, capsys))
    tables = {t: s for t, s in sections.items() if t.startswith("Q1") and "statistics" not in t}
    assert sorted(t.rpartition("[")[2] for t in tables) == ["img_size=32]", "img_size=448]"]
    large = next(s for t, s in tables.items() if t.endswith("[img_size=448]"))
    assert _cell(large, "AITEX", 1) == "**0.900** ± 0.000"
    assert _cell(large, "Mastcam", 1) == "**0.800** ± 0.000"
    assert ("> this table: budget paper: devnet at 64 px (Mastcam: native size), weights imagenet; devnet at "
            "448 px, weights imagenet" in large)
    small = next(s for t, s in tables.items() if t.endswith("[img_size=32]"))
    assert "0.500" in _cell(small, "AITEX", 1) and "0.400" in _cell(small, "Mastcam", 1)


def test_a_native_size_alone_keeps_the_plain_title():
    rows = [dict(method="a", seed=0, dataset=d, category=d, img_size=s) for d, s in (("aitex", 448),
                                                                                   ("mastcam", 64))]
    (group,) = config_groups(_frame(rows))
    assert group.heading == "" and len(group.rows) == 2


def test_rows_of_other_data_or_detector_code_in_the_store_are_other_tables(tmp_path, capsys):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        for tag, (fingerprint, source, value) in {"a": ("d1", "s1", 0.9), "b": ("d2", "s1", 0.7),
                                                  "c": ("d2", "s2", 0.5)}.items():
            for seed in range(2):
                store.put(CellResult(
                    key=f"{tag}-{seed}", protocol="q1", dataset="aitex", category="aitex", method="devnet",
                    seed=seed, setting={"n_anomaly": 10}, budget="paper", img_size=448, status="ok",
                    auc_roc=value, auc_pr=value, weights="imagenet", params=PAPER_DEVNET,
                    code_version="0.1.0", finished_at=f"2026-11-29T10:00:0{'abc'.index(tag)}+00:00",
                    data_fingerprint=fingerprint,
                    detector_target="fsad_methods.devnet:DevNet", detector_dist="fsad-bench",
                    detector_version="0.1.0", detector_source=source))
    sections = _sections(_report(folder, capsys))
    tables = {t.rpartition(" [")[2].rstrip("]"): s for t, s in sections.items()
              if t.startswith("Q1") and "statistics" not in t}
    first, second, third = ("detector code version 1, data version 1",
                            "detector code version 1, data version 2",
                            "detector code version 2, data version 2")
    assert set(tables) == {first, second, third}
    assert "0.900" in tables[first] and "0.700" in tables[second] and "0.500" in tables[third]
    assert "aitex/aitex data version 2: fingerprint d2" in tables[third]
    assert "DevNet detector code version 2: target fsad_methods.devnet:DevNet" in tables[third]
