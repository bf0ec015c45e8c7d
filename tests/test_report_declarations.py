"""What a report shows comes from declarations, not from names built into it: a detector written
outside the package gets its declared display name as column title and ``--compare-paper`` sets it
beside the published column it declares (declarations are not inherited; a method that no longer
loads keeps its stored name); the reference of the p-value rows and per-protocol titles come from the
protocol spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsad_bench.cli import main
from fsad_bench.detectors.base import Detector, TrainSet
from fsad_bench.protocol import ProtocolSpec
from fsad_bench.report.layouts import protocol_report
from fsad_bench.report.presentation import Presentation
from fsad_bench.report.tables import build_table
from fsad_bench.store import CellResult, ResultStore
from fsad_bench.upgrade import presentation_of


class MyDet(Detector):
    """Defined here, registered nowhere: the store names it by its dotted path."""

    display_name = "MyDet"
    paper_column = "DevNet"

    def fit(self, train: TrainSet) -> MyDet:
        return self

    def score(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - never run here
        return np.zeros(len(images))


class MyDetVariant(MyDet):
    """Declares nothing: it must not be titled or compared as MyDet."""


MY_DET = f"{__name__}:MyDet"
VARIANT = f"{__name__}:MyDetVariant"
GONE = "no_longer_installed_method"
# AITEX in the paper's Table 2: DevNet 0.887 ± 0.013, MINNS 0.813 ± 0.030
VALUES = {MY_DET: (0.874, 0.887, 0.900), "minns": (0.80, 0.81, 0.82), VARIANT: (0.70, 0.70, 0.70),
          GONE: (0.60, 0.60, 0.60)}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        for method, values in VALUES.items():
            for seed, value in enumerate(values):
                store.put(CellResult(
                    key=f"{method}-{seed}", protocol="q1", dataset="aitex", category="aitex", method=method,
                    seed=seed, setting={"n_anomaly": 10}, budget="paper", img_size=448, status="ok",
                    auc_roc=value, auc_pr=value, device="cpu", weights="imagenet", code_version="0.1.0",
                    finished_at="2026-11-29T10:00:00+00:00"))
    return folder


def _report(folder: Path, capsys, *extra: str) -> str:
    assert main(["report", str(folder), *extra]) == 0
    return capsys.readouterr().out


def test_plugin_display_name_heads_its_column(results, capsys):
    out = _report(results, capsys)
    header = next(line for line in out.splitlines() if line.startswith("| Data"))
    titles = [c.strip() for c in header.strip("|").split("|")]
    # the spec's methods first (q1 lists minns), then the others sorted by stored name; the variant
    # declares no name, so it is titled by the dotted path it ran under, not as its parent; the method
    # that no longer loads keeps its stored name
    assert titles == ["Data", "MINNS", GONE, "MyDet", VARIANT]


def test_compare_paper_uses_the_declared_paper_column(results, capsys):
    out = _report(results, capsys, "--compare-paper")
    rows = [line for line in out.splitlines() if line.startswith("| AITEX") and "| Table 2 " in line]
    mine = [r for r in rows if "MyDet" in r and "Variant" not in r]
    assert len(mine) == 1 and "MyDet = paper's DevNet" in mine[0]
    cells = [c.strip() for c in mine[0].strip("|").split("|")]
    assert cells[3] == "0.887 ± 0.011" and cells[4] == "0.887 ± 0.013" and cells[5] == "+0.000"
    minns = [r for r in rows if "MINNS" in r]
    assert len(minns) == 1 and "0.813 ± 0.030" in minns[0]
    # neither the undeclared subclass nor the unloadable method is set beside any published number
    assert not any("mydetvariant" in r.lower() or GONE in r for r in rows)
    assert "2 of 2 cells agree with the published Table 2" in out


def _long(methods: dict[str, float], n_datasets: int = 6) -> pd.DataFrame:
    datasets = ["aitex", "sdd", "elpv", "optical", "mastcam", "brainmri"][:n_datasets]
    recs = [dict(method=m, dataset=d, category=d, seed=seed, value=base + 0.01 * i + 0.001 * seed,
                 setting={"n_anomaly": 10}, protocol="x")
            for m, base in methods.items() for i, d in enumerate(datasets) for seed in range(2)]
    return pd.DataFrame(recs)


def test_reference_method_comes_from_the_spec():
    df = _long({"minns": 0.8, "flos": 0.7, "devnet": 0.6})
    mine = ProtocolSpec(name="mine", split="q1", datasets=[], methods=["devnet", "flos", "minns"],
                        reference_method="minns")
    table = build_table(df, spec=Presentation(mine, presentation_of("q1").methods))
    assert table.methods == ["devnet", "flos", "minns"] and table.reference == "minns"
    row = dict(table.pvalue_rows)["p-value (6)"]
    assert row["minns"] == "-" and row["devnet"] == row["flos"] == "0.0312"  # 6 of 6 pairs one way
    assert any("signed-rank test of MINNS vs each method" in n for n in table.notes)
    none = build_table(df, spec=Presentation(mine.model_copy(update={"reference_method": None})))
    assert none.reference is None and none.pvalue_rows == []


def test_table5_titles_its_default_model_from_the_spec():
    df = _long({"devnet_rep": 0.7, "devnet": 0.8}, n_datasets=6)
    md = protocol_report(df, presentation_of("q4"), "markdown", "auc_roc", [])
    header = next(line for line in md.splitlines() if line.startswith("| Data"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Data", "Rep", "MIL-DS (DevNet)"]
    assert "p-value (6)" in md  # q4's reference_method
