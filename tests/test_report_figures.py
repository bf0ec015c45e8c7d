"""The report's figures: every protocol has one (Q1 included: per-dataset AUC with the seed spread),
every figure names its budget, heat maps carry a colour bar."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.text import Text
from PIL import Image

from fsad_bench.report import figures
from fsad_bench.report.document import collect_sections
from fsad_bench.report.presentation import budget_note
from fsad_bench.report.results import read_results
from fsad_bench.store import CellResult, ResultStore
from fsad_bench.upgrade import describe_old_store, presentation_of

SINGLE = ["aitex", "sdd", "elpv", "optical", "brainmri", "headct"]
METHODS = {"devnet": 0.85, "flos": 0.78, "minns": 0.75}
NOT_COMPARABLE = "budget quick: quick numbers are not comparable with the paper"


def _png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _cell(i: int, protocol: str, dataset: str, category: str, method: str, seed: int, value: float,
          setting: dict, pixel: bool = False) -> CellResult:
    metrics = {"auc_roc": value, "auc_pr": value}
    scores: dict = {}
    if pixel:  # q3: per-anomaly pixel AUCs, test scores and one example per defect class
        rng = np.random.default_rng(i)
        labels = [0] * 5 + [1] * 5
        metrics |= {"pixel_auc_per_image": value - 0.05, "pixel_auc_pooled": value - 0.1,
                    "pixel_auc_each": list(np.round(rng.uniform(0.6, 0.9, 5), 3))}
        image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 4:8] = 255
        scores = {"scores": list(np.r_[rng.uniform(0, 0.5, 5), rng.uniform(0.4, 1, 5)]), "labels": labels,
                  "examples": [{"class": "blob", "image": _png(image), "mask": _png(mask),
                                "map": _png(rng.integers(0, 255, (16, 16), dtype=np.uint8))}]}
    return CellResult(key=f"{protocol}-{i}", protocol=protocol, dataset=dataset, category=category,
                      method=method, seed=seed, setting=setting, budget="quick", img_size=32, status="ok",
                      auc_roc=value, auc_pr=value, metrics=metrics, scores=scores, device="cpu",
                      weights="none", code_version="0.1.0", finished_at="2026-11-29T10:00:00+00:00")


def _fill(folder: Path) -> None:
    """Q1 (MVTec AD's carpet and grid + six datasets), Q2's open set, Q3's localisation, Q5's curve."""
    rng = np.random.default_rng(0)
    i = 0
    with ResultStore(folder) as store:
        for method, base in METHODS.items():
            for seed in range(3):
                for dataset, category in [("mvtec", "carpet"), ("mvtec", "grid")] + [(d, d) for d in SINGLE]:
                    value = base + rng.normal(0, 0.03)
                    store.put(_cell(i := i + 1, "q1", dataset, category, method, seed, value,
                                    {"n_anomaly": 10}))
                    for n in (5, 20):
                        store.put(_cell(i := i + 1, "q5", dataset, category, method, seed, value + n / 1000,
                                        {"n_anomaly": n}))
                for known in ("color", "cut"):
                    store.put(_cell(i := i + 1, "q2", "mvtec", "carpet", method, seed, base,
                                    {"known_class": known, "n_anomaly": 10}))
                for category in ("carpet", "grid"):
                    store.put(_cell(i := i + 1, "q3", "mvtec", category, method, seed, base,
                                    {"n_anomaly": 10}, pixel=True))


@dataclass
class Made:
    folder: Path
    sections: list
    figures: dict  # stem -> the matplotlib figure the report saved under it


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """The HTML report's sections of one folder, and every figure it saved (made once per module)."""
    folder = tmp_path_factory.mktemp("figures") / "res"
    _fill(folder)
    saved: dict[str, object] = {}
    save = figures._save

    def recording_save(fig, out_dir, stem):
        saved[stem] = fig
        return save(fig, out_dir, stem)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "_save", recording_save)
        results = read_results(folder, describe_old_store(folder))
        sections, _ = collect_sections(results, "html", "auc_roc", compare_paper=False)
    return Made(folder, sections, saved)


def _text(fig) -> str:
    return re.sub(r"\s+", " ", " ".join(t.get_text() for t in fig.findobj(Text)))


def test_every_protocol_has_a_figure_and_every_figure_names_its_budget(made):
    assert [s.protocol for s in made.sections] == ["q1", "q2", "q3", "q5"]
    for s in made.sections:
        pngs = [f for p in s.parts for f in p.figures if f.suffix == ".png"]
        assert pngs and all(f.stat().st_size > 3000 for f in pngs), s.protocol
    assert {"q1_auc_roc_bars", "q1_auc_roc_cd_per_dataset", "q2_auc_roc_bars", "q3_auc_vs_f1", "q3_heatmaps",
            "q3_pixel_auc_per_image_bars", "q5"} <= set(made.figures)
    for stem, fig in made.figures.items():
        assert NOT_COMPARABLE in _text(fig), stem


def test_q1_bars_are_the_per_dataset_means_with_the_seed_spread(made):
    from fsad_bench.report.tables import build_table

    ax = made.figures["q1_auc_roc_bars"].axes[0]
    df = read_results(made.folder).rows("auc_roc")[0]
    table = build_table(df[df.protocol == "q1"], spec=presentation_of("q1"))
    groups = [t.get_text() for t in ax.get_xticklabels()]
    assert groups == ["MVTEC AD"] + ["AITEX", "SDD", "ELPV", "Optical", "BrainMRI", "HeadCT"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(containers) == len(labels) == len(METHODS)
    for bars, label in zip(containers, labels):
        method = next(m for m, name in table.names.items() if name == label)
        rows = {r.label: r for r in table.rows}
        expected = [rows[g].cells[method] for g in groups]
        assert [b.get_height() for b in bars] == pytest.approx([m for m, _ in expected])
        segments = bars.errorbar.lines[2][0].get_segments()
        assert [(s[1][1] - s[0][1]) / 2 for s in segments] == pytest.approx([s for _, s in expected])
    # MVTec AD's bar: the mean over its categories, its error bar the std over seeds of their average
    mv = df[(df.protocol == "q1") & (df.dataset == "mvtec") & (df.method == "devnet")]
    assert rows["MVTEC AD"].cells["devnet"] == pytest.approx(
        (mv.groupby("category").value.mean().mean(), mv.groupby("seed").value.mean().std(ddof=0)))


def test_heat_maps_have_a_colour_bar(made):
    fig = made.figures["q3_heatmaps"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylim() == pytest.approx((0, 1))
    assert "heat map" in bars[0].get_ylabel()


def test_budget_note():
    assert budget_note(["paper", "paper"]) == "budget paper"
    assert budget_note(["quick"]) == NOT_COMPARABLE
    assert budget_note(["smoke", "paper", "quick"]) == ("budgets paper, quick, smoke: quick, smoke numbers "
                                                        "are not comparable with the paper")
    assert budget_note([]).startswith("budget not recorded")
