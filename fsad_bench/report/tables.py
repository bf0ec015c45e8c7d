"""Tables of the paper from a results store (or a long-form CSV): mean ± std over seeds per
dataset, one column per method, best per row in bold, and the Wilcoxon p-value rows.

Rows: each category of a multi-category dataset (MVTec AD, synthetic) is a row, followed by the
dataset's average row ('MVTEC AD'); single-category datasets are one row. Average row: mean over
categories of the per-category means; its ± is the std over seeds of the per-seed category average.
All stds are population stds (ddof=0) over seeds: the seed spread, not the dataset spread.
Column order, titles and the reference of the p-value rows come from the protocol's
:class:`~fsad_bench.report.presentation.ReportSpec` (Table 2's when none is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fsad_bench.data.registry import DATASETS, MVTEC_CATEGORIES
from fsad_bench.errors import UserError
from fsad_bench.report.presentation import ReportSpec, table2_spec, weights_note
from fsad_bench.report.stats import MIN_WILCOXON, holm, paired_wilcoxon
from fsad_bench.store import STORE_NAME, ResultStore

#: image metrics are columns of the store; pixel metrics live in its metrics JSON (q3)
METRICS = ("auc_roc", "auc_pr", "pixel_auc_per_image", "pixel_auc_pooled")


#: the two ways of counting datasets in the paper's tests: p-value (9) and p-value (23)
LEVELS = {"per_dataset": "a multi-category dataset such as MVTec AD as one, the mean of its categories",
          "per_category": "each category of a multi-category dataset as a dataset"}
SEED_SPREAD_NOTE = ("± = seed spread: population std over seeds of a dataset's AUC (an average row: of its "
                    "per-seed average); the spread over datasets is reported separately")


@dataclass
class Row:
    label: str
    cells: dict[str, tuple[float, float]]  # method -> (mean, std over seeds)
    is_average: bool = False
    group: str = ""  # the dataset the row belongs to (Table 3's tier-1 set)


@dataclass
class Table:
    methods: list[str]
    rows: list[Row]
    #: method -> column title
    names: dict[str, str] = field(default_factory=dict)
    #: the method of the p-value rows' tests against every other one (None: no p-value rows)
    reference: str | None = None
    pvalue_rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: level (LEVELS) -> units x methods matrices of mean AUC and of its seed std, for the rank tests
    unit_means: dict[str, pd.DataFrame] = field(default_factory=dict)
    unit_seed_std: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: headers of a two-column first column (Table 3: tier-1 dataset, tier-2 known class)
    group_headers: tuple[str, str] | None = None


def load_long(folder: str | Path, metric: str = "auc_roc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ok results as long form dataset,category,method,seed,value; failed rows) of a results folder."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    path = Path(folder) / STORE_NAME
    if not path.is_file():
        raise UserError(f"no results store at {path}; run 'fsad-bench run --out {folder}' first")
    with ResultStore(folder) as store:
        df = store.dataframe()
    ok = df[df.status == "ok"].copy()
    if metric in ok.columns:
        ok["value"] = ok[metric]
    else:
        ok["value"] = ok.metrics.map(lambda m: m.get(metric))
        if ok.value.isna().all() and len(ok):
            raise UserError(f"no cell in {folder} has the metric {metric!r} (pixel metrics come from "
                            "the q3 protocol)")
        ok = ok[ok.value.notna()]
    return ok, df[df.status != "ok"]


def load_long_csv(path: str | Path, metric: str = "auc_roc") -> pd.DataFrame:
    """Long-form CSV with columns dataset,category,method,seed,<metric> (category may be empty)."""
    try:
        df = pd.read_csv(path, skipinitialspace=True, dtype={"category": str})
    except (OSError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    df.columns = [c.strip() for c in df.columns]
    needed = {"dataset", "category", "method", "seed", metric}
    if not needed <= set(df.columns):
        raise UserError(f"{path} lacks columns {', '.join(sorted(needed - set(df.columns)))}; "
                        f"expected dataset,category,method,seed,{metric}")
    df["category"] = df["category"].fillna("").astype(str).str.strip()
    df["dataset"] = df["dataset"].astype(str).str.strip()
    df["category"] = np.where(df["category"] == "", df["dataset"], df["category"])
    return df.rename(columns={metric: "value"})


def _order_datasets(datasets: list[str]) -> list[str]:
    known = [d for d in DATASETS if d in datasets]
    return known + sorted(d for d in datasets if d not in DATASETS)


def _cat_key(cat: str) -> tuple[int, str]:
    return (MVTEC_CATEGORIES.index(cat), cat) if cat in MVTEC_CATEGORIES else (len(MVTEC_CATEGORIES), cat)


def _display(dataset: str) -> str:
    return DATASETS[dataset].display if dataset in DATASETS else dataset


def open_set_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Table 3's rows: each tier-1 dataset (an MVTec AD category or a dataset) with its known classes
    (tier-2 sets) as rows; the tier-1 row is their mean, and p-values pair the tier-2 sets."""
    out = df.copy()
    tier1 = np.where(out.dataset.isin([d for d, i in DATASETS.items() if i.multi_category]),
                     out.category.str.title(), out.dataset.map(_display))
    out["dataset"] = tier1
    out["category"] = out.setting.map(lambda s: s.get("known_class", "?"))
    return out


