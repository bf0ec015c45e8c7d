"""Which result rows may share a table: one configuration per table, never a pooled cell.

A table cell averages seeds. Rows of one (dataset, category, method) computed with another n_anomaly,
image size, hyper-parameter, budget, fsad-bench version, data or detector code are not seeds of one
experiment, so their spread is not a seed spread. Every row carries the id of its configuration
(:mod:`fsad_bench.configuration`), stored when its cell ran; :func:`config_groups` splits the rows of
one protocol into tables that each hold, per method, the rows of one configuration id, and per
(dataset, category) one data fingerprint.

A table's heading names only what varies: keys of the protocol's part across all ids, keys of a
method's part across that method's ids (matched by name across methods: ``--set img_size=48`` changes
every method's size, so its rows make one ``img_size=48`` table, not one per method), and the detector
code and data by their order of first use ("data version 2" is each category's second data, so a
re-prepared dataset gives two tables, not one per combination of categories). A table is a maximal
set of configurations whose labels agree on every key they share (a maximal clique of the consistency
graph), so a method that ran once appears beside every configuration of the others. Rows that agree
on everything recorded but still repeat a (cell, seed) are an error: the store does not say how they
differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import networkx as nx
import pandas as pd

from fsad_bench.configuration import (
    AT_LEAST,
    DETECTOR_COLUMNS,
    METHOD,
    SHARED,
    ConfigKey,
    canonical,
    config_id,
    config_items,
)
from fsad_bench.errors import UserError

UNSET = "(unset)"  # a key a configuration does not record (a parameter that did not exist when it ran)
_DATA = "data"     # the scope of a row's data version (its category's fingerprint)
_SCOPE_ORDER = {SHARED: 0, METHOD: 1, _DATA: 2}


@dataclass
class ConfigGroup:
    """The rows of one table and what sets them apart from the other tables of the protocol."""

    rows: pd.DataFrame
    heading: str = ""   # e.g. "n_anomaly=5" or "img_size=48, lr=0.01 (DevNet)"; "" = the only configuration
    details: list[str] = field(default_factory=list)  # what a data or detector version is
    order: tuple = ()   # sort key: the merged label's values, naturally ordered


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _value(row: dict, name: str) -> object:
    value = row.get(name)
    return None if _is_missing(value) else value


def row_config(row: dict, axis: Iterable[str]) -> dict[ConfigKey, str]:
    """The configuration items of a stored row (what its id was computed from)."""
    setting = row.get("setting") if isinstance(row.get("setting"), dict) else {}
    params = row.get("params") if isinstance(row.get("params"), dict) else {}
    img = _value(row, "img_size")
    return config_items(str(row.get("dataset", "")), _value(row, "budget"), _value(row, "code_version"),
                        setting, None if img is None else int(img), params, _value(row, "weights"), axis)


def detector_identity(row: dict) -> tuple[str, ...]:
    return tuple("" if _is_missing(row.get(c)) else str(row.get(c)) for c in DETECTOR_COLUMNS)


def with_config_ids(df: pd.DataFrame, axis: Iterable[str]) -> pd.DataFrame:
    """``df`` with a ``config_id`` for every row: the stored one, else computed from the row (a store
    written before rows had one, a long-form CSV)."""
    axis = tuple(axis)
    stored = df["config_id"] if "config_id" in df else pd.Series("", index=df.index)
    ids = [cid if isinstance(cid, str) and cid else
           config_id(str(r.get("method", "")), row_config(r, axis), detector_identity(r))
           for cid, r in zip(stored, df.to_dict("records"))]
    return df.assign(config_id=ids)


def _ordinals(rows: pd.DataFrame, by: list[str], column: str) -> pd.Series:
    """Per row: the rank (1, 2, ...) of its ``column`` value among those of its ``by`` group, in order
    of first use (``finished_at``, then the value)."""
    when = rows["finished_at"].astype(str) if "finished_at" in rows else pd.Series("", index=rows.index)
    out = pd.Series(0, index=rows.index)
    for _, g in rows.groupby(by, sort=False):
        first = pd.DataFrame({"v": g[column], "t": when[g.index]}).groupby("v").t.min()
        order = {v: i + 1 for i, v in enumerate(sorted(first.index, key=lambda v: (first[v], v)))}
        out[g.index] = g[column].map(order)
    return out


def _labels(rows: pd.DataFrame, axis: tuple[str, ...], name: Callable[[str], str]
            ) -> tuple[list[dict[ConfigKey, str]], dict[tuple[ConfigKey, str], str]]:
    """Each row's label (the keys that vary, of its configuration and its data) and what each detector
    code or data version stands for ((key, 'ordinal|carrier') -> text)."""
    firsts = rows.drop_duplicates("config_id")
    items = {r["config_id"]: row_config(r, axis) for r in firsts.to_dict("records")}
    method_of = dict(zip(firsts.config_id, firsts.method)) if "method" in rows else {c: "" for c in items}
    values: dict[tuple[ConfigKey, str], set[str]] = {}
    keys = {k for it in items.values() for k in it}
    for cid, it in items.items():
        for k in keys:
            values.setdefault((k, method_of[cid] if k.scope == METHOD else ""), set()).add(it.get(k, UNSET))
    label_of = {cid: {k: it.get(k, UNSET) for k in keys
                      if len(values[(k, method_of[cid] if k.scope == METHOD else "")]) > 1}
                for cid, it in items.items()}
    labels = [dict(label_of[cid]) for cid in rows.config_id]
    details: dict[tuple[ConfigKey, str], str] = {}
    if "data_fingerprint" in rows and {"dataset", "category"} <= set(rows.columns):
        prints = rows.data_fingerprint.fillna("").astype(str)
        frame = rows.assign(_fp=prints.where(prints != "", "not recorded"))
        n = frame.groupby(["dataset", "category"])._fp.transform("nunique")
        ordinal = _ordinals(frame, ["dataset", "category"], "_fp")
        key = ConfigKey(_DATA, "data version")
        for i in frame.index[n > 1]:
            labels[i][key] = str(ordinal[i])
            where = f"{frame.dataset[i]}/{frame.category[i]}"
            details[(key, f"{ordinal[i]}|{where}")] = (f"{where} data version {ordinal[i]}: fingerprint "
                                                        f"{frame._fp[i][:16]}")
    present = [c for c in DETECTOR_COLUMNS if c in rows]
    if present and "method" in rows:
        frame = rows.assign(_id=rows[present].fillna("").astype(str).agg(" ".join, axis=1))
        n = frame.groupby("method")._id.transform("nunique")
        ordinal = _ordinals(frame, ["method"], "_id")
        key = ConfigKey(METHOD, "detector code")
        for i in frame.index[n > 1]:
            labels[i][key] = str(ordinal[i])
            # digests cut to 16 hex digits; names and versions in full
            parts = ", ".join(f"{c.removeprefix('detector_')} "
                              f"{str(frame[c][i])[:16 if c == 'detector_source' else None] or '-'}"
                              for c in present)
            details[(key, f"{ordinal[i]}|{frame.method[i]}")] = (f"{name(frame.method[i])} detector code "
                                                                  f"version {ordinal[i]}: {parts}")
    return labels, details


def _agree(key: ConfigKey, a: str, b: str) -> bool:
    """Whether two values of ``key`` can be one configuration: equal, or (image sizes) a dataset's
    native size beside any size at least as large."""
    if a == b:
        return True
    if key.name != "img_size" or not (a.startswith(AT_LEAST) or b.startswith(AT_LEAST)):
        return False
    sizes = [v for v in (a, b) if not v.startswith(AT_LEAST)]
    floors = [int(v.removeprefix(AT_LEAST)) for v in (a, b) if v.startswith(AT_LEAST)]
    return not sizes or (sizes[0].isdigit() and int(sizes[0]) >= max(floors))


def _consistent(a: frozenset, b: frozenset) -> bool:
    da, db = dict(a), dict(b)
    return all(_agree(k, v, db[k]) for k, v in da.items() if k in db)


def _merge(merged: dict[ConfigKey, str], key: ConfigKey, value: str) -> None:
    """The value a group shows for ``key``: a concrete image size over a native-size floor."""
    if key not in merged or (merged[key].startswith(AT_LEAST) and not value.startswith(AT_LEAST)):
        merged[key] = value


def _natural(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _heading(label: dict[ConfigKey, str], rows: pd.DataFrame, carriers: dict[ConfigKey, set[str]],
             name: Callable[[str], str]) -> str:
    """'k=v' for each key of the merged label; a key that only some methods (data keys: categories)
    of the table carry names them."""
    parts = []
    methods = set(rows.method) if "method" in rows else set()
    cats = set(zip(rows.dataset, rows.category)) if {"dataset", "category"} <= set(rows.columns) else set()
    for key in sorted(label, key=lambda k: (_SCOPE_ORDER[k.scope], k.name)):
        value = label[key].removeprefix(AT_LEAST)
        text = {"data version": f"data version {value}",
                "detector code": f"detector code version {value}"}.get(key.name, f"{key.name}={value}")
        who = carriers.get(key, set())
        if key.scope == METHOD and who and who != methods:
            text += f" ({', '.join(sorted(name(m) for m in who))})"
        if key.scope == _DATA and who and who != {f"{d}/{c}" for d, c in cats}:
            text += f" ({', '.join(sorted(who))})"
        parts.append(text)
    return ", ".join(parts)


def config_groups(df: pd.DataFrame, axis: Iterable[str] = (), name: Callable[[str], str] = str
                  ) -> list[ConfigGroup]:
    """The rows of one protocol split into tables of one configuration each (see the module docstring).

    ``axis``: setting / hyper-parameter keys that are the layout's own axis (a curve's ``curve_x``,
    Table 3's ``known_class``), which vary within a table. ``name``: a method's display name, for
    headings. A single configuration gives one group with an empty heading.
    """
    axis = tuple(axis)
    if df.empty:
        return [ConfigGroup(df)]
    rows = with_config_ids(df.reset_index(drop=True), axis)
    labels, details = _labels(rows, axis, name)
    frozen = [frozenset(lab.items()) for lab in labels]
    distinct = sorted(set(frozen), key=lambda f: sorted((k.name, _natural(v)) for k, v in f))
    groups = [ConfigGroup(df)]
    if len(distinct) > 1:
        graph = nx.Graph()
        graph.add_nodes_from(range(len(distinct)))
        graph.add_edges_from((i, j) for i in range(len(distinct)) for j in range(i + 1, len(distinct))
                             if _consistent(distinct[i], distinct[j]))
        index = {f: i for i, f in enumerate(distinct)}
        node_of = [index[f] for f in frozen]
        methods = rows["method"].to_numpy() if "method" in rows else [""] * len(rows)
        where = ([f"{d}/{c}" for d, c in zip(rows.dataset, rows.category)] if "dataset" in rows
                 else [""] * len(rows))
        groups = []
        for clique in sorted(sorted(c) for c in nx.find_cliques(graph)):
            members = set(clique)
            picked = [i for i, n in enumerate(node_of) if n in members]
            merged: dict[ConfigKey, str] = {}
            carriers: dict[ConfigKey, set[str]] = {}
            for i in picked:
                for k, v in labels[i].items():
                    _merge(merged, k, v)
                    carriers.setdefault(k, set()).add(methods[i] if k.scope == METHOD else where[i])
            notes = sorted({text for (k, tag), text in details.items()
                            if merged.get(k) == tag.partition("|")[0]
                            and tag.partition("|")[2] in carriers.get(k, ())})
            order = tuple((_SCOPE_ORDER[k.scope], k.name, _natural(merged[k].removeprefix(AT_LEAST)))
                          for k in sorted(merged, key=lambda k: (_SCOPE_ORDER[k.scope], k.name)))
            sub = df.iloc[picked]
            groups.append(ConfigGroup(sub, _heading(merged, sub, carriers, name), notes, order))
        groups.sort(key=lambda g: g.order)
        if len(groups) == 1:  # labels that vary but agree (native sizes): one configuration after all
            groups = [ConfigGroup(df)]
    for group in groups:
        _check_no_repeats(group.rows, set(axis))
    return groups


def _check_no_repeats(rows: pd.DataFrame, axis: set[str]) -> None:
    """Two rows of one configuration for the same cell and seed: nothing recorded tells them apart."""
    cell = [c for c in ("dataset", "category", "method", "seed") if c in rows]
    if len(cell) < 4:
        return
    setting = rows["setting"].map(lambda s: canonical({k: v for k, v in s.items() if k in axis})
                                  if isinstance(s, dict) else "") if "setting" in rows else ""
    params = rows["params"].map(lambda p: canonical({k: v for k, v in p.items() if k in axis})
                                if isinstance(p, dict) else "") if "params" in rows else ""
    frame = rows[cell].assign(_s=setting, _p=params).astype(str)
    repeated = frame.duplicated(keep=False)
    if repeated.any():
        first = frame[repeated].iloc[0]
        same = rows[(frame[cell + ["_s", "_p"]] == first[cell + ["_s", "_p"]]).all(axis=1)]
        keys = ", ".join(str(k) for k in same["key"]) if "key" in same else f"{len(same)} rows"
        raise UserError(f"{int(repeated.sum())} results repeat a cell with no recorded difference, e.g. "
                        f"{first.dataset}/{first.category} {first.method} seed {first.seed} (keys {keys}): "
                        "the store does not say which to report; move one run's rows to another folder "
                        "or rerun into a fresh --out")
