"""Ours beside the paper: each of our table cells next to the published one (results/paper/*.csv).

A protocol's spec names the published tables its numbers are set beside (``paper_tables``); its
layout says on which metric (Table 4: the per-image pixel AUC) and whether rows are known classes
(Table 3). A cell is (dataset, category, known class, method); category is empty for a dataset-level
row (a single-category dataset, or a multi-category dataset's average), known class only in Table 3.
A method is compared with the published column its detector declared when it ran (``paper_column``,
recorded in the store); methods that declare none are not compared.
The difference is flagged when it exceeds two standard deviations of the difference of the two
estimates, sqrt(std_ours^2 + std_paper^2), floored at half the published rounding step (0.0005)
so that two identical seed-free numbers are not 'different' by rounding alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pandas as pd

from fsad_bench.data.registry import DATASETS
from fsad_bench.errors import UserError
from fsad_bench.published_settings import published_settings_differ
from fsad_bench.report.configs import config_groups
from fsad_bench.report.presentation import Presentation, budget_note
from fsad_bench.report.render import Part, notes_text, render_grid
from fsad_bench.report.tables import FLAG_MARK, flag_list, nan_mean, nan_std
from fsad_bench.report.text import Explained, Folded, spread_text

KEYS = ["dataset", "category", "known_class", "method"]
#: how our cells meet the published ones: the same row, and the column our method declares
PAPER_KEYS = ["dataset", "category", "known_class", "paper_column"]
ROUNDING_FLOOR = 0.0005
N_SD = 2.0
#: marks a method whose settings differ from those behind the published numbers
SETTINGS_MARK = "‡"
NOT_RECORDED = ("its settings are not recorded (a long-form CSV), so they are not known to be the published "
                "ones")


def load_published(table: str) -> pd.DataFrame:
    """The transcribed numbers of one published table (columns source, dataset, category, known_class,
    method, column, metric, mean, std, n_anomaly; ``column`` is the paper's column title, ``source``
    the paper and table, ``n_anomaly`` the labelled anomalies behind the number, 0 for an
    unsupervised method)."""
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
        recs.append(dict(zip(KEYS, key), mean=nan_mean(g.value), std=nan_std(g.value),
                         n_seeds=g.seed.nunique(), flags=_flags(g)))
    up = ["dataset", "category", "method"] if by_known_class else ["dataset", "method"]
    inner = "known_class" if by_known_class else "category"
    for key, g in df.groupby(up):
        if g[inner].nunique() < 2 and not (not by_known_class and _multi(key[0])):
            continue
        per_seed = g.groupby("seed").value.apply(nan_mean)
        rec = dict(zip(up, key), mean=nan_mean(g.groupby(inner).value.apply(nan_mean)), std=nan_std(per_seed),
                   n_seeds=len(per_seed), flags=_flags(g))
        recs.append({"category": "", "known_class": "", **rec})
    return pd.DataFrame(recs, columns=KEYS + ["mean", "std", "n_seeds", "flags"])


def _flags(rows: pd.DataFrame) -> str:
    """'name (seed s: reason); ...' of the flagged results among ``rows`` ('' when none)."""
    if "flags" not in rows.columns:
        return ""
    return "; ".join(f"{flag} (seed {r.seed}" + (f": {reason})" if reason else ")")
                     for r in rows.itertuples() for flag, reason in flag_list(r.flags))


@dataclass
class Comparison:
    table: str                 # the published table, e.g. "table2"
    source: str                # where its numbers come from, e.g. "Table 2" or "DRA Table 1"
    n_anomaly: int | None      # the labelled anomalies of ours (and of the published numbers set beside)
    metric: str
    by_known_class: bool       # rows are known classes (Table 3)
    cells: pd.DataFrame        # KEYS + paper_column, ours_mean, ours_std, n_seeds, flags, paper_mean,
                               # paper_std, diff, sd, differs
    unmatched_datasets: list[str]
    #: method -> how its settings differ from those behind the published numbers ([] = they match)
    settings_differ: dict[str, list[str]] = field(default_factory=dict)

    @property
    def other_settings(self) -> list[str]:
        """The compared methods whose settings differ from the published ones (marked SETTINGS_MARK)."""
        return sorted(m for m in set(self.cells.method) if self.settings_differ.get(m))

    @property
    def agree(self) -> int:
        return int((~self.cells.differs & self.cells.ours_mean.notna()).sum())

    @property
    def undefined(self) -> int:
        """Cells of ours without a mean (a NaN seed): neither agreeing nor differing."""
        return int(self.cells.ours_mean.isna().sum())

    def summary(self) -> str:
        n = len(self.cells)
        made = f" with {self.n_anomaly} labelled anomalies" if self.n_anomaly is not None else ""
        if not n:
            return (f"no published numbers of {self.source}{made} for the datasets and methods run "
                    f"({', '.join(self.unmatched_datasets) or 'none'}): nothing to compare")
        text = (f"{self.agree} of {n} cells agree with the published {self.source} within {N_SD:g} sd; "
                f"{n - self.agree - self.undefined} differ (marked !)")
        if self.undefined:
            text += f"; {self.undefined} have no mean of ours (NaN)"
        if self.other_settings:
            k = int(self.cells.method.isin(self.other_settings).sum())
            text += (f"; {k} of them are of methods whose settings differ from the published ones (marked "
                     f"{SETTINGS_MARK}), so agreement there says little")
        return text


def compare(df: pd.DataFrame, pres: Presentation, table: str | None = None) -> Comparison | None:
    """Our cells of one protocol beside a published table (default: the first its spec names); None
    when the paper prints no table for it. ``df`` holds the layout's published metric as ``value``."""
    table = table or next(iter(pres.spec.paper_tables), None)
    if table is None:
        return None
    layout = pres.layout
    metric = layout.paper_metric
    paper = load_published(table)
    source = ", ".join(dict.fromkeys(paper.source.astype(str)))
    n_anomaly = _n_anomaly(df, pres)
    # a published number was made with some number of labelled anomalies: only ours made with as many
    # stand beside it; an unsupervised method's number (0) stands for every number
    paper = paper[(paper.metric == metric) & paper.n_anomaly.isin([n_anomaly, 0])]
    ours = our_cells(df, by_known_class=layout.by_known_class)
    ours["paper_column"] = ours.method.map(pres.paper_column)
    paper = paper.rename(columns={"column": "paper_column"})
    cells = ours.dropna(subset=["paper_column"]).merge(paper[PAPER_KEYS + ["mean", "std"]], on=PAPER_KEYS,
                                                       suffixes=("_ours", "_paper"))
    cells = cells.rename(columns={"mean_ours": "ours_mean", "std_ours": "ours_std",
                                  "mean_paper": "paper_mean", "std_paper": "paper_std"})
    cells["diff"] = cells.ours_mean - cells.paper_mean
    cells["sd"] = np.maximum(np.sqrt(cells.ours_std**2 + cells.paper_std.fillna(0) ** 2), ROUNDING_FLOOR)
    cells["differs"] = cells["diff"].abs() > N_SD * cells.sd
    unmatched = sorted(set(df.dataset) - set(cells.dataset))
    return Comparison(table, source, n_anomaly, metric, layout.by_known_class, cells, unmatched,
                      settings_differences(df[df.method.isin(cells.method)]))


