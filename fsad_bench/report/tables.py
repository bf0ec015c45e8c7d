"""Tables of the paper from a results store (or a long-form CSV): mean ± std over seeds per
dataset, one column per method, best per row in bold, and the Wilcoxon p-value rows.

Rows: each category of a multi-category dataset (MVTec AD, synthetic) is a row, followed by the
dataset's average row ('MVTEC AD'); single-category datasets are one row. Average row: mean over
categories of the per-category means; its ± is the std over seeds of the per-seed category average.
All stds are population stds (ddof=0) over seeds: the seed spread, not the dataset spread.
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from fsad_bench.data.registry import DATASETS, MVTEC_CATEGORIES
from fsad_bench.errors import UserError
from fsad_bench.stats import MIN_WILCOXON, friedman_nemenyi, holm, paired_wilcoxon
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
    return render_grid(headers, body, fmt, [SEED_SPREAD_NOTE] if fmt != "markdown" else [],
                       f"AUC-ROC w.r.t. {x} (mean ± std over seeds)", f"tab:{x}")


def build_table(df: pd.DataFrame, multi: bool = False) -> Table:
    """The Table-2 layout from long-form results (columns dataset, category, method, seed, value).

    ``multi=True`` treats every dataset as multi-category (its categories are rows, then its mean).
    """
    if df.empty:
        raise UserError("no finished cells to report")
    methods = _order_methods(sorted(df.method.unique()))
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
    table = Table(methods, rows)
    for level, values in units.items():
        if values:
            frame = pd.Series(values).apply(pd.Series)
            table.unit_means[level] = frame[0].unstack().reindex(columns=methods)
            table.unit_seed_std[level] = frame[1].unstack().reindex(columns=methods)
    if not any_many:
        table.unit_means.pop("per_category", None)  # no multi-category dataset: the levels coincide
        table.unit_seed_std.pop("per_category", None)
    if REFERENCE_METHOD in methods and len(methods) > 1:
        for matrix in table.unit_means.values():
            _add_pvalue_rows(table, matrix)
        table.notes.append("p-value: paired two-sided Wilcoxon signed-rank test of DevNet vs each method "
                           "over per-dataset mean AUCs (the paper's test); (N) = number of datasets paired; "
                           "Holm p: the same p-values Holm-corrected for the family of comparisons in its "
                           f"row; n/a below {MIN_WILCOXON} datasets, where no p-value can reach 0.05.")
    table.notes.append(SEED_SPREAD_NOTE)
    return table


def _add_pvalue_rows(table: Table, matrix: pd.DataFrame) -> None:
    """'p-value (N)' (raw, as the paper) and 'Holm p (N)' rows of DevNet vs each other method."""
    tests = {}
    for m in table.methods:
        if m != REFERENCE_METHOD:
            pair = matrix[[REFERENCE_METHOD, m]].dropna()
            tests[m] = paired_wilcoxon(pair[REFERENCE_METHOD].to_numpy(), pair[m].to_numpy())
    n = max(t.n for t in tests.values())
    reasons = sorted({t.reason for t in tests.values() if t.p_value is None})
    if reasons:
        table.notes.append(f"p-value ({n}) n/a: {'; '.join(reasons)}")

    def fmt(p: float | None) -> str:
        return f"{p:.4f}" if p is not None else "n/a"

    table.pvalue_rows.append((f"p-value ({n})", {REFERENCE_METHOD: "-"} | {
        m: fmt(t.p_value) for m, t in tests.items()}))
    if any(t.p_value is not None for t in tests.values()):
        adjusted = holm({m: t.p_value for m, t in tests.items()})
        table.pvalue_rows.append((f"Holm p ({n})", {REFERENCE_METHOD: "-"} | {
            m: fmt(adjusted[m]) for m in tests}))


def _best(row: Row) -> set[str]:
    if not row.cells:
        return set()
    top = max(round(v[0], 3) for v in row.cells.values())
    return {m for m, v in row.cells.items() if round(v[0], 3) == top}


def render(table: Table, fmt: str, header_lines: list[str] | None = None, caption: str = "",
           display: dict[str, str] | None = None, label: str = "") -> str:
    """The table in ``fmt`` (markdown | latex | html | csv): mean ± seed std, best per row in bold."""
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
    body = []
    previous_group = None
    for r in table.rows:
        best = _best(r)
        cells = []
        for m in table.methods:
            if m not in r.cells:
                cells.append("-")
                continue
            mean, std = r.cells[m]
            cells.append((f"**{mean:.3f}**" if m in best else f"{mean:.3f}") + f" ± {std:.3f}")
        if table.group_headers:
            first = ["" if r.group == previous_group else r.group, "**Mean**" if r.is_average else r.label]
            previous_group = r.group
        else:
            first = [f"**{r.label}**" if r.is_average else r.label]
        body.append(first + cells)
    pad = [""] if table.group_headers else []
    for row_label, ps in table.pvalue_rows:
        body.append([row_label] + pad + [ps.get(m, "-") for m in table.methods])
    first_headers = list(table.group_headers) if table.group_headers else ["Data"]
    return render_grid(first_headers + names, body, fmt, header_lines + table.notes, caption, label,
                       rule_before=len(table.rows))


_BOLD = re.compile(r"\*\*(.+?)\*\*")


_LATEX_SPECIAL = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "#": "\\#", "_": "\\_", "{": "\\{",
                  "}": "\\}", "$": "\\$", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
                  "±": "$\\pm$", "≥": "$\\geq$", "≤": "$\\leq$", "→": "$\\rightarrow$"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_cell(text: str) -> str:
    """Escape a cell for LaTeX; **x** (our bold marker) becomes \\textbf{x}."""
    parts = _BOLD.split(text)  # odd indices are the bold parts
    return "".join(f"\\textbf{{{_latex_escape(p)}}}" if i % 2 else _latex_escape(p)
                   for i, p in enumerate(parts))


def html_cell(text: str) -> str:
    parts = _BOLD.split(text)
    return "".join(f"<b>{html.escape(p)}</b>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def render_grid(headers: list[str], body: list[list[str]], fmt: str, notes: list[str] | None = None,
                caption: str = "", label: str = "", rule_before: int | None = None) -> str:
    """One table in markdown (GitHub), LaTeX (booktabs) or an HTML fragment. Cells mark bold as **x**;
    ``rule_before`` = index of the first body row after a mid rule (the p-value rows)."""
    notes = notes or []
    if fmt == "latex":
        lines = ["% needs \\usepackage{booktabs}"] + [f"% {n}" for n in notes]
        lines += ["\\begin{table}[t]", "\\centering"]
        if caption:
            lines.append(f"\\caption{{{_latex_escape(caption)}}}")
        if label:
            lines.append(f"\\label{{{label}}}")
        lines += ["\\begin{tabular}{l" + "c" * (len(headers) - 1) + "}", "\\toprule",
                  " & ".join(latex_cell(h) for h in headers) + " \\\\", "\\midrule"]
        for i, row in enumerate(body):
            if i == rule_before and 0 < i:
                lines.append("\\midrule")
            lines.append(" & ".join(latex_cell(c) for c in row) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"
    if fmt == "html":
        head = "".join(f"<th>{html_cell(h)}</th>" for h in headers)
        rows = []
        for i, row in enumerate(body):
            cls = ' class="rule"' if i == rule_before and i > 0 else ""
            rows.append(f"<tr{cls}>" + "".join(f"<td>{html_cell(c)}</td>" for c in row) + "</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        notes_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
        return (f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
                f"{notes_html}\n")
    text = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    quoted = "\n".join(f"> {n}" for n in notes)
    return f"{quoted}\n\n{text}\n" if quoted else text + "\n"


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


@dataclass
class Part:
    """One section of a report: a title, its body in the report's format, the figures it made."""

    title: str
    body: str
    figures: list[Path] = field(default_factory=list)


