"""Which result rows may share a table: one resolved configuration per table, never a pooled cell.

A table cell averages seeds. Rows of one (dataset, category, method) that were computed with another
n_anomaly, image size, hyper-parameter, budget, fsad-bench version, data or detector code are not
seeds of one experiment, so their spread is not a seed spread. :func:`config_groups` splits the
rows of one protocol into groups that each hold at most one configuration

- of the protocol (``budget``, ``code_version``, every setting key but the layout's axis): one per
  table;
- of each method (``img_size``, every hyper-parameter but the axis, ``weights``, the detector's
  identity ``detector_target/dist/version/source``): one per table column (a dataset fed at its
  native size, :data:`fsad_bench.input_size.NATIVE_INPUT_SIZE`, fits any larger size asked for: Mastcam
  at 64 px beside the others at 448 px is one configuration);
- of each (dataset, category)'s data (``data_fingerprint``): one per table row.

Only keys that vary label a row. Keys are matched by name across methods (``--set img_size=48``
changes every method's size: its rows make one ``img_size=48`` table, not one per method), data and
detector fingerprints by their order of first use (``data version 2`` is each category's second data,
so a re-prepared dataset gives two tables, not one per combination of categories). A table is a
maximal set of rows whose labels agree on every key they share (a maximal clique of the consistency
graph), so a method that ran once appears beside every configuration of the others. Rows that agree
on everything recorded but still repeat a (cell, seed) are an error: the store does not say how they
differ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import networkx as nx
import pandas as pd

from fsad_bench.errors import UserError
from fsad_bench.input_size import NATIVE_INPUT_SIZE

#: provenance columns of a row's detector (added to the store after its first version)
DETECTOR_COLUMNS = ("detector_target", "detector_dist", "detector_version", "detector_source")
UNSET = "(unset)"  # a key a row does not record (a parameter that did not exist when it ran)
AT_LEAST = ">="    # img_size of a row at its dataset's native size: what any size at least this gives

# label key prefixes: the scope a key varies in
_SHARED, _METHOD, _DATA = "shared", "method", "data"


@dataclass(frozen=True)
class _Key:
    scope: str  # _SHARED (every row), _METHOD (the rows of one method), _DATA (of one dataset/category)
    name: str   # as printed: "n_anomaly", "lr", "img_size", "data version", "detector code"


@dataclass
class ConfigGroup:
    """The rows of one table and what sets them apart from the other tables of the protocol."""

    rows: pd.DataFrame
    heading: str = ""   # e.g. "n_anomaly=5" or "img_size=48, lr=0.01 (DevNet)"; "" = the only configuration
    details: list[str] = field(default_factory=list)  # what a data or detector version is
    order: tuple = ()   # sort key: the merged label's values, naturally ordered


def _canonical(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


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


def _row_items(df: pd.DataFrame, axis: set[str]) -> list[dict[_Key, str]]:
    """Every configuration key of every row (varying or not), as canonical text."""
    columns = set(df.columns)
    items: list[dict[_Key, str]] = [{} for _ in range(len(df))]
    for i, row in enumerate(df.itertuples(index=False)):
        r = row._asdict()
        out = items[i]
        for name in ("budget", "code_version"):
            if name in columns and not _is_missing(r[name]):
                out[_Key(_SHARED, name)] = _canonical(r[name])
        setting = r.get("setting") if isinstance(r.get("setting"), dict) else {}
        for k, v in setting.items():
            if k not in axis:
                out[_Key(_SHARED, k)] = _canonical(v)
        if "img_size" in columns and not _is_missing(r["img_size"]):
            size = int(r["img_size"])
            native = NATIVE_INPUT_SIZE.get(r.get("dataset"))
            out[_Key(_METHOD, "img_size")] = f"{AT_LEAST}{size}" if size == native else str(size)
        params = r.get("params") if isinstance(r.get("params"), dict) else {}
        for k, v in params.items():
            if k not in axis and k != "img_size":
                out[_Key(_METHOD, k)] = _canonical(v)
        if "weights" in columns and "weights" not in params and not _is_missing(r["weights"]):
            out[_Key(_METHOD, "weights")] = _canonical(r["weights"])
    return items


def _varying(df: pd.DataFrame, items: list[dict[_Key, str]]) -> list[dict[_Key, str]]:
    """Each row's label: the keys that vary in the key's scope (all rows, the row's method, its
    dataset/category), with a missing key read as UNSET."""
    methods = df["method"].to_numpy() if "method" in df else [""] * len(df)
    scope_of = {_SHARED: [""] * len(df), _METHOD: list(methods)}
    values: dict[tuple[_Key, str], set[str]] = {}
    keys = {k for it in items for k in it}
    for i, it in enumerate(items):
        for k in keys:
            values.setdefault((k, scope_of[k.scope][i]), set()).add(it.get(k, UNSET))
    return [{k: it.get(k, UNSET) for k in keys if len(values[(k, scope_of[k.scope][i])]) > 1}
            for i, it in enumerate(items)]


def _provenance_labels(df: pd.DataFrame, labels: list[dict[_Key, str]], name: Callable[[str], str]
                       ) -> dict[tuple[_Key, str], str]:
    """Add 'data version' and 'detector code' (ordinals of the fingerprints) to the labels of rows
    whose category or method has several; returns (key, ordinal text) -> what it stands for, by carrier."""
    details: dict[tuple[_Key, str], str] = {}
    rows = df.reset_index(drop=True)
    if "data_fingerprint" in rows and {"dataset", "category"} <= set(rows.columns):
        prints = rows.data_fingerprint.fillna("").astype(str)
        frame = rows.assign(_fp=prints.where(prints != "", "not recorded"))
        n = frame.groupby(["dataset", "category"])._fp.transform("nunique")
        ordinal = _ordinals(frame, ["dataset", "category"], "_fp")
        key = _Key(_DATA, "data version")
        for i in frame.index[n > 1]:
            labels[i][key] = str(ordinal[i])
            where = f"{frame.dataset[i]}/{frame.category[i]}"
            details[(key, f"{ordinal[i]}|{where}")] = (f"{where} data version {ordinal[i]}: fingerprint "
                                                        f"{frame._fp[i][:16]}")
    present = [c for c in DETECTOR_COLUMNS if c in rows]
    if present and "method" in rows:
        ident = rows[present].fillna("").astype(str).agg(" ".join, axis=1)
        frame = rows.assign(_id=ident)
        n = frame.groupby("method")._id.transform("nunique")
        ordinal = _ordinals(frame, ["method"], "_id")
        key = _Key(_METHOD, "detector code")
        for i in frame.index[n > 1]:
            labels[i][key] = str(ordinal[i])
            # digests cut to 16 hex digits; names and versions in full
            parts = ", ".join(f"{c.removeprefix('detector_')} "
                              f"{str(frame[c][i])[:16 if c == 'detector_source' else None] or '-'}"
                              for c in present)
            details[(key, f"{ordinal[i]}|{frame.method[i]}")] = (f"{name(frame.method[i])} detector code "
                                                                  f"version {ordinal[i]}: {parts}")
    return details


def _agree(key: _Key, a: str, b: str) -> bool:
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


def _merge(merged: dict[_Key, str], key: _Key, value: str) -> None:
    """The value a group shows for ``key``: a concrete image size over a native-size floor."""
    if key not in merged or (merged[key].startswith(AT_LEAST) and not value.startswith(AT_LEAST)):
        merged[key] = value


def _natural(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


_SCOPE_ORDER = {_SHARED: 0, _METHOD: 1, _DATA: 2}


def _heading(label: dict[_Key, str], rows: pd.DataFrame, carriers: dict[_Key, set[str]],
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
        if key.scope == _METHOD and who and who != methods:
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
    axis = set(axis)
    rows = df.reset_index(drop=True)
    if rows.empty:
        return [ConfigGroup(df)]
    labels = _varying(rows, _row_items(rows, axis))
    details = _provenance_labels(rows, labels, name)
    frozen = [frozenset(lab.items()) for lab in labels]
    distinct = sorted(set(frozen), key=lambda f: sorted((k.name, _natural(v)) for k, v in f))
    if len(distinct) == 1:
        groups = [ConfigGroup(df)]
    else:
        graph = nx.Graph()
        graph.add_nodes_from(range(len(distinct)))
        graph.add_edges_from((i, j) for i in range(len(distinct)) for j in range(i + 1, len(distinct))
                             if _consistent(distinct[i], distinct[j]))
        index = {f: i for i, f in enumerate(distinct)}
        node_of = [index[f] for f in frozen]
        methods = rows["method"].to_numpy() if "method" in rows else [""] * len(rows)
        where = ([f"{d}/{c}" for d, c in zip(rows.dataset, rows.category)] if "dataset" in rows
                 else [""] * len(rows))
        cliques = sorted(sorted(c) for c in nx.find_cliques(graph))
        groups = []
        for clique in cliques:
            members = set(clique)
            picked = [i for i, n in enumerate(node_of) if n in members]
            sub = rows.iloc[picked]
            merged: dict[_Key, str] = {}
            carriers: dict[_Key, set[str]] = {}
            for i in picked:
                for k, v in labels[i].items():
                    _merge(merged, k, v)
                    carriers.setdefault(k, set()).add(methods[i] if k.scope == _METHOD else where[i])
            notes = sorted({text for (k, tag), text in details.items()
                            if merged.get(k) == tag.partition("|")[0]
                            and tag.partition("|")[2] in carriers.get(k, ())})
            order = tuple((_SCOPE_ORDER[k.scope], k.name, _natural(merged[k].removeprefix(AT_LEAST)))
                          for k in sorted(merged, key=lambda k: (_SCOPE_ORDER[k.scope], k.name)))
            groups.append(ConfigGroup(sub, _heading(merged, sub, carriers, name), notes, order))
        groups.sort(key=lambda g: g.order)
        if len(groups) == 1:  # labels that vary but agree (native sizes): one configuration after all
            groups = [ConfigGroup(df)]
    for group in groups:
        _check_no_repeats(group.rows, axis)
    return groups


def _check_no_repeats(rows: pd.DataFrame, axis: set[str]) -> None:
    """Two rows of one configuration for the same cell and seed: nothing recorded tells them apart."""
    cell = [c for c in ("dataset", "category", "method", "seed") if c in rows]
    if len(cell) < 4:
        return
    setting = rows["setting"].map(lambda s: _canonical({k: v for k, v in s.items() if k in axis})
                                  if isinstance(s, dict) else "") if "setting" in rows else ""
    params = rows["params"].map(lambda p: _canonical({k: v for k, v in p.items() if k in axis})
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