def _n_anomaly(df: pd.DataFrame, pres: Presentation) -> int | None:
    """The labelled anomalies of ``df``'s rows (one configuration: one number); rows that do not
    record it (a plain CSV) have the spec's."""
    recorded = {s.get("n_anomaly") for s in df.setting if isinstance(s, dict)} if "setting" in df else set()
    recorded.discard(None)
    if not recorded:
        recorded = set(pres.spec.settings.get("n_anomaly", [])[:1])
    return int(recorded.pop()) if len(recorded) == 1 else None


def settings_differences(df: pd.DataFrame) -> dict[str, list[str]]:
    """method -> each way its rows' settings (``params``, ``img_size``) differ from those behind the
    published numbers (:func:`fsad_bench.published_settings.published_settings_differ`), a line that
    holds for only some datasets naming them; rows that record no settings (a CSV) say so."""
    out: dict[str, list[str]] = {}
    for method, g in df.groupby("method"):
        if "params" not in g.columns:
            out[method] = [NOT_RECORDED]
            continue
        where: dict[str, set[str]] = {}
        seen: set[tuple[str, str, str]] = set()
        for r in g.itertuples():
            params = r.params if isinstance(r.params, dict) else {}
            img = getattr(r, "img_size", None)
            img = None if img is None or pd.isna(img) else int(img)
            memo = (json.dumps(params, sort_keys=True, default=str), str(img), r.dataset)
            if memo in seen:
                continue
            seen.add(memo)
            for line in published_settings_differ(method, params, img, r.dataset):
                where.setdefault(line, set()).add(r.dataset)
        everywhere = set(g.dataset)
        out[method] = [line if datasets == everywhere else
                       f"{line} on {', '.join(_display(d) for d in sorted(datasets))}"
                       for line, datasets in where.items()]
    return out


def _display(dataset: str) -> str:
    return DATASETS[dataset].display if dataset in DATASETS else dataset


def _label(dataset: str, category: str, known_class: str, by_known_class: bool) -> str:
    parts = [DATASETS[dataset].display if dataset in DATASETS else dataset]
    if category:
        parts.append(category.replace("_", " ").title())
    if known_class:
        parts.append(known_class)
    average = not known_class if by_known_class else (_multi(dataset) and not category)
    return " / ".join(parts) + (" mean" if average else "")