def protocol_report(df: pd.DataFrame, protocol: str, fmt: str, metric: str, header: list[str],
                    fig_dir: Path | None = None) -> str:
    """The table (and figures) of one protocol in its paper layout, as one text."""
    parts = protocol_parts(df, protocol, fmt, metric, header, fig_dir, statistics=False)
    lines = [parts[0].title] if fmt == "markdown" and parts[0].title else []
    return "\n".join(lines + [p.body for p in parts])


def protocol_parts(df: pd.DataFrame, protocol: str, fmt: str, metric: str, header: list[str],
                   fig_dir: Path | None = None, statistics: bool = True) -> list[Part]:
    """One protocol in its paper layout (the spec's ``report`` key): the table, and for tables with
    datasets as rows the statistics beyond the paper (ranks, Friedman, CD diagram, spreads)."""
    from fsad_bench.protocol import load_protocol, packaged_protocols

    if df.empty:
        raise UserError("no finished cells to report")
    spec = load_protocol(protocol) if protocol in packaged_protocols() else None
    layout = protocol_layout(protocol)
    title = (spec.title if spec else protocol) + ("" if metric == "auc_roc" else f" - {metric}")
    caption = f"{title}: {metric.replace('_', '-').upper()} (mean ± std over seeds)"
    label = f"tab:{protocol}-{metric}".replace("_", "-")
    if metric.startswith("pixel"):
        header = header + [f"metric {metric}: " + ("the authors' mean of per-image pixel AUCs over test "
                                                   "anomalies" if metric.endswith("per_image") else
                                                   "pooled pixel AUROC over all test images (anomalib)")]
    if layout == "curve":
        x = CURVE_X[protocol]
        frame = curve_frame(df, x)
        text = curve_text(frame, x, fmt)
        paths = []
        if fig_dir is not None:
            from fsad_bench.figures import curve_figure
            paths = curve_figure(frame, x, title, fig_dir, protocol)
        notes = "\n".join(f"> {n}" for n in header) if fmt == "markdown" else ""
        return [Part(title, "\n".join(([notes, ""] if notes else []) + [text]), paths)]
    table = build_table(open_set_frame(df), multi=True) if layout == "table3" else build_table(df)
    if layout == "table4":  # the paper groups MVTec AD's categories into textures and objects
        for row in table.rows:
            if not row.is_average:
                group = "Texture" if row.label.lower() in TEXTURES else "Object"
                row.label = f"{group}: {row.label}"
            else:
                row.label = f"{row.label} mean"
    if layout == "table3":
        table.group_headers = ("Data (Tier-1)", "Data (Tier-2)")
        table.notes.append("rows: each known (seen) class; its dataset's Mean row is their mean; p-values "
                           "pair the known-class sets")
    display = {"devnet": "MIL-DS (DevNet)"} if layout == "table5" else None
    parts = [Part(title, render(table, fmt, header, caption, display, label))]
    if statistics and fmt != "csv":
        parts.append(statistics_part(table, fmt, fig_dir, f"{protocol}_{metric}", title, display))
    return parts


