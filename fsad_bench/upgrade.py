"""Describing what a results store does not describe itself: folders written by fsad-bench 0.1, and
long-form CSVs, which have no store.

A report reads how to show a folder from its store (``protocols`` and ``methods``, written at run
time). A store written before those tables existed is described here once, the way the version that
wrote it showed it: a protocol by the packaged spec of that name (one that is not packaged: Table 2's
layout with q1's column order and reference method, as before), a method by what the installed
detector declares (one that no longer loads: its stored name). When the folder is writable the
description is written into its store, so its later reports no longer depend on what is installed;
a read-only folder is described in memory at each report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from fsad_bench.detectors.base import MethodInfo
from fsad_bench.errors import UserError
from fsad_bench.protocol import ProtocolSpec, load_protocol, packaged_protocols
from fsad_bench.report.presentation import Presentation
from fsad_bench.store import STORE_NAME, ResultStore

#: the packaged spec whose presentation a protocol gets when no spec of its name is packaged
TABLE2_PROTOCOL = "q1"


def spec_of(protocol: str) -> ProtocolSpec:
    """The packaged spec ``protocol``; for any other name, Table 2's presentation titled with it."""
    if protocol in packaged_protocols():
        return load_protocol(protocol)
    table2 = load_protocol(TABLE2_PROTOCOL)
    return table2.model_copy(update={"name": protocol, "title": protocol, "display": {}, "paper_tables": []})


def method_info(method: str) -> MethodInfo:
    """What the installed detector ``method`` declares; its name alone when it does not load."""
    from fsad_bench.detectors.registry import load_detector

    try:
        return load_detector(method).describe(method)
    except UserError:
        return MethodInfo(method)


def presentation_of(protocol: str, methods: Iterable[str] = ()) -> Presentation:
    """The presentation of a protocol, its methods and ``methods`` as installed here (a CSV's)."""
    spec = spec_of(protocol)
    return Presentation(spec, {m: method_info(m) for m in dict.fromkeys([*spec.methods, *methods])})


def describe_old_store(folder: str | Path) -> dict[str, dict[str, dict]] | None:
    """The description of ``folder``'s store with what it lacks filled in (see the module docstring),
    written into the store when the folder is writable (its two description tables and their rows:
    nothing else of the store changes); None when there is no store. A store that is empty or no
    store at all is a StoreError, never described."""
    folder = Path(folder)
    if not (folder / STORE_NAME).exists():
        return None
    with ResultStore(folder, create=False) as store:
        cells = store.dataframe()
        described = store.descriptions()
        protocols = {p: spec_of(p).stored() for p in set(cells.protocol) - set(described["protocols"])}
        methods = {m: asdict(method_info(m)) for m in set(cells.method) - set(described["methods"])}
        if (protocols or methods) and not store.readonly:
            store.describe(protocols, methods)
    return {"protocols": {**described["protocols"], **protocols},
            "methods": {**described["methods"], **methods}}
