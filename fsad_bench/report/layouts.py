"""Report layouts: one protocol's results in its paper layout, chosen by the spec's ``report`` key
(``spec.layout()``): Tables 2-5 (datasets as rows, one column per method, p-value rows, then the
statistics beyond the paper: ranks, Friedman / Nemenyi, the critical-difference diagram, the two
spreads) or the curves of Figs. 6-8.

Everything that differs between layouts is a method or attribute of its :class:`Layout`: the setting
that varies within one table (its *axis*), the metrics it shows, the p-value rows the paper prints,
the published metric it is compared on, its rows' labels and its extra figures. Layouts are registered
through the entry-point group ``fsad_bench.layouts`` (ours in pyproject.toml): a third-party package
adds one the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from fsad_bench.errors import UserError
from fsad_bench.protocol import ProtocolSpec
from fsad_bench.report.configs import config_groups
from fsad_bench.report.presentation import Presentation, budget_note
from fsad_bench.report.render import Part, notes_text, render, render_grid
from fsad_bench.report.stats import MIN_FRIEDMAN_DATASETS, friedman_nemenyi
from fsad_bench.report.tables import (
    FLAG_MARK,
    LEVELS,
    SEED_SPREAD_NOTE,
    Table,
    build_table,
    count_text,
    curve_frame,
    flag_list,
    flagged_lines,
    left_out,
    nan_mean,
    nan_std,
    open_set_frame,
    run_header,
    settings_lines,
)
from fsad_bench.report.text import Explained, needs_line, spread_text

#: MVTec AD's texture categories (the rest are objects) and the embedded textures (Table 4's groups)
TEXTURES = {"carpet", "grid", "leather", "tile", "wood", "brick", "grass", "gravel"}


class Layout:
    """A report layout with datasets as rows, one column per method; subclasses change what differs."""

    name: ClassVar[str] = ""
    #: the levels (tables.LEVELS) whose p-value rows the paper prints; other rows are marked (ours)
    paper_pvalue_levels: ClassVar[tuple[str, ...]] = ()
    #: the metric of this layout's published tables (``--compare-paper``)
    paper_metric: ClassVar[str] = "auc_roc"
    #: rows are the known classes of the open-set setting (Table 3)
    by_known_class: ClassVar[bool] = False

    def check(self, spec: ProtocolSpec, source: str) -> None:
        """Refuse a spec this layout cannot report (at load, before any cell runs)."""

    def axis(self, spec: ProtocolSpec) -> tuple[str, ...]:
        """The setting / hyper-parameter keys that vary within one table (not configurations)."""
        return ()

    def metrics(self, metric: str) -> list[str]:
        """The metrics a report of this layout shows when ``metric`` is asked for."""
        return [metric]

    def table(self, df: pd.DataFrame, pres: Presentation) -> Table:
        return build_table(df, spec=pres)

    def parts(self, df: pd.DataFrame, pres: Presentation, fmt: str, metric: str, header: list[str],
              fig_dir: Path | None, statistics: bool, heading: str, suffix: str) -> list[Part]:
        """One configuration's table (and statistics); ``heading`` goes into its titles, ``suffix`` into
        its figure names and LaTeX labels (both empty for a folder of one configuration)."""
        from fsad_bench.report.figures import table_figure

        title = pres.title + ("" if metric == "auc_roc" else f" - {metric}") + heading
        budget = budget_note(df.budget if "budget" in df.columns else [])
        caption = f"{title}: {metric.replace('_', '-').upper()} (mean ± std over seeds); {budget}"
        label = f"tab:{pres.protocol}-{metric}{suffix}".replace("_", "-")
        if metric.startswith("pixel"):
            what = ("the authors' mean of per-image pixel AUCs over test anomalies"
                    if metric.endswith("per_image") else "pooled pixel AUROC over all test images (anomalib)")
            header = header + [f"metric {metric}: {what}"]
        table = self.table(df, pres)
        stem = f"{pres.protocol}_{metric}{suffix}"
        bars = table_figure(table, fig_dir, f"{stem}_bars", title, metric, budget) \
            if fig_dir is not None and fmt != "csv" else []
        parts = [Part(title, render(table, fmt, header, caption, label), bars)]
        stats = statistics_part(table, fmt, fig_dir, stem, title, budget) if statistics and fmt != "csv" \
            else None
        return parts + ([stats] if stats else [])

    def extra_parts(self, rows_with_blobs: Callable[[], pd.DataFrame], pres: Presentation, fmt: str,
                    fig_dir: Path) -> list[Part]:
        """Parts beyond the tables (Table 4's localisation figures); ``rows_with_blobs``: the
        protocol's ok rows with their stored scores and examples."""
        return []


class PaperTableLayout(Layout):
    """Table 2: datasets as rows; the paper prints p-values over both counts of datasets."""

    name = "table2"
    paper_pvalue_levels = ("per_dataset", "per_category")


class OpenSetLayout(Layout):
    """Table 3: each known class is a row under its dataset's mean row; p-values pair the known-class
    sets."""

    name = "table3"
    paper_pvalue_levels = ("per_category",)
    by_known_class = True

    def axis(self, spec: ProtocolSpec) -> tuple[str, ...]:
        return ("known_class",)

    def table(self, df: pd.DataFrame, pres: Presentation) -> Table:
        table = build_table(open_set_frame(df), multi=True, spec=pres)
        table.group_headers = ("Data (Tier-1)", "Data (Tier-2)")
        table.notes.append("rows: each known (seen) class; its dataset's Mean row is their mean; p-values "
                           "pair the known-class sets")
        return table


class LocalisationLayout(Layout):
    """Table 4: pixel-level AUC of MVTec AD's categories, grouped into textures and objects, and the
    localisation figures (Figs. 4 and 5)."""

    name = "table4"
    paper_metric = "pixel_auc_per_image"

    def metrics(self, metric: str) -> list[str]:
        return ["pixel_auc_per_image", "pixel_auc_pooled"] if metric == "auc_roc" else [metric]

    def table(self, df: pd.DataFrame, pres: Presentation) -> Table:
        table = build_table(df, spec=pres)
        for row in table.rows:
            if not row.is_average:
                row.label = f"{'Texture' if row.label.lower() in TEXTURES else 'Object'}: {row.label}"
            else:
                row.label = f"{row.label} mean"
        return table

    def extra_parts(self, rows_with_blobs: Callable[[], pd.DataFrame], pres: Presentation, fmt: str,
                    fig_dir: Path) -> list[Part]:
        from fsad_bench.report.figures import heatmap_panels, localisation_f1_curve

        df = rows_with_blobs()
        budget = budget_note(df.budget)
        paths = localisation_f1_curve(df, fig_dir, pres, budget) + heatmap_panels(df, fig_dir, pres, budget)
        return [Part(f"{pres.protocol}: localisation figures (Figs. 4 and 5)",
                     notes_text([f"figure: {p}" for p in paths], fmt), paths)]


class AblationLayout(Layout):
    """Table 5: DevNet's variants as columns (the paper prints no p-values for it)."""

    name = "table5"



class CurveLayout(Layout):
    """Figs. 6-8: AUC against a setting (``curve_x``), a table and one panel per dataset."""

    name = "curve"

    def check(self, spec: ProtocolSpec, source: str) -> None:
        if not spec.curve_x:
            raise UserError(f"protocol {source}: report = \"curve\" needs curve_x: name the setting on the x "
                            "axis, e.g. curve_x = \"n_anomaly\"")

    def axis(self, spec: ProtocolSpec) -> tuple[str, ...]:
        return (spec.curve_x,) if spec.curve_x else ()

    def parts(self, df: pd.DataFrame, pres: Presentation, fmt: str, metric: str, header: list[str],
              fig_dir: Path | None, statistics: bool, heading: str, suffix: str) -> list[Part]:
        from fsad_bench.report.figures import curve_figure

        x = pres.spec.curve_x
        title = pres.title + ("" if metric == "auc_roc" else f" - {metric}") + heading
        budget = budget_note(df.budget if "budget" in df.columns else [])
        frame = curve_frame(df, x)
        text = curve_text(frame, x, fmt, pres, f"tab:{x}{suffix}", budget)
        paths = curve_figure(frame, x, title, fig_dir, pres.protocol + suffix, pres, budget) \
            if fig_dir is not None else []
        notes = "\n".join(f"> {n}" for n in header) if fmt == "markdown" else ""
        return [Part(title, text + (f"\n{notes}\n" if notes else ""), paths)]


def curve_text(frame: pd.DataFrame, x: str, fmt: str, pres: Presentation, label: str | None = None,
               budget: str = "") -> str:
    """Rows dataset x setting value, one column per method: mean ± std over seeds (a point of one seed:
    'mean (1 seed)'; NaN when a seed has none; † when a point includes results flagged as suspect,
    listed in the notes). ``budget``: the budget line the caption ends with."""
    methods = pres.order(frame.method.unique())
    body, flagged, recs = [], [], []
    most_seeds = 0
    for (dataset, xv), g in frame.groupby(["dataset", "x"]):
        row = [dataset, f"{xv:g}"]
        for m in methods:
            v = g[g.method == m]
            if not len(v):
                row.append("-")
                continue
            lines = flagged_lines(v, f"{dataset}, {x}={xv:g}, {pres.name(m)},")
            mean, std, seeds = nan_mean(v.value), nan_std(v.value), int(v.seed.nunique())
            most_seeds = max(most_seeds, seeds)
            mark = f" {FLAG_MARK}" if lines else ""
            row.append(("NaN" if np.isnan(mean) else spread_text(mean, std, seeds)) + mark)
            flagged += lines
            names = sorted({f for item in v["flags"] for f, _ in flag_list(item)}) if "flags" in v else []
            recs.append({"dataset": dataset, x: xv, "method": m, "mean": mean, "std": std, "n_seeds": seeds,
                         "flags": ";".join(names)})
        body.append(row)
    headers = ["Data", x] + [pres.name(m) for m in methods]
    if fmt == "csv":
        return pd.DataFrame(recs).to_csv(index=False)
    if most_seeds == 1:
        notes = [needs_line("the seed spread (±)", 2, "seeds", 1, " per point", verb="needs")]
    else:
        notes = [SEED_SPREAD_NOTE] if fmt != "markdown" else []
    if flagged:
        notes += [f"{FLAG_MARK} = the point includes results flagged as suspect (kept, not dropped):",
                  *flagged]
    return render_grid(headers, body, fmt, notes,
                       f"AUC-ROC w.r.t. {x} (mean ± std over seeds)" + (f"; {budget}" if budget else ""),
                       label or f"tab:{x}")


def protocol_report(df: pd.DataFrame, pres: Presentation, fmt: str, metric: str, header: list[str],
                    fig_dir: Path | None = None) -> str:
    """The table (and figures) of one protocol in its paper layout, as one text (one table per
    configuration when the rows hold several, each titled in Markdown)."""
    parts = protocol_parts(df, pres, fmt, metric, header, fig_dir, statistics=False)
    if fmt != "markdown":
        return "\n".join(p.body for p in parts)
    return "\n".join((f"{p.title}\n" if p.title else "") + p.body for p in parts)


def protocol_parts(df: pd.DataFrame, pres: Presentation, fmt: str, metric: str, header: list[str],
                   fig_dir: Path | None = None, statistics: bool = True) -> list[Part]:
    """One protocol in its layout: the table, and for tables with datasets as rows the statistics
    beyond the paper; one such set per configuration of the rows
    (:func:`~fsad_bench.report.configs.config_groups`), headed by what differs."""
    if df.empty:
        raise UserError("no finished cells to report")
    layout = pres.layout
    groups = config_groups(df, layout.axis(pres.spec), pres.name)
    parts: list[Part] = []
    for i, group in enumerate(groups):
        # the settings line (tables.settings_lines) says the settings of this table, not the folder's
        lines = [line for line in header if not line.startswith("settings: ")]
        if len(lines) < len(header):
            lines += settings_lines(group.rows, pres)
        suffix = ""
        if len(groups) > 1:
            suffix = f"-cfg{i + 1}"
            lines.append(f"configuration {i + 1} of {len(groups)} in this folder: {group.heading} (a table "
                         "pools only rows of one configuration)")
            lines += group.details + [f"this table: {line}" for line in run_header(group.rows, pres)
                                      if line.startswith("budget ") and " px" in line]
        parts += layout.parts(group.rows, pres, fmt, metric, lines, fig_dir, statistics,
                              f" [{group.heading}]" if group.heading else "", suffix)
    return parts


def statistics_part(table: Table, fmt: str, fig_dir: Path | None, stem: str, title: str, budget: str = ""
                    ) -> Part | None:
    """Beyond the paper: average ranks, the Friedman test with Nemenyi post-hoc (and its critical-
    difference diagram), and the dataset spread kept apart from the seed spread. What needs more
    datasets, methods or seeds than the table has is one line saying so, not a column of n/a; a table
    of one dataset has nothing beyond itself (None: its own notes say what the tests need)."""
    from fsad_bench.report.figures import cd_diagram

    if max((len(m) for m in table.unit_means.values()), default=0) < 2:
        return None
    names = table.names
    notes, figures, tests, few = [], [], {}, {}
    for level, matrix in table.unit_means.items():
        test = friedman_nemenyi(matrix)
        tests[level] = test
        what = f"Friedman over {test.n_datasets} datasets ({LEVELS[level]}) x {len(test.methods)} methods"
        dropped = left_out(table, level, matrix, table.methods)
        if dropped:
            notes.append(f"left out of the rank tests ({LEVELS[level]}), which need every method on a "
                         f"dataset: {'; '.join(dropped)}")
        if test.p_value is None:
            if len(test.methods) < 3:
                few["methods"] = len(test.methods)
            elif test.n_datasets < MIN_FRIEDMAN_DATASETS:
                few[level] = test.n_datasets
            else:
                notes.append(f"{what}: not computed ({test.reason})")
            continue
        notes.append(f"{what}: chi2 = {test.statistic:.2f}, p = {test.p_value:.4f}; Nemenyi critical "
                     f"difference = {test.critical_difference:.2f} ranks at alpha {test.alpha}")
        if fig_dir is not None:
            figures += cd_diagram(test, fig_dir, f"{stem}_cd_{level}",
                                  f"{title}: critical difference ({test.n_datasets} datasets)", names,
                                  budget)
    if "methods" in few:
        notes.append(needs_line("rank tests (Friedman, Nemenyi)", 3, "methods", few.pop("methods")))
    if few:
        notes.append(needs_line("rank tests (Friedman, Nemenyi)", MIN_FRIEDMAN_DATASETS,
                                "datasets with every method", *count_text(few)))
    ranked = {level: t for level, t in tests.items() if t.n_datasets >= 2}  # one dataset ranks nothing
    headers = ["Method"] + [f"avg rank ({t.n_datasets})" for t in ranked.values()]
    base = table.unit_means.get("per_dataset")
    seed = table.unit_seed_std.get("per_dataset")
    spreads = base is not None and len(base) >= 2
    seeds = table.max_seeds != 1
    if spreads:
        headers += [f"mean AUC ({len(base)})", "dataset spread"] + (["seed spread"] if seeds else [])
    elif base is not None:
        notes.append(needs_line("the dataset spread", 2, "datasets", len(base), verb="needs"))
    if not seeds:
        notes.append(needs_line("the seed spread", 2, "seeds", 1, " per cell", verb="needs"))
    body = []
    for m in table.methods:
        row = [names.get(m, m)]
        row += [f"{t.average_ranks[m]:.2f}" if m in t.average_ranks else "-" for t in ranked.values()]
        if spreads:
            v, s = base[m].dropna(), seed[m].dropna()
            row += [f"{v.mean():.3f}", f"{v.std(ddof=0):.3f}" if len(v) > 1 else "n/a (1 dataset)"]
            row += [f"{s.mean():.3f}"] if seeds else []
        body.append(row)
    if ranked:
        notes.append(Explained("avg rank: mean over datasets of each method's rank by mean AUC (1 = best; "
                               "ties share); rank tests need every method on a dataset"))
    if spreads:
        notes.append(Explained("dataset spread: population std over datasets of the per-dataset mean AUC "
                               "(how much the datasets differ)" + ("; seed spread: mean over datasets of "
                               "the std over seeds (run-to-run noise)" if seeds else "")))
    on_budget = f"; {budget}" if budget else ""
    if len(headers) > 1:
        text = render_grid(headers, body, fmt, notes, f"{title}: ranks and spreads{on_budget}",
                           f"tab:{stem}-ranks".replace("_", "-"))
    else:
        text = notes_text(notes, fmt)
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