def statistics_part(table: Table, fmt: str, fig_dir: Path | None, stem: str, title: str,
                    display: dict[str, str] | None = None) -> Part:
    """Beyond the paper: average ranks, the Friedman test with Nemenyi post-hoc (and its critical-
    difference diagram), and the dataset spread kept apart from the seed spread."""
    names = {**METHOD_DISPLAY, **(display or {})}
    notes, figures, tests = [], [], {}
    for level, matrix in table.unit_means.items():
        test = friedman_nemenyi(matrix)
        tests[level] = test
        what = f"Friedman over {test.n_datasets} datasets ({LEVELS[level]}) x {len(test.methods)} methods"
        if test.p_value is None:
            notes.append(f"{what}: not computed ({test.reason})")
            continue
        notes.append(f"{what}: chi2 = {test.statistic:.2f}, p = {test.p_value:.4f}; Nemenyi critical "
                     f"difference = {test.critical_difference:.2f} ranks at alpha {test.alpha}")
        if fig_dir is not None:
            from fsad_bench.figures import cd_diagram
            figures += cd_diagram(test, fig_dir, f"{stem}_cd_{level}",
                                  f"{title}: critical difference ({test.n_datasets} datasets)", names)
    headers = ["Method"] + [f"avg rank ({t.n_datasets})" for t in tests.values()]
    base = table.unit_means.get("per_dataset")
    seed = table.unit_seed_std.get("per_dataset")
    if base is not None:
        headers += [f"mean AUC ({len(base)})", "dataset spread", "seed spread"]
    body = []
    for m in table.methods:
        row = [names.get(m, m)]
        row += [f"{t.average_ranks[m]:.2f}" if m in t.average_ranks else "-" for t in tests.values()]
        if base is not None:
            v, s = base[m].dropna(), seed[m].dropna()
            row += [f"{v.mean():.3f}", f"{v.std(ddof=0):.3f}" if len(v) > 1 else "n/a (1 dataset)",
                    f"{s.mean():.3f}"]
        body.append(row)
    notes += ["avg rank: mean over datasets of each method's rank by mean AUC (1 = best; ties share); "
              "rank tests need every method on a dataset",
              "dataset spread: population std over datasets of the per-dataset mean AUC (how much the "
              "datasets differ); seed spread: mean over datasets of the std over seeds (run-to-run noise)"]
    text = render_grid(headers, body, fmt, notes, f"{title}: ranks and spreads", f"tab:{stem}-ranks".replace(
        "_", "-"))
    for level, test in tests.items():
        if test.posthoc is not None:
            ph = test.posthoc
            grid = [[names.get(a, a)] + [f"{ph.loc[a, b]:.4f}" for b in ph.columns] for a in ph.index]
            text += "\n" + render_grid(["Nemenyi p"] + [names.get(b, b) for b in ph.columns], grid, fmt,
                                       [], f"Nemenyi post-hoc p-values ({LEVELS[level]})",
                                       f"tab:{stem}-nemenyi-{level}".replace("_", "-"))
    if figures and fmt == "markdown":
        text += "\n" + "\n".join(f"> figure: {p}" for p in figures) + "\n"
    return Part(f"{title}: statistics beyond the paper", text, figures)
