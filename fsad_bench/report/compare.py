"""Ours beside the paper: each of our table cells next to the published one (results/paper/*.csv).

A cell is (dataset, category, known class, method); category is empty for a dataset-level row (a
single-category dataset, or a multi-category dataset's average), known class only in Table 3.
A method is compared with the published column its detector declares (``Detector.paper_column``);
methods that declare none, or no longer load, are not compared.
The difference is flagged when it exceeds two standard deviations of the difference of the two
estimates, sqrt(std_ours^2 + std_paper^2), floored at half the published rounding step (0.0005)
so that two identical seed-free numbers are not 'different' by rounding alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from fsad_bench.data.registry import DATASETS
from fsad_bench.errors import UserError
from fsad_bench.report.presentation import paper_column

#: protocol -> (published table, the metric that table reports)
PAPER_TABLES = {"q1": ("table2", "auc_roc"), "q2": ("table3", "auc_roc"),
                "q3": ("table4", "pixel_auc_per_image"), "q4": ("table5", "auc_roc")}
KEYS = ["dataset", "category", "known_class", "method"]
#: how our cells meet the published ones: the same row, and the column our method declares
PAPER_KEYS = ["dataset", "category", "known_class", "paper_column"]
ROUNDING_FLOOR = 0.0005
N_SD = 2.0


def load_published(table: str) -> pd.DataFrame:
    """The transcribed numbers of one of the paper's tables (columns source, dataset, category,
    known_class, method, column, metric, mean, std; ``column`` is the paper's column title)."""
    res = resources.files("fsad_bench.published") / f"{table}.csv"
    if not res.is_file():
        raise UserError(f"no published numbers {table}.csv in results/paper; reinstall fsad-bench")
    with res.open() as fh:
        df = pd.read_csv(fh, dtype={"category": str, "known_class": str})
    for col in ("category", "known_class"):
        df[col] = df[col].fillna("").astype(str)
    return df


def _multi(dataset: str) -> bool:
    return DATASETS[dataset].multi_category if dataset in DATASETS else False


def our_cells(df: pd.DataFrame, by_known_class: bool = False) -> pd.DataFrame:
    """Mean and seed std of our long-form results at the paper's granularity, plus the average rows
    one level up (a multi-category dataset's mean; Table 3: a dataset's mean over known classes).
    The ± of an average row is the std over seeds of the per-seed average, as in our tables."""
    df = df.copy()
    df["known_class"] = df.setting.map(lambda s: str(s.get("known_class", ""))) if by_known_class else ""
    df["category"] = [c if _multi(d) else "" for d, c in zip(df.dataset, df.category)]
    recs = []
    for key, g in df.groupby(KEYS):
        recs.append(dict(zip(KEYS, key), mean=g.value.mean(), std=g.value.std(ddof=0)))
    up = ["dataset", "category", "method"] if by_known_class else ["dataset", "method"]
    inner = "known_class" if by_known_class else "category"
    for key, g in df.groupby(up):
        if g[inner].nunique() < 2 and not (not by_known_class and _multi(key[0])):
            continue
        per_seed = g.groupby("seed").value.mean()
        rec = dict(zip(up, key), mean=g.groupby(inner).value.mean().mean(), std=per_seed.std(ddof=0))
        recs.append({"category": "", "known_class": "", **rec})
    return pd.DataFrame(recs, columns=KEYS + ["mean", "std"])


@dataclass
class Comparison:
    table: str                 # the paper's table, e.g. "table2"
    metric: str
    cells: pd.DataFrame        # KEYS + paper_column, ours_mean, ours_std, paper_mean, paper_std, diff, sd,
                               # differs
    unmatched_datasets: list[str]

    @property
    def agree(self) -> int:
        return int((~self.cells.differs).sum())

    def summary(self) -> str:
        n = len(self.cells)
        if not n:
            return (f"no published {self.table} numbers for the datasets and methods run "
                    f"({', '.join(self.unmatched_datasets) or 'none'}): nothing to compare")
        return (f"{self.agree} of {n} cells agree with the paper's {self.table} within {N_SD:g} sd; "
                f"{n - self.agree} differ (marked !)")


def compare(df: pd.DataFrame, protocol: str) -> Comparison | None:
    """Our cells of one protocol beside the paper's; None when the paper prints no table for it."""
    if protocol not in PAPER_TABLES:
        return None
    table, metric = PAPER_TABLES[protocol]
    paper = load_published(table)
    paper = paper[paper.metric == metric]
    ours = our_cells(df, by_known_class=(table == "table3"))
    ours["paper_column"] = ours.method.map(paper_column)
    paper = paper.rename(columns={"column": "paper_column"})
    cells = ours.dropna(subset=["paper_column"]).merge(paper[PAPER_KEYS + ["mean", "std"]], on=PAPER_KEYS,
                                                       suffixes=("_ours", "_paper"))
    cells = cells.rename(columns={"mean_ours": "ours_mean", "std_ours": "ours_std",
                                  "mean_paper": "paper_mean", "std_paper": "paper_std"})
    cells["diff"] = cells.ours_mean - cells.paper_mean
    cells["sd"] = np.maximum(np.sqrt(cells.ours_std**2 + cells.paper_std.fillna(0) ** 2), ROUNDING_FLOOR)
    cells["differs"] = cells["diff"].abs() > N_SD * cells.sd
    unmatched = sorted(set(df.dataset) - set(cells.dataset))
    return Comparison(table, metric, cells, unmatched)


def _label(dataset: str, category: str, known_class: str, table: str) -> str:
    parts = [DATASETS[dataset].display if dataset in DATASETS else dataset]
    if category:
        parts.append(category.replace("_", " ").title())
    if known_class:
        parts.append(known_class)
    average = (table == "table3" and not known_class) or (table != "table3" and _multi(dataset)
                                                          and not category)
    return " / ".join(parts) + (" mean" if average else "")


def comparison_rows(comp: Comparison, display: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (Data, Method, ours, paper, diff, mark) in the paper's row order. Method is
    ``display``'s title, followed by the published column it is compared with where the title does
    not already name it."""
    order = {d: i for i, d in enumerate(DATASETS)}
    cells = comp.cells.assign(_o=comp.cells.dataset.map(order).fillna(len(order)),
                              _avg=(comp.cells.category == "") & (comp.cells.known_class == ""))
    cells = cells.sort_values(["_o", "dataset", "_avg", "category", "known_class", "method"])
    body = []
    for r in cells.itertuples():
        paper = f"{r.paper_mean:.3f}" + ("" if np.isnan(r.paper_std) else f" ± {r.paper_std:.3f}")
        body.append([_label(r.dataset, r.category, r.known_class, comp.table),
                     _method_label(display.get(r.method, r.method), r.paper_column),
                     f"{r.ours_mean:.3f} ± {r.ours_std:.3f}", paper,
                     f"{r.diff:+.3f}",
                     "!" if r.differs else ""])
    return ["Data", "Method", "ours", "paper", "diff", f"> {N_SD:g} sd"], body


def _method_label(name: str, column: str) -> str:
    return name if column in name else f"{name} = paper's {column}"
