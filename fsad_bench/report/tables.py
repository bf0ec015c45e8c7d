"""Tables of the paper from a results store (or a long-form CSV): mean ± std over seeds per
dataset, one column per method, best per row in bold, and the Wilcoxon p-value rows.

Rows: each category of a multi-category dataset (MVTec AD, synthetic) is a row, followed by the
dataset's average row ('MVTEC AD'); single-category datasets are one row. Average row: mean over
categories of the per-category means; its ± is the std over seeds of the per-seed category average.
All stds are population stds (ddof=0) over seeds: the seed spread, not the dataset spread.
Column order, titles and the reference of the p-value rows come from the protocol's
:class:`~fsad_bench.report.presentation.Presentation` (without one: the methods sorted, titled by
their names, no p-value rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fsad_bench.data.registry import DATASETS, MVTEC_CATEGORIES
from fsad_bench.errors import UserError
from fsad_bench.input_size import NATIVE_INPUT_SIZE
from fsad_bench.report.stats import (
    MIN_FRIEDMAN_DATASETS,
    MIN_FRIEDMAN_METHODS,
    MIN_WILCOXON,
    holm,
    paired_wilcoxon,
)
from fsad_bench.report.text import Explained, needs_line

if TYPE_CHECKING:
    from fsad_bench.report.presentation import Presentation

#: image metrics are columns of the store; pixel metrics live in its metrics JSON (q3)
METRICS = ("auc_roc", "auc_pr", "pixel_auc_per_image", "pixel_auc_pooled")


#: the two ways of counting datasets in the paper's tests: p-value (9) and p-value (23)
LEVELS = {"per_dataset": "a multi-category dataset such as MVTec AD as one, the mean of its categories",
          "per_category": "each category of a multi-category dataset as a dataset"}
SEED_SPREAD_NOTE = Explained("± = seed spread: population std over seeds of a dataset's AUC (an average row: "
                             "of its per-seed average); the spread over datasets is reported separately")
#: how the lines that say a statistic needs more datasets name the two ways of counting (LEVELS)
LEVEL_COUNTS = {"per_dataset": "counting a multi-category dataset as one",
                "per_category": "counting each category row as a dataset"}


#: marks a table cell whose mean includes results the detector flagged (e.g. diverged training)
FLAG_MARK = "†"
NAN_NOTE = Explained("NaN: a seed's AUC is missing (NaN) in the input, so the cell's mean is undefined; the "
                     "dataset leaves that method's tests")


@dataclass
class Row:
    label: str
    cells: dict[str, tuple[float, float]]  # method -> (mean, std over seeds)
    is_average: bool = False
    group: str = ""  # the dataset the row belongs to (Table 3's tier-1 set)
    #: method -> names of the flags among the results of the cell (marked FLAG_MARK)
    flags: dict[str, list[str]] = field(default_factory=dict)
    #: method -> number of seeds in the cell (absent: not known); one seed prints '(1 seed)', not ± 0
    seeds: dict[str, int] = field(default_factory=dict)

    def mark(self, method: str) -> str:
        """' †' when the cell of ``method`` includes flagged results, else ''."""
        return f" {FLAG_MARK}" if self.flags.get(method) else ""


def flag_list(value: object) -> list[tuple[str, str]]:
    """(flag, reason) pairs of a row's ``flags`` (a list of {"flag", "reason"}; none, [] or a missing
    column: no flags)."""
    if not isinstance(value, list):
        return []
    return [(str(f.get("flag", "flag")), str(f.get("reason", ""))) if isinstance(f, dict) else (str(f), "")
            for f in value]


def flagged_lines(df: pd.DataFrame, label: str) -> list[str]:
    """One note line per flagged result of ``df`` (the rows of one table cell, labelled ``label``)."""
    if "flags" not in df.columns:
        return []
    lines = []
    for r in df.itertuples():
        for flag, reason in flag_list(r.flags):
            lines.append(f"{FLAG_MARK} {label} seed {r.seed}: {flag}" + (f" ({reason})" if reason else ""))
    return lines


def _names_of_flags(df: pd.DataFrame) -> list[str]:
    if "flags" not in df.columns:
        return []
    return sorted({flag for value in df["flags"] for flag, _ in flag_list(value)})


def nan_mean(values: pd.Series) -> float:
    """The mean with NaN propagating (pandas' mean skips NaN: a missing seed would vanish silently)."""
    return float(np.mean(values.to_numpy(float))) if len(values) else float("nan")


def nan_std(values: pd.Series) -> float:
    """Population std (ddof=0), NaN propagating."""
    return float(np.std(values.to_numpy(float))) if len(values) else float("nan")


def as_displayed(value: float) -> float:
    """The number a table prints (3 decimals), read back: what the paper's tests were computed on."""
    return float(f"{value:.3f}") if np.isfinite(value) else float("nan")


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
    #: level -> (unit, method) of the cells whose mean is NaN (a seed without a number)
    unit_nan: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    #: the levels (LEVELS) whose p-value rows the paper prints for this layout; others are marked (ours)
    paper_pvalue_levels: tuple[str, ...] = ()

    @property
    def max_seeds(self) -> int | None:
        """The most seeds of any cell (None: not known), so whether any ± is a measured seed spread."""
        counts = [n for r in self.rows for n in r.seeds.values()]
        return max(counts) if counts else None


def long_rows(cells: pd.DataFrame, metric: str = "auc_roc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ok rows with the metric as ``value``, the rows that are not ok) of a store's cells."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    ok = cells[cells.status == "ok"].copy()
    if metric in ok.columns:
        ok["value"] = ok[metric]
    else:
        ok["value"] = ok.metrics.map(lambda m: m.get(metric))
        if ok.value.isna().all() and len(ok):
            raise UserError(f"no cell has the metric {metric!r} (pixel metrics come from the q3 protocol)")
        ok = ok[ok.value.notna()]
    return ok, cells[cells.status != "ok"]


def load_long_csv(path: str | Path, metric: str = "auc_roc", distinct_by: Sequence[str] = ()) -> pd.DataFrame:
    """Long-form CSV with columns dataset,category,method,seed,<metric> (category may be empty).

    Each (dataset, category, method, seed) appears once (with ``distinct_by``'s columns, where present,
    told apart by them too: a ``--long`` export's cell key and settings); seeds are integers; an AUC is
    a number in [0, 1] or empty (NaN: that cell's mean is undefined and its dataset leaves the tests of
    that method, which the report says). Anything else is a one-line :class:`UserError` naming the line.
    """
    try:
        df = pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty: expected a header line dataset,category,method,seed,{metric} "
                        "and one row per cell") from None
    except (OSError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot read {path}: {_one_line(exc)}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text: byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                        f"{exc.start}; save it as UTF-8") from None
    df.columns = [c.strip() for c in df.columns]
    needed = {"dataset", "category", "method", "seed", metric}
    if not needed <= set(df.columns):
        raise UserError(f"{path} lacks columns {', '.join(sorted(needed - set(df.columns)))}; "
                        f"expected dataset,category,method,seed,{metric}")
    for col in needed:
        df[col] = df[col].str.strip()
    line = pd.Series(np.arange(len(df)) + 2, index=df.index)  # the header is line 1

    def fail(mask: pd.Series, col: str, what: str) -> None:
        if mask.any():
            i = mask.to_numpy().nonzero()[0][0]
            raise UserError(f"{path} line {line.iloc[i]}: {what.format(value=df.iloc[i][col])}")

    for col in ("dataset", "method"):
        fail(df[col] == "", col, f"empty {col}; every row needs a dataset and a method")
    seed = pd.to_numeric(df.seed, errors="coerce")
    fail(seed.isna() | (seed % 1 != 0), "seed", "seed {value!r} is not an integer")
    df["seed"] = seed.astype(int)
    if df.empty:
        raise UserError(f"{path} has a header but no rows: nothing to report")
    # an empty field is a missing value; a literal NaN (or any other spelling of "not a number") is
    # refused, so a value that was lost on the way is never taken for one left out on purpose
    fail(df[metric].str.lower().isin(["nan", "-nan", "+nan", "na", "n/a", "null", "none"]), metric,
         f"{metric} {{value!r}} is not a number: leave the field empty if the value is missing")
    value = pd.to_numeric(df[metric].replace("", "nan"), errors="coerce")
    fail(value.isna() & (df[metric] != ""), metric,
         f"{metric} {{value!r}} is not a number (leave it empty for a missing value)")
    fail((value < 0) | (value > 1) | np.isinf(value), metric, f"{metric} {{value!r}} is outside [0, 1]")
    df[metric] = value
    df["category"] = np.where(df["category"] == "", df["dataset"], df["category"])
    cell = ["dataset", "category", "method", "seed"] + [c for c in distinct_by if c in df.columns]
    repeated = df.duplicated(cell, keep=False)
    if repeated.any():
        first = df[repeated].iloc[0]
        lines = line[(df[cell] == first[cell]).all(axis=1)].tolist()
        raise UserError(f"{path} lines {', '.join(map(str, lines))}: {first.dataset}/{first.category} "
                        f"{first.method} seed {first.seed} appears {len(lines)} times; keep one row per "
                        "(dataset, category, method, seed)")
    return df.rename(columns={metric: "value"})


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


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
    keys = ["dataset", "method", "x", "seed"]
    frame = out.groupby(keys).value.apply(nan_mean).reset_index()
    if "flags" in out.columns:  # the flags of the categories averaged into each point
        flags = out.groupby(keys)["flags"].apply(
            lambda v: [f for item in v if isinstance(item, list) for f in item])
        frame = frame.merge(flags.reset_index(), on=keys)
    return frame


def build_table(df: pd.DataFrame, multi: bool = False, spec: Presentation | None = None) -> Table:
    """The Table-2 layout from long-form results (columns dataset, category, method, seed, value).

    ``multi=True`` treats every dataset as multi-category (its categories are rows, then its mean).
    ``spec`` orders and titles the columns and names the reference method.
    """
    if df.empty:
        raise UserError("no finished cells to report")
    methods = spec.order(df.method.unique()) if spec else sorted(df.method.unique())
    rows: list[Row] = []
    # level -> {(unit, method): (mean AUC, seed std)}; per_dataset: a multi-category dataset is one
    # unit (its category average), per_category: each category is a unit
    units: dict[str, dict[tuple[str, str], tuple[float, float]]] = {"per_dataset": {}, "per_category": {}}
    flagged: list[str] = []
    any_many = False
    names = spec.names(methods) if spec else {m: m for m in methods}
    for dataset in _order_datasets(sorted(df.dataset.unique())):
        d = df[df.dataset == dataset]
        cats = sorted(d.category.unique(), key=_cat_key)
        many = multi or (DATASETS[dataset].multi_category if dataset in DATASETS else False) or len(cats) > 1
        for cat in cats:
            c = d[d.category == cat]
            row = Row(cat.title() if many else _display(dataset), {}, group=_display(dataset))
            for m in methods:
                cm = c[c.method == m]
                if len(cm):
                    row.cells[m] = (nan_mean(cm.value), nan_std(cm.value))
                    if "seed" in cm.columns:
                        row.seeds[m] = int(cm.seed.nunique())
                    units["per_category"][(f"{dataset}/{cat}", m)] = row.cells[m]
                    row.flags[m] = _names_of_flags(cm)
                    where = f"{_display(dataset)}/{cat}" if many else _display(dataset)
                    flagged += flagged_lines(cm, f"{where}, {names[m]},")
            rows.append(row)
        if many:
            any_many = True
            row = Row(_display(dataset), {}, is_average=True, group=_display(dataset))
            for m in methods:
                dm = d[d.method == m]
                if dm.empty:
                    continue
                cat_means = dm.groupby("category").value.apply(nan_mean)
                per_seed = dm.groupby("seed").value.apply(nan_mean)
                row.cells[m] = (nan_mean(cat_means), nan_std(per_seed))
                row.seeds[m] = len(per_seed)
                row.flags[m] = _names_of_flags(dm)
                units["per_dataset"][(dataset, m)] = row.cells[m]
            rows.append(row)
        else:
            for m in methods:
                if (f"{dataset}/{cats[0]}", m) in units["per_category"]:
                    units["per_dataset"][(dataset, m)] = units["per_category"][(f"{dataset}/{cats[0]}", m)]
    table = Table(methods, rows, names, spec.reference_in(methods) if spec else None,
                  paper_pvalue_levels=spec.layout.paper_pvalue_levels if spec else ())
    for level, values in units.items():
        if values:
            frame = pd.Series(values).apply(pd.Series)
            table.unit_means[level] = frame[0].unstack().reindex(columns=methods)
            table.unit_seed_std[level] = frame[1].unstack().reindex(columns=methods)
            table.unit_nan[level] = {key for key, (mean, _) in values.items() if np.isnan(mean)}
    if not any_many:
        table.unit_means.pop("per_category", None)  # no multi-category dataset: the levels coincide
        table.unit_seed_std.pop("per_category", None)
    few: dict[str, int] = {}  # level -> its number of datasets, where too few for a p-value
    if table.reference is not None:
        for level, matrix in table.unit_means.items():
            if not _add_pvalue_rows(table, level, matrix):
                few[level] = len(matrix)
    if table.pvalue_rows:
        table.notes.append(Explained(
            f"p-value: paired two-sided Wilcoxon signed-rank test of {table.names[table.reference]} vs each "
            "method over the per-dataset means as displayed (3 decimals), as the paper computed its p-values "
            f"(scipy's defaults); (N) = number of datasets paired; n/a below {MIN_WILCOXON} datasets, where "
            "no p-value can reach 0.05. Rows marked (ours) are not in the paper; Holm p: the same p-values "
            "Holm-corrected for the family of comparisons in its row."))
    table.notes += statistics_needs(table, few)
    if any(np.isnan(mean) for r in rows for mean, _ in r.cells.values()):
        table.notes.append(NAN_NOTE)
    if flagged:
        table.notes.append(f"{FLAG_MARK} = the cell's mean includes results flagged as suspect (kept, not "
                           "dropped):")
        table.notes += flagged
    if table.max_seeds == 1:
        table.notes.append(needs_line("the seed spread (±)", 2, "seeds", 1, " per cell", verb="needs"))
    else:
        table.notes.append(SEED_SPREAD_NOTE)
    return table


def count_text(counts: dict[str, int]) -> tuple[int, str]:
    """A table's datasets as a needs line says them: (the count of the first level, '' or ' (4 counting
    each category row as a dataset)' when the table has both levels)."""
    first = counts.get("per_dataset", next(iter(counts.values()), 0))
    both = "per_dataset" in counts and "per_category" in counts
    return first, (f" ({counts['per_category']} {LEVEL_COUNTS['per_category']})" if both else "")


def statistics_needs(table: Table, few: dict[str, int]) -> list[str]:
    """The lines that stand for the tests a table has too few datasets for, instead of rows of n/a
    (``few``: level -> its datasets, where too few for a p-value). One line when no level has enough
    for a p-value, naming the rank tests too (they need as many datasets, with every method) where
    there are methods enough for them; else one line per level that has too few."""
    rank_tests = len(table.methods) >= MIN_FRIEDMAN_METHODS and all(
        len(m.dropna()) < MIN_FRIEDMAN_DATASETS for m in table.unit_means.values())
    every_level = bool(few) and set(few) == set(table.unit_means)
    if every_level or (table.reference is None and rank_tests and table.unit_means):
        what = " and ".join((["p-values"] if every_level else []) + (["rank tests"] if rank_tests else []))
        have, more = count_text(few if every_level else {k: len(m) for k, m in table.unit_means.items()})
        need = MIN_WILCOXON if every_level else MIN_FRIEDMAN_DATASETS
        return [needs_line(what, need, "datasets", have, more)]
    return [needs_line(f"p-values {LEVEL_COUNTS[level]}", MIN_WILCOXON, "datasets", n)
            for level, n in few.items()]


def unit_label(level: str, unit: str) -> str:
    """A unit of a level's matrix as a reader knows it ('AITEX', 'MVTEC AD/carpet')."""
    dataset, _, cat = unit.partition("/")
    if level == "per_category" and cat and cat != dataset:
        return f"{_display(dataset)}/{cat}"
    return _display(dataset)


def left_out(table: Table, level: str, matrix: pd.DataFrame, methods: list[str]) -> list[str]:
    """The units a test over ``methods`` cannot pair, each with why (a NaN mean, or a method not run)."""
    out = []
    for unit, values in matrix[methods].iterrows():
        why = [f"NaN AUC of {table.names.get(m, m)}" if (unit, m) in table.unit_nan.get(level, set())
               else f"{table.names.get(m, m)} not run" for m in methods if np.isnan(values[m])]
        if why:
            out.append(f"{unit_label(level, unit)} ({', '.join(why)})")
    return out


def _add_pvalue_rows(table: Table, level: str, matrix: pd.DataFrame) -> bool:
    """'p-value (N)' (raw, the paper's test on the displayed means) and 'Holm p (N) (ours)' rows of the
    reference vs each other method; a level the paper does not print is marked (ours) too. None when
    no pair reaches the datasets a p-value needs (False; the table says so in one line, not a row of
    n/a): a note still names the datasets a pair left out."""
    ref = table.reference
    shown = matrix.apply(lambda column: column.map(as_displayed))
    tests, dropped = {}, {}
    for m in table.methods:
        if m != ref:
            pair = shown[[ref, m]].dropna()
            tests[m] = paired_wilcoxon(pair[ref].to_numpy(), pair[m].to_numpy())
            dropped[m] = left_out(table, level, matrix, [ref, m])
    n = max(t.n for t in tests.values())
    ours = "" if level in table.paper_pvalue_levels else " (ours)"
    for m, units in dropped.items():
        if units:
            table.notes.append(f"p-value ({n}){ours}, {table.names[ref]} vs {table.names[m]}: pairs "
                               f"{tests[m].n} of {len(matrix)} datasets; left out: {'; '.join(units)}")
    if n < MIN_WILCOXON:
        return False
    reasons = sorted({t.reason for t in tests.values() if t.p_value is None})
    if reasons:
        table.notes.append(f"p-value ({n}){ours} n/a: {'; '.join(reasons)}")

    def fmt(p: float | None) -> str:
        return f"{p:.4f}" if p is not None else "n/a"

    table.pvalue_rows.append((f"p-value ({n}){ours}", {ref: "-"} | {
        m: fmt(t.p_value) for m, t in tests.items()}))
    if any(t.p_value is not None for t in tests.values()):
        adjusted = holm({m: t.p_value for m, t in tests.items()})
        table.pvalue_rows.append((f"Holm p ({n}) (ours)", {ref: "-"} | {
            m: fmt(adjusted[m]) for m in tests}))
    return True


def run_header(df: pd.DataFrame, spec: Presentation | None = None) -> list[str]:
    """Lines that say how the numbers were made (budget, image size, weights, seeds, and what the
    detectors note about the weights they ran with)."""
    if "budget" not in df.columns or df.empty:
        return []
    lines = []
    for budget, g in df.groupby("budget"):
        parts = []
        for (img, weights), gg in g.groupby(["img_size", "weights"], dropna=False):
            native = sorted(set(gg.dataset)) if "dataset" in gg else []
            native = native if native and all(NATIVE_INPUT_SIZE.get(d) == int(img) for d in native) else []
            where = f" ({', '.join(_display(d) for d in native)}: native size)" if native else ""
            parts.append(f"{', '.join(sorted(gg.method.unique()))} at {int(img)} px{where}, weights "
                         f"{weights or 'n/a'}")
        lines.append(f"budget {budget}: {'; '.join(parts)}; seeds {sorted(g.seed.unique().tolist())}")
        for method, weights in sorted({(m, w) for m, w in zip(g.method, g.weights) if isinstance(w, str)}):
            note = spec.weights_note(method, weights) if spec else None
            if note:
                lines.append(f"{spec.name(method)} with weights {weights}: {note}")
        if budget != "paper":
            lines.append(f"budget {budget} is CPU-sized (smaller images, backbones and step counts; random "
                         "init unless ImageNet weights are named): NOT comparable with the paper's numbers")
    return lines + settings_lines(df, spec)


def settings_lines(df: pd.DataFrame, spec: Presentation | None = None) -> list[str]:
    """The protocol settings of the rows (``settings: n_anomaly=7``), whether the spec's or what
    ``--set`` gave; the settings that are the table's rows or x axis (Table 3's known class, a curve's
    x) are left out."""
    if "setting" not in df.columns:
        return []
    axis = set(spec.layout.axis(spec.spec)) if spec is not None else set()
    values: dict[str, list[object]] = {}
    for setting in df.setting:
        for key, value in (setting.items() if isinstance(setting, dict) else ()):
            if key not in axis and value not in values.setdefault(key, []):
                values[key].append(value)

    def ordered(vs: list[object]) -> list[object]:
        try:
            return sorted(vs)  # type: ignore[type-var]
        except TypeError:
            return sorted(vs, key=str)

    if not values:
        return []
    return ["settings: " + "; ".join(f"{k}={', '.join(map(str, ordered(v)))}"
                                     for k, v in sorted(values.items()))]