def curve_frame(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per (dataset, method, x, seed): the AUC averaged over the dataset's categories."""
    out = df.copy()
    out["x"] = out.setting.map(lambda s: s.get(x))
    out["dataset"] = out.dataset.map(_display)
    return out.groupby(["dataset", "method", "x", "seed"], as_index=False).value.mean()


def build_table(df: pd.DataFrame, multi: bool = False, spec: ReportSpec | None = None) -> Table:
    """The Table-2 layout from long-form results (columns dataset, category, method, seed, value).

    ``multi=True`` treats every dataset as multi-category (its categories are rows, then its mean).
    ``spec`` orders and titles the columns and names the reference method (default: Table 2's).
    """
    if df.empty:
        raise UserError("no finished cells to report")
    spec = spec or table2_spec()
    methods = spec.order(df.method.unique())
    rows: list[Row] = []
    # level -> {(unit, method): (mean AUC, seed std)}; per_dataset: a multi-category dataset is one
    # unit (its category average), per_category: each category is a unit
    units: dict[str, dict[tuple[str, str], tuple[float, float]]] = {"per_dataset": {}, "per_category": {}}
    any_many = False
    for dataset in _order_datasets(sorted(df.dataset.unique())):
        d = df[df.dataset == dataset]
        cats = sorted(d.category.unique(), key=_cat_key)
        many = multi or (DATASETS[dataset].multi_category if dataset in DATASETS else False) or len(cats) > 1
        for cat in cats:
            c = d[d.category == cat]
            cells = {}
            for m in methods:
                v = c[c.method == m].value.to_numpy(float)
                if len(v):
                    cells[m] = (float(v.mean()), float(v.std()))
                    units["per_category"][(f"{dataset}/{cat}", m)] = cells[m]
            rows.append(Row(cat.title() if many else _display(dataset), cells, group=_display(dataset)))
        if many:
            any_many = True
            cells = {}
            for m in methods:
                dm = d[d.method == m]
                if dm.empty:
                    continue
                cat_means = dm.groupby("category").value.mean()
                per_seed = dm.groupby("seed").value.mean()
                cells[m] = (float(cat_means.mean()), float(per_seed.std(ddof=0)))
                units["per_dataset"][(dataset, m)] = cells[m]
            rows.append(Row(_display(dataset), cells, is_average=True, group=_display(dataset)))
        else:
            for m in methods:
                if (f"{dataset}/{cats[0]}", m) in units["per_category"]:
                    units["per_dataset"][(dataset, m)] = units["per_category"][(f"{dataset}/{cats[0]}", m)]
    table = Table(methods, rows, spec.names(methods), spec.reference_in(methods))
    for level, values in units.items():
        if values:
            frame = pd.Series(values).apply(pd.Series)
            table.unit_means[level] = frame[0].unstack().reindex(columns=methods)
            table.unit_seed_std[level] = frame[1].unstack().reindex(columns=methods)
    if not any_many:
        table.unit_means.pop("per_category", None)  # no multi-category dataset: the levels coincide
        table.unit_seed_std.pop("per_category", None)
    if table.reference is not None:
        for matrix in table.unit_means.values():
            _add_pvalue_rows(table, matrix)
        table.notes.append(f"p-value: paired two-sided Wilcoxon signed-rank test of "
                           f"{table.names[table.reference]} vs each method "
                           "over per-dataset mean AUCs (the paper's test); (N) = number of datasets paired; "
                           "Holm p: the same p-values Holm-corrected for the family of comparisons in its "
                           f"row; n/a below {MIN_WILCOXON} datasets, where no p-value can reach 0.05.")
    table.notes.append(SEED_SPREAD_NOTE)
    return table


def _add_pvalue_rows(table: Table, matrix: pd.DataFrame) -> None:
    """'p-value (N)' (raw, as the paper) and 'Holm p (N)' rows of the reference vs each other method."""
    ref = table.reference
    tests = {}
    for m in table.methods:
        if m != ref:
            pair = matrix[[ref, m]].dropna()
            tests[m] = paired_wilcoxon(pair[ref].to_numpy(), pair[m].to_numpy())
    n = max(t.n for t in tests.values())
    reasons = sorted({t.reason for t in tests.values() if t.p_value is None})
    if reasons:
        table.notes.append(f"p-value ({n}) n/a: {'; '.join(reasons)}")

    def fmt(p: float | None) -> str:
        return f"{p:.4f}" if p is not None else "n/a"

    table.pvalue_rows.append((f"p-value ({n})", {ref: "-"} | {
        m: fmt(t.p_value) for m, t in tests.items()}))
    if any(t.p_value is not None for t in tests.values()):
        adjusted = holm({m: t.p_value for m, t in tests.items()})
        table.pvalue_rows.append((f"Holm p ({n})", {ref: "-"} | {
            m: fmt(adjusted[m]) for m in tests}))


def run_header(df: pd.DataFrame, spec: ReportSpec | None = None) -> list[str]:
    """Lines that say how the numbers were made (budget, image size, weights, seeds, and what the
    detectors note about the weights they ran with)."""
    if "budget" not in df.columns or df.empty:
        return []
    spec = spec or table2_spec()
    lines = []
    for budget, g in df.groupby("budget"):
        parts = []
        for (img, weights), gg in g.groupby(["img_size", "weights"], dropna=False):
            parts.append(f"{', '.join(sorted(gg.method.unique()))} at {int(img)} px, weights "
                         f"{weights or 'n/a'}")
        lines.append(f"budget {budget}: {'; '.join(parts)}; seeds {sorted(g.seed.unique().tolist())}")
        for method, weights in sorted({(m, w) for m, w in zip(g.method, g.weights) if isinstance(w, str)}):
            note = weights_note(method, weights)
            if note:
                lines.append(f"{spec.name(method)} with weights {weights}: {note}")
        if budget != "paper":
            lines.append(f"budget {budget} is CPU-sized (smaller images, backbones and step counts; random "
                         "init unless ImageNet weights are named): NOT comparable with the paper's numbers")
    return lines


