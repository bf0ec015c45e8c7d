"""Tables of the paper from a results store (or a long-form CSV): mean ± std over seeds per
dataset, one column per method, best per row in bold, and the Wilcoxon p-value rows.

Rows: each category of a multi-category dataset (MVTec AD, synthetic) is a row, followed by the
dataset's average row ('MVTEC AD'); single-category datasets are one row. Average row: mean over
categories of the per-category means; its ± is the std over seeds of the per-seed category average.
All stds are population stds (ddof=0) over seeds: the seed spread, not the dataset spread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from fsad_bench.data.registry import DATASETS, MVTEC_CATEGORIES
from fsad_bench.errors import UserError
from fsad_bench.stats import paired_wilcoxon
from fsad_bench.store import STORE_NAME, ResultStore

METHOD_ORDER = ["kdad", "dsvdd", "deepsad", "flos", "minns", "devnet"]
METHOD_DISPLAY = {"kdad": "KDAD", "dsvdd": "DSVDD", "deepsad": "DeepSAD", "flos": "FLOS",
                  "minns": "MINNS", "devnet": "DevNet", "devnet_rep": "Rep", "devnet_ds": "DS",
                  "devnet_patchds": "Patch-DS", "devnet_alexnet": "AlexNet+DS",
                  "devnet_resnet50": "ResNet-50+DS"}
ABLATION_ORDER = ["devnet_rep", "devnet_ds", "devnet_patchds", "devnet", "devnet_alexnet", "devnet_resnet50"]
REFERENCE_METHOD = "devnet"
#: MVTec AD's texture categories (the rest are objects) and the embedded textures (Table 4's groups)
TEXTURES = {"carpet", "grid", "leather", "tile", "wood", "brick", "grass", "gravel"}
#: image metrics are columns of the store; pixel metrics live in its metrics JSON (q3)
METRICS = ("auc_roc", "auc_pr", "pixel_auc_per_image", "pixel_auc_pooled")


@dataclass
class Row:
    label: str
    cells: dict[str, tuple[float, float]]  # method -> (mean, std)
    is_average: bool = False


@dataclass
class Table:
    methods: list[str]
    rows: list[Row]
    pvalue_rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _order_methods(methods: list[str]) -> list[str]:
    if set(methods) - {REFERENCE_METHOD} <= set(ABLATION_ORDER) and len(methods) > 1:
        return [m for m in ABLATION_ORDER if m in methods]
    known = [m for m in METHOD_ORDER if m in methods and m != REFERENCE_METHOD]
    others = sorted(m for m in methods if m not in METHOD_ORDER)
    return known + others + ([REFERENCE_METHOD] if REFERENCE_METHOD in methods else [])


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


CURVE_X = {"q5": "n_anomaly", "q6": "contamination", "ksweep": "topk_ratio"}


def curve_text(frame: pd.DataFrame, x: str, fmt: str) -> str:
    """Rows dataset x setting value, one column per method: mean ± std over seeds."""
    methods = _order_methods(sorted(frame.method.unique()))
    body = []
    for (dataset, xv), g in frame.groupby(["dataset", "x"]):
        row = [dataset, f"{xv:g}"]
        for m in methods:
            v = g[g.method == m].value
            row.append(f"{v.mean():.3f} ± {v.std(ddof=0):.3f}" if len(v) else "-")
        body.append(row)
    headers = ["Data", x] + [METHOD_DISPLAY.get(m, m) for m in methods]
    if fmt == "csv":
        recs = [{"dataset": d, x: xv, "method": m, "mean": g.value.mean(), "std": g.value.std(ddof=0)}
                for (d, xv, m), g in frame.groupby(["dataset", "x", "method"])]
        return pd.DataFrame(recs).to_csv(index=False)
    if fmt == "latex":
        return _latex(headers, body, [], f"AUC-ROC w.r.t. {x} (mean ± std over seeds)")
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True) + "\n"


def build_table(df: pd.DataFrame, multi: bool = False) -> Table:
    """The Table-2 layout from long-form results (columns dataset, category, method, seed, value).

    ``multi=True`` treats every dataset as multi-category (its categories are rows, then its mean).
    """
    if df.empty:
        raise UserError("no finished cells to report")
    methods = _order_methods(sorted(df.method.unique()))
    rows: list[Row] = []
    # (unit, method) -> mean AUC; per9: multi-category datasets as one unit, per23: each category
    per9: dict[tuple[str, str], float] = {}
    per23: dict[tuple[str, str], float] = {}
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
                    per23[(f"{dataset}/{cat}", m)] = cells[m][0]
            rows.append(Row(cat.title() if many else _display(dataset), cells))
        if many:
            cells = {}
            for m in methods:
                dm = d[d.method == m]
                if dm.empty:
                    continue
                cat_means = dm.groupby("category").value.mean()
                per_seed = dm.groupby("seed").value.mean()
                cells[m] = (float(cat_means.mean()), float(per_seed.std(ddof=0)))
                per9[(dataset, m)] = cells[m][0]
            rows.append(Row(_display(dataset), cells, is_average=True))
        else:
            for m in methods:
                if (f"{dataset}/{cats[0]}", m) in per23:
                    per9[(dataset, m)] = per23[(f"{dataset}/{cats[0]}", m)]
    table = Table(methods, rows)
    if REFERENCE_METHOD in methods:
        for units in (per9, per23):
            label_n, ps = None, {}
            for m in methods:
                if m == REFERENCE_METHOD:
                    ps[m] = "-"
                    continue
                keys = sorted({u for (u, mm) in units if mm == m} & {u for (u, mm) in units
                                                                     if mm == REFERENCE_METHOD})
                test = paired_wilcoxon(np.array([units[(u, REFERENCE_METHOD)] for u in keys]),
                                       np.array([units[(u, m)] for u in keys]))
                label_n = test.n if label_n is None else max(label_n, test.n)
                ps[m] = f"{test.p_value:.4f}" if test.p_value is not None else f"n/a ({test.reason})"
            if len(methods) > 1:
                table.pvalue_rows.append((f"p-value ({label_n})", ps))
        table.notes.append("p-value: paired two-sided Wilcoxon signed-rank test of DevNet vs each method "
                           "over per-dataset mean AUCs; (N) = number of datasets paired.")
    table.notes.append("mean ± std over seeds (population std: the seed spread, not the dataset spread).")
    return table


def _best(row: Row) -> set[str]:
    if not row.cells:
        return set()
    top = max(round(v[0], 3) for v in row.cells.values())
    return {m for m, v in row.cells.items() if round(v[0], 3) == top}


def render(table: Table, fmt: str, header_lines: list[str] | None = None, caption: str = "",
           display: dict[str, str] | None = None) -> str:
    header_lines = header_lines or []
    names = [{**METHOD_DISPLAY, **(display or {})}.get(m, m) for m in table.methods]
    if fmt == "csv":
        out = io.StringIO()
        recs = [{"row": r.label, "average_row": r.is_average, "method": m, "mean": v[0], "std": v[1]}
                for r in table.rows for m, v in r.cells.items()]
        recs += [{"row": label, "average_row": False, "method": m, "p_value": p}
                 for label, ps in table.pvalue_rows for m, p in ps.items() if m != REFERENCE_METHOD]
        pd.DataFrame(recs).to_csv(out, index=False)
        return out.getvalue()
    latex = fmt == "latex"
    body = []
    for r in table.rows:
        best = _best(r)
        line = [f"\\textbf{{{r.label}}}" if latex and r.is_average else (f"**{r.label}**" if r.is_average
                                                                          else r.label)]
        for m in table.methods:
            if m not in r.cells:
                line.append("-")
                continue
            mean, std = r.cells[m]
            if latex:
                txt = f"\\textbf{{{mean:.3f}}}" if m in best else f"{mean:.3f}"
                line.append(f"{txt} $\\pm$ {std:.3f}")
            else:
                line.append((f"**{mean:.3f}**" if m in best else f"{mean:.3f}") + f" ± {std:.3f}")
        body.append(line)
    for label, ps in table.pvalue_rows:
        body.append([label] + [ps.get(m, "-") for m in table.methods])
    if latex:
        return _latex(["Data"] + names, body, header_lines + table.notes, caption)
    text = tabulate(body, headers=["Data"] + names, tablefmt="github", disable_numparse=True)
    notes = "\n".join(f"> {n}" for n in header_lines + table.notes)
    return (f"{notes}\n\n{text}\n" if notes else text + "\n")


def _latex(headers: list[str], body: list[list[str]], notes: list[str], caption: str) -> str:
    def esc(s: str) -> str:
        return s.replace("_", "\\_").replace("%", "\\%").replace("±", "$\\pm$")

    lines = [f"% {esc(n)}" for n in notes]
    lines += ["\\begin{table}[t]", "\\centering", f"\\caption{{{esc(caption)}}}" if caption else "",
              "\\begin{tabular}{l" + "c" * (len(headers) - 1) + "}", "\\toprule",
              " & ".join(esc(h) for h in headers) + " \\\\", "\\midrule"]
    for row in body:
        cells = [row[0] if row[0].startswith("\\textbf") else esc(row[0])] + [esc(c) for c in row[1:]]
        if row[0].startswith("p-value") and lines[-1] != "\\midrule":
            lines.append("\\midrule")
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(line for line in lines if line) + "\n"


def run_header(df: pd.DataFrame) -> list[str]:
    """Lines that say how the numbers were made (budget, image size, weights, seeds)."""
    if "budget" not in df.columns or df.empty:
        return []
    lines = []
    for budget, g in df.groupby("budget"):
        parts = []
        for (img, weights), gg in g.groupby(["img_size", "weights"], dropna=False):
            parts.append(f"{', '.join(sorted(gg.method.unique()))} at {int(img)} px, weights "
                         f"{weights or 'n/a'}")
        lines.append(f"budget {budget}: {'; '.join(parts)}; seeds {sorted(g.seed.unique().tolist())}")
        kdad = g[(g.method == "kdad") & (g.weights == "none")]
        if len(kdad):
            lines.append("KDAD with weights none: its teacher is a fixed random VGG16, not ImageNet's")
        if budget != "paper":
            lines.append(f"budget {budget} is CPU-sized (smaller images, backbones and step counts; random "
                         "init unless ImageNet weights are named): NOT comparable with the paper's numbers")
    return lines


def protocol_layout(protocol: str) -> str:
    """The report layout a packaged protocol declares; Table 2's for anything else."""
    from fsad_bench.protocol import load_protocol, packaged_protocols

    return load_protocol(protocol).report if protocol in packaged_protocols() else "table2"


