"""--compare-paper: our cells beside the transcribed published numbers (results/paper)."""

from __future__ import annotations

import pandas as pd
import pytest

from fsad_bench.cli import main
from fsad_bench.report.compare import compare, load_published, our_cells
from fsad_bench.upgrade import presentation_of


def test_published_tables_are_complete():
    counts = {t: len(load_published(t)) for t in ("table2", "table3", "table4", "table5")}
    # Table 2: 24 rows x 6 methods; 3: (29 known classes + 6 means) x 5; 4: 16 x 4; 5: 23 x 6
    assert counts == {"table2": 144, "table3": 175, "table4": 64, "table5": 138}
    t2 = load_published("table2")
    row = t2[(t2.dataset == "aitex") & (t2.method == "devnet")].iloc[0]
    assert (row["mean"], row["std"], row.category) == (0.887, 0.013, "")


def _frame(values: dict[tuple[str, str, str], list[float]], setting: dict | None = None) -> pd.DataFrame:
    recs = [dict(dataset=d, category=c, method=m, seed=s, value=v, setting=setting or {}, budget="paper")
            for (d, c, m), vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(recs)


def test_compare_marks_differences_beyond_two_sd():
    df = _frame({
        ("mvtec", "carpet", "devnet"): [0.867 - 0.04, 0.867, 0.867 + 0.04],   # = paper 0.867 ± 0.040
        ("mvtec", "grid", "devnet"): [0.80, 0.80, 0.80],                    # paper 0.967 ± 0.021
        ("aitex", "aitex", "devnet"): [0.70, 0.71, 0.72],                   # paper 0.887 ± 0.013
        ("aitex", "aitex", "kdad"): [0.576, 0.576, 0.576],                  # paper 0.576 ± 0.002
        ("synthetic", "brick", "devnet"): [0.5, 0.6, 0.7],                  # not in the paper
    })
    comp = compare(df, presentation_of("q1"))
    cells = comp.cells.set_index(["dataset", "category", "method"])
    assert len(cells) == 5  # carpet, grid, MVTec mean, AITEX devnet and kdad: only what ran
    carpet = cells.loc[("mvtec", "carpet", "devnet")]
    assert carpet.ours_mean == pytest.approx(0.867) and carpet["diff"] == pytest.approx(0, abs=1e-12)
    assert not carpet.differs
    grid = cells.loc[("mvtec", "grid", "devnet")]
    assert grid["diff"] == pytest.approx(-0.167) and grid.differs  # 0.167 > 2 * 0.021
    mean = cells.loc[("mvtec", "", "devnet")]  # ours: (0.867 + 0.80) / 2 vs the paper's 0.945
    assert mean.ours_mean == pytest.approx((0.867 + 0.80) / 2) and mean.paper_mean == 0.945
    assert not cells.loc[("aitex", "", "kdad")].differs
    assert comp.agree == 2 and comp.unmatched_datasets == ["synthetic"]
    assert comp.summary().startswith("2 of 5 cells agree")


def test_open_set_cells_use_known_classes_and_their_mean():
    df = pd.concat([_frame({("elpv", "elpv", "devnet"): [0.599] * 3}, {"known_class": "mono"}),
                    _frame({("elpv", "elpv", "devnet"): [0.804] * 3}, {"known_class": "poly"})])
    ours = our_cells(df, by_known_class=True)
    assert set(ours.known_class) == {"mono", "poly", ""}
    comp = compare(df, presentation_of("q2"))
    assert len(comp.cells) == 3 and comp.agree == 3  # mono, poly and the mean 0.702 match Table 3
    assert compare(df, presentation_of("q5")) is None  # Figures 6-8: no printed numbers


def test_cli_compare_paper_from_csv(tmp_path, capsys):
    path = tmp_path / "long.csv"
    pd.DataFrame([("aitex", "", "devnet", s, v) for s, v in enumerate((0.874, 0.887, 0.9))] +
                 [("aitex", "", "minns", s, v) for s, v in enumerate((0.6, 0.6, 0.6))],
                 columns=["dataset", "category", "method", "seed", "auc_roc"]).to_csv(path, index=False)
    assert main(["report", "--from-csv", str(path), "--compare-paper"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 cells agree with the published Table 2 within 2 sd; 1 differ (marked !)" in out
    line = next(x for x in out.splitlines() if x.startswith("| AITEX") and "MINNS" in x)
    assert "0.813 ± 0.030" in line and "-0.213" in line and line.rstrip(" |").endswith("!")


def test_localisation_and_ablation_map_to_tables_4_and_5():
    df = _frame({("mvtec", "carpet", "devnet"): [0.963] * 3, ("mvtec", "carpet", "flos"): [0.9] * 3})
    # Table 4 prints no std: the sd is ours (0) floored at the rounding step
    q3 = compare(df, presentation_of("q3"))
    assert (q3.table, q3.metric) == ("table4", "pixel_auc_per_image")
    cells = q3.cells.set_index(["category", "method"])
    assert len(cells) == 4 and q3.agree == 1  # carpet and the MVTec mean row, for both methods
    assert not cells.loc[("carpet", "devnet"), "differs"] and cells.loc[("carpet", "flos"), "differs"]
    assert cells.loc[("", "devnet"), "paper_mean"] == 0.918  # Table 4's Mean row
    ablation = _frame({("aitex", "aitex", "devnet_rep"): [0.860] * 3})
    q4 = compare(ablation, presentation_of("q4"))
    assert q4.table == "table5" and q4.cells.paper_mean.tolist() == [0.860] and q4.agree == 1


# --- settings behind the published numbers --------------------------------------------------------

def _paper_settings(method: str) -> tuple[int, dict]:
    """(image size, resolved hyper-parameters) of ``method`` at q1's paper budget, as a run stores them."""
    import dataclasses
    import json

    from fsad_bench.budgets import BUDGETS
    from fsad_bench.config import resolve_method_config

    r = resolve_method_config(BUDGETS["paper"], method)
    return r.img_size, json.loads(json.dumps(dataclasses.asdict(r.config)))


def _store_paper_rows(folder, changes: dict[str, dict]) -> None:
    from fsad_bench.store import CellResult, ResultStore

    with ResultStore(folder) as store:
        for method, value in (("devnet", 0.887), ("minns", 0.813)):
            img_size, params = _paper_settings(method)
            params.update(changes.get(method, {}))
            for seed in range(3):
                store.put(CellResult(
                    key=f"{method}-{seed}", protocol="q1", dataset="aitex", category="aitex", method=method,
                    seed=seed, setting={"n_anomaly": 10}, budget="paper", img_size=img_size, status="ok",
                    auc_roc=value, auc_pr=value, weights="imagenet", params=params, code_version="0.1.0"))


def test_a_method_run_with_other_settings_is_marked_with_what_differs(tmp_path, capsys):
    folder = tmp_path / "res"
    _store_paper_rows(folder, {"minns": {"lr": 0.01}})
    assert main(["report", str(folder), "--compare-paper"]) == 0
    out = capsys.readouterr().out
    devnet = next(x for x in out.splitlines() if x.startswith("| AITEX") and "| DevNet" in x)
    minns = next(x for x in out.splitlines() if x.startswith("| AITEX") and "| MINNS" in x)
    assert "‡" not in devnet  # ran with exactly the published settings
    assert "| MINNS ‡ " in minns
    assert ("‡ MINNS: settings differ from those behind the published numbers: lr = 0.01 (published: 2e-4"
            in out)
    assert "1 of them are of methods whose settings differ from the published ones" in out


def test_paper_settings_everywhere_leave_no_mark(tmp_path, capsys):
    folder = tmp_path / "res"
    _store_paper_rows(folder, {})
    assert main(["report", str(folder), "--compare-paper", "--format", "latex"]) == 0
    out = capsys.readouterr().out
    assert "ddagger" not in out and "settings differ" not in out


def test_a_csv_records_no_settings_so_every_method_is_marked(tmp_path, capsys):
    path = tmp_path / "long.csv"
    path.write_text("dataset,category,method,seed,auc_roc\n" +
                    "".join(f"aitex,,devnet,{s},0.887\n" for s in range(3)))
    assert main(["report", "--from-csv", str(path), "--compare-paper"]) == 0
    out = capsys.readouterr().out
    assert "| DevNet ‡ " in out and "DevNet: settings differ from those behind the published numbers: its " \
        "settings are not recorded" in out