def comparison_rows(comps: list[Comparison], display: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (Data, Method, published in, ours, paper, diff, mark) in the paper's row order,
    the published tables' cells together (a cell of ours beside each published number made like it).
    Method is ``display``'s title, followed by the published column it is compared with where the
    title does not already name it."""
    order = {d: i for i, d in enumerate(DATASETS)}
    frames = [c.cells.assign(source=c.source, table_order=i, known_rows=c.by_known_class)
              for i, c in enumerate(comps)]
    cells = pd.concat(frames, ignore_index=True)
    cells = cells.assign(_o=cells.dataset.map(order).fillna(len(order)),
                         _avg=(cells.category == "") & (cells.known_class == ""))
    cells = cells.sort_values(["_o", "dataset", "_avg", "category", "known_class", "method", "table_order"])
    differ = {m: lines for c in comps for m, lines in c.settings_differ.items() if lines}
    body = []
    for r in cells.itertuples():
        paper = f"{r.paper_mean:.3f}" + ("" if np.isnan(r.paper_std) else f" ± {r.paper_std:.3f}")
        ours = "NaN" if np.isnan(r.ours_mean) else spread_text(r.ours_mean, r.ours_std, r.n_seeds)
        method = _method_label(display.get(r.method, r.method), r.paper_column)
        body.append([_label(r.dataset, r.category, r.known_class, r.known_rows),
                     method + (f" {SETTINGS_MARK}" if r.method in differ else ""), r.source,
                     ours + (f" {FLAG_MARK}" if r.flags else ""), paper,
                     "n/a" if np.isnan(r.diff) else f"{r.diff:+.3f}",
                     "!" if r.differs else ""])
    return ["Data", "Method", "published in", "ours", "paper", "diff", f"> {N_SD:g} sd"], body


def _method_label(name: str, column: str) -> str:
    return name if column in name else f"{name} = paper's {column}"


def comparison_part(df: pd.DataFrame, pres: Presentation, fmt: str) -> Part:
    """Ours beside the published numbers for one protocol (df: its rows, with the layout's published
    metric): one grid per configuration of the rows (never a pooled cell), each of our cells beside
    every published number made with as many labelled anomalies (the spec's ``paper_tables``), methods
    whose settings differ from the published ones marked ‡ with what differs, cells with flagged
    results marked †."""
    protocol = pres.protocol
    title = f"{protocol}: ours beside the paper"
    if not pres.spec.paper_tables:
        return Part(title, notes_text([f"the paper prints no numbers for protocol {protocol} (its results "
                                       "are figures only): nothing to compare"], fmt))
    groups = config_groups(df, pres.layout.axis(pres.spec), pres.name) if len(df) else []
    bodies = [_comparison_body(g.rows, pres, fmt, g.heading, f"-cfg{i + 1}" if len(groups) > 1 else "")
              for i, g in enumerate(groups)] or [_comparison_body(df, pres, fmt, "", "")]
    return Part(title, "\n".join(bodies))


def _comparison_body(df: pd.DataFrame, pres: Presentation, fmt: str, heading: str, suffix: str) -> str:
    protocol = pres.protocol
    comps = [compare(df, pres, table) for table in pres.spec.paper_tables]
    notes = ([f"configuration: {heading}"] if heading else []) + [c.summary() for c in comps] + [
        Explained(f"metric {comps[0].metric}; diff = ours - paper; ! = |diff| > 2 sd with sd = "
                  "sqrt(std_ours^2 + std_paper^2) (floored at 0.0005, the published rounding); only the "
                  "datasets and methods run are compared")]
    budgets = sorted(set(df.budget)) if "budget" in df.columns else []
    if budgets and budgets != ["paper"]:
        notes.append(f"ours ran at budget {', '.join(budgets)}, not the paper's settings: differences are "
                     "expected")
    names = pres.names(sorted(set(df.method)))
    differ = {m: lines for c in comps for m, lines in c.settings_differ.items() if lines}
    for method in sorted(differ):  # in HTML each method's list folds away
        notes.append(Folded(f"{SETTINGS_MARK} {names[method]}: settings differ from those behind the "
                            "published numbers", differ[method], "differences"))
    flagged = {(_label(r.dataset, r.category, r.known_class, c.by_known_class), r.method, r.flags)
               for c in comps for r in c.cells.itertuples() if r.flags}
    for where, method, flags in sorted(flagged):
        notes.append(f"{FLAG_MARK} {where}, {names.get(method, method)}: includes flagged results: {flags}")
    for c in comps:
        if c.unmatched_datasets:
            notes.append(f"no published numbers of {c.source} for: {', '.join(c.unmatched_datasets)}")
    if all(c.cells.empty for c in comps):
        return notes_text(notes, fmt)
    if fmt == "csv":
        cells = pd.concat([c.cells.assign(source=c.source, settings_differ=c.cells.method.map(
            lambda m, c=c: "; ".join(c.settings_differ.get(m, [])))) for c in comps], ignore_index=True)
        return (cells.assign(configuration=heading) if heading else cells).to_csv(index=False)
    headers, body = comparison_rows([c for c in comps if not c.cells.empty], names)
    sources = ", ".join(c.source for c in comps if not c.cells.empty)
    caption = (f"{protocol}: ours vs {sources}" + (f" [{heading}]" if heading else "")
               + f"; {budget_note(budgets)}")
    return render_grid(headers, body, fmt, notes, caption, f"tab:{protocol}-vs-paper{suffix}")
