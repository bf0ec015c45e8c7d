"""Per-cell exports of a results folder: one row per finished (ok) cell, as long-form CSV
(``report DIR --format csv --long``) or Parquet (``--format parquet``), and the reader that turns
such a CSV back into the frame the tables are built from (``report --from-csv``).

The columns (:func:`long_frame`): first the ``--from-csv`` format ``protocol, dataset, category,
method, seed, auc_roc, auc_pr``, then every other scalar metric of the cell (q3's pixel AUCs), one
``setting.<key>`` column per key of the protocol's settings grid, and the store's remaining
columns (the cell key, budget, image size, weights, hyper-parameters and the detector's record as
JSON text, split hash, device, wall time, versions, finish time). What the export leaves out: the
test scores and the split's file lists (large; they stay in the store), status (always ok) and the
errors of failed cells (``fsad-bench report DIR`` lists them).

The per-image export (``--per-image``, :func:`per_image_frame`) has one row per (ok cell, test image):
the cell (key, protocol, dataset, category, method, seed, ``setting.<key>``), the test image's
``file`` (relative to its category folder, from the split manifest), its ``label`` (1 = anomaly),
``score`` (as stored: 6 decimals) and ``rank`` within the cell (1 = most anomalous; tied scores by
file name, :mod:`fsad_bench.per_image`). Join it with the ``--long`` export on ``key``.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pandas as pd

from fsad_bench.errors import UserError
from fsad_bench.per_image import ranks
from fsad_bench.report.results import Results
from fsad_bench.report.tables import METRICS, load_long_csv

#: the cell and its two image metrics, first in every export: the ``--from-csv`` columns
CELL_COLUMNS = ("protocol", "dataset", "category", "method", "seed", "auc_roc", "auc_pr")
#: prefix of the columns that hold the protocol's settings (``setting.n_anomaly``)
SETTING_PREFIX = "setting."
#: store columns that the export leaves out (see the module docstring) or spreads over columns
_LEFT_OUT = {"status", "error", "value", "scores", "manifest", "metrics", "setting"}
#: store columns whose JSON the reader turns back into values (an empty cell: the type's empty value)
_JSON_COLUMNS = {"params": dict, "info": dict, "flags": list}
#: numeric columns of a --long export besides the metric being reported
_NUMERIC_COLUMNS = (*METRICS, "wall_s", "peak_mem_mb")
PARQUET_EXTRA = "parquet"


def _json_text(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value


def long_frame(results: Results) -> tuple[pd.DataFrame, int]:
    """(one row per ok cell of a results folder with the columns of the module docstring, the number
    of cells left out because they failed or were not applicable)."""
    ok, not_ok = results.rows("auc_roc")
    if ok.empty:
        raise UserError(f"no finished cells in {results.folder} to export ({len(not_ok)} failed or not "
                        "applicable)")
    ok = ok.reset_index(drop=True)
    columns: dict[str, pd.Series] = {c: ok[c] for c in CELL_COLUMNS}
    metric_names = sorted({k for m in ok.metrics for k, v in m.items()
                           if isinstance(v, int | float) and not isinstance(v, bool)} - set(CELL_COLUMNS))
    for name in metric_names:
        columns[name] = ok.metrics.map(lambda m, name=name: m.get(name))
    setting_keys = sorted({k for s in ok.setting for k in s})
    for key in setting_keys:
        columns[SETTING_PREFIX + key] = _setting_column([s.get(key) for s in ok.setting])
    for c in ok.columns:
        if c not in columns and c not in _LEFT_OUT:
            columns[c] = ok[c].map(_json_text)
    return pd.DataFrame(columns), len(not_ok)


#: the columns of a per-image export besides the ``setting.<key>`` ones (which follow ``seed``)
PER_IMAGE_CELL = ("key", "protocol", "dataset", "category", "method", "seed")
PER_IMAGE_IMAGE = ("file", "label", "score", "rank")


def per_image_frame(results: Results) -> tuple[pd.DataFrame, list[str]]:
    """(one row per (ok cell, test image) with the columns of the module docstring, ordered by cell
    and rank; lines on the cells left out or exported without file names). A cell stored without
    scores is left out; one whose manifest does not list its test files gets empty file names and
    ranks that break ties by test-set order."""
    ok = results.ok_rows_with_blobs().reset_index(drop=True)
    if ok.empty:
        raise UserError(f"no finished cells in {results.folder} to export")
    ok = ok.sort_values(["protocol", "dataset", "category", "method", "seed", "key"], kind="stable")
    setting_keys = sorted({k for s in ok.setting if isinstance(s, dict) for k in s})
    parts, no_scores, no_files = [], [], []
    for r in ok.itertuples():
        blob = r.scores if isinstance(r.scores, dict) else {}
        scores, labels = blob.get("scores") or [], blob.get("labels") or []
        if not scores or len(scores) != len(labels):
            no_scores.append(r.key)
            continue
        files = (r.manifest or {}).get("test") if isinstance(r.manifest, dict) else None
        if not isinstance(files, list) or len(files) != len(scores):
            no_files.append(r.key)
            files = [""] * len(scores)
        frame = pd.DataFrame({"file": files, "label": pd.array(labels, dtype="int64"),
                              "score": pd.array(scores, dtype="float64"), "rank": ranks(scores, files)})
        cell = {c: getattr(r, c) for c in PER_IMAGE_CELL}
        setting = r.setting if isinstance(r.setting, dict) else {}
        for key in setting_keys:
            cell[SETTING_PREFIX + key] = setting.get(key)
        parts.append(frame.assign(**{c: [v] * len(frame) for c, v in cell.items()}).sort_values("rank"))
    if not parts:
        raise UserError(f"no cell in {results.folder} has stored test scores to export")
    columns = [*PER_IMAGE_CELL, *(SETTING_PREFIX + k for k in setting_keys), *PER_IMAGE_IMAGE]
    frame = pd.concat(parts, ignore_index=True)[columns]
    for key in setting_keys:
        frame[SETTING_PREFIX + key] = _setting_column(list(frame[SETTING_PREFIX + key]))
    notes = []
    if no_scores:
        notes.append(f"{len(no_scores)} ok cell(s) without stored test scores left out (first: "
                     f"{no_scores[0]})")
    if no_files:
        notes.append(f"{len(no_files)} cell(s) whose split manifest lists no test files: file left empty, "
                     f"ties ranked in test-set order (first: {no_files[0]})")
    return frame, notes


def _setting_column(values: list[Any]) -> pd.Series:
    """One setting over the rows, as objects (an int setting absent from some rows stays an int, not a
    float); values of mixed kinds (a number here, a name there) as text, so Parquet can type them."""
    values = [_json_text(v) for v in values]
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) > 1 and not kinds <= {int, float}:
        values = [None if v is None else str(v) for v in values]
    return pd.Series(values, dtype=object)


def long_csv(frame: pd.DataFrame) -> str:
    """The long form as CSV text (floats as Python's shortest round-trip repr: no digit is lost)."""
    return frame.to_csv(index=False)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """The long form as a Parquet file (pyarrow; the ``parquet`` extra)."""
    if find_spec("pyarrow") is None:
        raise UserError(f"--format parquet needs pyarrow: pip install 'fsad-bench[{PARQUET_EXTRA}]' "
                        "(or use --format csv --long)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        frame.to_parquet(path, engine="pyarrow", index=False)
    except ImportError as exc:  # installed, but a version pandas refuses
        raise UserError(f"--format parquet: pyarrow cannot be used ({exc}); pip install -U "
                        f"'fsad-bench[{PARQUET_EXTRA}]'") from None


def read_long_csv(path: str | Path, metric: str = "auc_roc") -> tuple[pd.DataFrame, str | None]:
    """A long-form CSV as the tables' input frame (see ``load_long_csv``, which reads every column as
    text), and its protocol when it has a ``protocol`` column (a ``--long`` export). The columns of a
    ``--long`` export get their store types back: ``setting.<key>`` columns become each row's
    ``setting`` dict (empty without them), JSON columns dicts, numbers numbers; so a protocol's
    layout (curves, Table 3's known classes) and its configuration checks read it as they read the
    store. Cells of several protocols are refused: pooled into one table their numbers would mean
    nothing."""
    df = load_long_csv(path, metric, distinct_by=_distinct_columns(path))
    protocol = None
    if "protocol" in df.columns:
        protocols = sorted(p for p in df.protocol.unique() if p)
        if len(protocols) > 1:
            raise UserError(f"{path} holds cells of protocols {', '.join(protocols)}; --from-csv reports "
                            "one protocol: keep the rows of one (its 'protocol' column) or export a folder "
                            "of one")
        protocol = protocols[0] if protocols else None
    keys = [c for c in df.columns if c.startswith(SETTING_PREFIX)]
    df["setting"] = [{k.removeprefix(SETTING_PREFIX): _json_value(v) for k, v in zip(keys, values) if v != ""}
                     for values in df[keys].itertuples(index=False)] if keys else [{} for _ in range(len(df))]
    for column, empty in _JSON_COLUMNS.items():
        if column in df.columns:
            df[column] = df[column].map(lambda v, empty=empty: _json_value(v) if v != "" else empty())
    for column in [c for c in _NUMERIC_COLUMNS if c in df.columns and c != "value"]:
        df[column] = pd.to_numeric(df[column].replace("", "nan"), errors="coerce")
    if "img_size" in df.columns and df.img_size.notna().all():
        df["img_size"] = df.img_size.astype(int)
    return df, protocol


def _distinct_columns(path: str | Path) -> list[str]:
    """The columns of ``path`` besides (dataset, category, method, seed) that tell its rows apart: a
    ``--long`` export's cell key and settings (q5's rows differ only in ``setting.n_anomaly``)."""
    try:
        columns = [c.strip() for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError, UnicodeDecodeError):
        return []  # load_long_csv reports why the file cannot be read
    return [c for c in columns if c == "key" or c.startswith(SETTING_PREFIX)]


def _json_value(text: str) -> Any:
    """A cell's text as the value it was written from: JSON (numbers, booleans, dicts, lists), else
    the text itself (a setting such as known_class = cut)."""
    try:
        return json.loads(text)
    except ValueError:
        return text
