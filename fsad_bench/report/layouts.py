"""One protocol's results in its paper layout (the spec's ``report`` key): Tables 2-5, or the curve
table and figure of Figs. 6-8, each followed by the statistics beyond the paper where datasets are
the rows (ranks, Friedman / Nemenyi, the critical-difference diagram, the two spreads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fsad_bench.errors import UserError
from fsad_bench.report.configs import config_groups
from fsad_bench.report.figures import cd_diagram, curve_figure, table_figure
from fsad_bench.report.presentation import ReportSpec, budget_note, report_spec
from fsad_bench.report.render import Part, render, render_grid
from fsad_bench.report.stats import friedman_nemenyi
from fsad_bench.report.tables import (
    FLAG_MARK,
    LEVELS,
    SEED_SPREAD_NOTE,
    Table,
    build_table,
    curve_frame,
    flag_list,
    flagged_lines,
    left_out,
    nan_mean,
    nan_std,
    open_set_frame,
    run_header,
)

#: MVTec AD's texture categories (the rest are objects) and the embedded textures (Table 4's groups)
TEXTURES = {"carpet", "grid", "leather", "tile", "wood", "brick", "grass", "gravel"}


def curve_text(frame: pd.DataFrame, x: str, fmt: str, spec: ReportSpec, label: str | None = None,
               budget: str = "") -> str:
    """Rows dataset x setting value, one column per method: mean ± std over seeds (NaN when a seed has
    none; † when a point includes results flagged as suspect, listed in the notes). ``budget``: the
    budget line the caption ends with."""
    methods = spec.order(frame.method.unique())
    body, flagged, recs = [], [], []
    for (dataset, xv), g in frame.groupby(["dataset", "x"]):
        row = [dataset, f"{xv:g}"]
        for m in methods:
            v = g[g.method == m]
            if not len(v):
                row.append("-")
                continue
            lines = flagged_lines(v, f"{dataset}, {x}={xv:g}, {spec.name(m)},")
            mean, std = nan_mean(v.value), nan_std(v.value)
            mark = f" {FLAG_MARK}" if lines else ""
            row.append(("NaN" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}") + mark)
            flagged += lines
            names = sorted({f for item in v["flags"] for f, _ in flag_list(item)}) if "flags" in v else []
            recs.append({"dataset": dataset, x: xv, "method": m, "mean": mean, "std": std,
                         "flags": ";".join(names)})
        body.append(row)
    headers = ["Data", x] + [spec.name(m) for m in methods]
    if fmt == "csv":
        return pd.DataFrame(recs).to_csv(index=False)
    notes = [SEED_SPREAD_NOTE] if fmt != "markdown" else []
    if flagged:
        notes += [f"{FLAG_MARK} = the point includes results flagged as suspect (kept, not dropped):",
                  *flagged]
    return render_grid(headers, body, fmt, notes,
                       f"AUC-ROC w.r.t. {x} (mean ± std over seeds)" + (f"; {budget}" if budget else ""),
                       label or f"tab:{x}")


def protocol_report(df: pd.DataFrame, protocol: str, fmt: str, metric: str, header: list[str],
                    fig_dir: Path | None = None) -> str:
    """The table (and figures) of one protocol in its paper layout, as one text (one table per
    configuration when the rows hold several, each titled in Markdown)."""
    parts = protocol_parts(df, protocol, fmt, metric, header, fig_dir, statistics=False)
    if fmt != "markdown":
        return "\n".join(p.body for p in parts)
    return "\n".join((f"{p.title}\n" if p.title else "") + p.body for p in parts)


def layout_axis(spec: ReportSpec) -> tuple[str, ...]:
    """The setting keys a layout varies within one table: a curve's x axis, Table 3's known class."""
    if spec.layout == "curve":
        return (spec.curve_x,) if spec.curve_x else ()
    return ("known_class",) if spec.layout == "table3" else ()


def protocol_parts(df: pd.DataFrame, protocol: str, fmt: str, metric: str, header: list[str],
                   fig_dir: Path | None = None, statistics: bool = True) -> list[Part]:
    """One protocol in its paper layout (the spec's ``report`` key): the table, and for tables with
    datasets as rows the statistics beyond the paper (ranks, Friedman, CD diagram, spreads); one such
    set per configuration of the rows (:func:`~fsad_bench.report.configs.config_groups`), headed by
    what differs."""
    if df.empty:
        raise UserError("no finished cells to report")
    spec = report_spec(protocol)
    if spec.layout == "curve" and not spec.curve_x:
        raise UserError(f"protocol {protocol} has report = \"curve\" but no curve_x: name the setting "
                        "on the x axis in its spec, e.g. curve_x = \"n_anomaly\"")
    groups = config_groups(df, layout_axis(spec), spec.name)
    parts: list[Part] = []
    for i, group in enumerate(groups):
        lines = list(header)
        suffix = ""
        if len(groups) > 1:
            suffix = f"-cfg{i + 1}"
            lines.append(f"configuration {i + 1} of {len(groups)} in this folder: {group.heading} (a table "
                         "pools only rows of one configuration)")
            lines += group.details + [f"this table: {line}" for line in run_header(group.rows, spec)
                                      if line.startswith("budget ") and " px" in line]
        parts += _group_parts(group.rows, protocol, spec, fmt, metric, lines, fig_dir, statistics,
                              f" [{group.heading}]" if group.heading else "", suffix)
    return parts


def _group_parts(df: pd.DataFrame, protocol: str, spec: ReportSpec, fmt: str, metric: str,
                 header: list[str], fig_dir: Path | None, statistics: bool, heading: str, suffix: str
                 ) -> list[Part]:
    """One configuration's table (and statistics); ``heading`` goes into its titles, ``suffix`` into
    its figure names and LaTeX labels (both empty for a folder of one configuration)."""
    layout = spec.layout
    title = spec.title + ("" if metric == "auc_roc" else f" - {metric}") + heading
    budget = budget_note(df.budget if "budget" in df.columns else [])
    caption = f"{title}: {metric.replace('_', '-').upper()} (mean ± std over seeds); {budget}"
    label = f"tab:{protocol}-{metric}{suffix}".replace("_", "-")
    if metric.startswith("pixel"):
        header = header + [f"metric {metric}: " + ("the authors' mean of per-image pixel AUCs over test "
                                                   "anomalies" if metric.endswith("per_image") else
                                                   "pooled pixel AUROC over all test images (anomalib)")]
    if layout == "curve":
        x = spec.curve_x
        frame = curve_frame(df, x)
        text = curve_text(frame, x, fmt, spec, f"tab:{x}{suffix}", budget)
        paths = curve_figure(frame, x, title, fig_dir, protocol + suffix, spec, budget) \
            if fig_dir is not None else []
        notes = "\n".join(f"> {n}" for n in header) if fmt == "markdown" else ""
        return [Part(title, "\n".join(([notes, ""] if notes else []) + [text]), paths)]
    table = build_table(open_set_frame(df), multi=True, spec=spec) if layout == "table3" else \
        build_table(df, spec=spec)
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
    bars = table_figure(table, fig_dir, f"{protocol}_{metric}{suffix}_bars", title, metric, budget) \
        if fig_dir is not None and fmt != "csv" else []
    parts = [Part(title, render(table, fmt, header, caption, label), bars)]
    if statistics and fmt != "csv":
        parts.append(statistics_part(table, fmt, fig_dir, f"{protocol}_{metric}{suffix}", title, budget))
    return parts


def statistics_part(table: Table, fmt: str, fig_dir: Path | None, stem: str, title: str, budget: str = ""
                    ) -> Part:
    """Beyond the paper: average ranks, the Friedman test with Nemenyi post-hoc (and its critical-
    difference diagram), and the dataset spread kept apart from the seed spread."""
    names = table.names
    notes, figures, tests = [], [], {}
    for level, matrix in table.unit_means.items():
        test = friedman_nemenyi(matrix)
        tests[level] = test
        what = f"Friedman over {test.n_datasets} datasets ({LEVELS[level]}) x {len(test.methods)} methods"
        dropped = left_out(table, level, matrix, table.methods)
        if dropped:
            notes.append(f"left out of the rank tests ({LEVELS[level]}), which need every method on a "
                         f"dataset: {'; '.join(dropped)}")
        if test.p_value is None:
            notes.append(f"{what}: not computed ({test.reason})")
            continue
        notes.append(f"{what}: chi2 = {test.statistic:.2f}, p = {test.p_value:.4f}; Nemenyi critical "
                     f"difference = {test.critical_difference:.2f} ranks at alpha {test.alpha}")
        if fig_dir is not None:
            figures += cd_diagram(test, fig_dir, f"{stem}_cd_{level}",
                                  f"{title}: critical difference ({test.n_datasets} datasets)", names,
                                  budget)
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
    on_budget = f"; {budget}" if budget else ""
    text = render_grid(headers, body, fmt, notes, f"{title}: ranks and spreads{on_budget}",
                       f"tab:{stem}-ranks".replace("_", "-"))
    for level, test in tests.items():
        if test.posthoc is not None:
            ph = test.posthoc
            grid = [[names.get(a, a)] + [f"{ph.loc[a, b]:.4f}" for b in ph.columns] for a in ph.index]
            text += "\n" + render_grid(["Nemenyi p"] + [names.get(b, b) for b in ph.columns], grid, fmt,
                                       [], f"Nemenyi post-hoc p-values ({LEVELS[level]}){on_budget}",
                                       f"tab:{stem}-nemenyi-{level}".replace("_", "-"))
    if figures and fmt == "markdown":
        text += "\n" + "\n".join(f"> figure: {p}" for p in figures) + "\n"
    return Part(f"{title}: statistics beyond the paper", text, figures)