def protocol_report(df: pd.DataFrame, protocol: str, fmt: str, metric: str, header: list[str],
                    fig_dir: Path | None = None) -> str:
    """The table (and figures) of one protocol in its paper layout (the spec's ``report`` key)."""
    from fsad_bench.protocol import load_protocol, packaged_protocols

    if df.empty:
        raise UserError("no finished cells to report")
    spec = load_protocol(protocol) if protocol in packaged_protocols() else None
    layout = protocol_layout(protocol)
    title = spec.title if spec else ""
    lines = [f"{title}".strip()] if title and fmt == "markdown" else []
    caption = f"{metric.replace('_', '-').upper()} (mean ± std over seeds)"
    if metric.startswith("pixel"):
        header = header + [f"metric {metric}: " + ("the authors' mean of per-image pixel AUCs over test "
                                                   "anomalies" if metric.endswith("per_image") else
                                                   "pooled pixel AUROC over all test images (anomalib)")]
    if layout == "curve":
        x = CURVE_X[protocol]
        frame = curve_frame(df, x)
        text = curve_text(frame, x, fmt)
        if fig_dir is not None:
            from fsad_bench.figures import curve_figure
            paths = curve_figure(frame, x, title, fig_dir, protocol)
            header = header + [f"figure: {', '.join(str(p) for p in paths)}"]
        notes = "\n".join(f"> {n}" for n in header) if fmt == "markdown" else ""
        return "\n".join(lines + ([notes, ""] if notes else []) + [text])
    table = build_table(open_set_frame(df), multi=True) if layout == "table3" else build_table(df)
    if layout == "table4":  # the paper groups MVTec AD's categories into textures and objects
        for row in table.rows:
            if not row.is_average:
                group = "Texture" if row.label.lower() in TEXTURES else "Object"
                row.label = f"{group}: {row.label}"
            else:
                row.label = f"{row.label} mean"
    if layout == "table3":
        table.notes.append("rows: each known (seen) class; its dataset's row is their mean; p-values pair "
                           "the known-class sets")
    display = {"devnet": "MIL-DS (DevNet)"} if layout == "table5" else None
    return "\n".join(lines + [render(table, fmt, header, caption, display)])
