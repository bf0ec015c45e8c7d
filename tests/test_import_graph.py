"""The import graph of fsad_bench: no cycles (module-level and function-level imports alike), and the
report package stands below the runner, the CLI and the benchmark; it names no built-in method; the
benchmark (``fsad-bench bench``) imports nothing from the methods package."""

from __future__ import annotations

import ast
from pathlib import Path

import fsad_bench

ROOT = Path(fsad_bench.__file__).parent
REFERENCE_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_pipeline.py"
REPORT = "fsad_bench.report"
ABOVE_REPORT = ("fsad_bench.runner", "fsad_bench.cli", "fsad_bench.bench")
BUILT_IN_METHODS = ("devnet", "flos", "kdad", "dsvdd", "deepsad", "minns")


def _module_name(path: Path) -> str:
    parts = ["fsad_bench", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _resolve(name: str) -> str | None:
    """The fsad_bench module an imported name loads (the longest known prefix), None if external."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every fsad_bench module that ``module`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out |= {_resolve(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = _package(module).split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # 'from pkg import mod' imports the submodule pkg.mod
                out.add(_resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else
                        _resolve(base))
    return out - {None, module}


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge found by depth-first search (empty when the graph is acyclic)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_graph_is_read():
    # the walk sees the report package and both kinds of import (a sanity check on the parser)
    assert {"fsad_bench.report.tables", "fsad_bench.report.layouts", "fsad_bench.cli"} <= set(GRAPH)
    assert "fsad_bench.report.tables" in GRAPH["fsad_bench.report.layouts"]
    assert "fsad_bench.report.document" in GRAPH["fsad_bench.cli"]  # imported inside cmd_report
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_report_imports_nothing_above_it():
    report = [m for m in GRAPH if m == REPORT or m.startswith(REPORT + ".")]
    assert len(report) > 5
    for module in report:
        above = sorted(m for m in _closure(module) if m.startswith(ABOVE_REPORT))
        assert above == [], f"{module} imports (directly or through others) {above}"


def test_report_names_no_built_in_method():
    paths = sorted((ROOT / "report").rglob("*.py"))
    assert len(paths) > 5
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                hits = [m for m in BUILT_IN_METHODS if m in node.value.lower()]
                assert not hits, f"{path.name}:{node.lineno} names {hits} in {node.value[:60]!r}"


def imported_names(path: Path) -> set[str]:
    """Every absolute module name a file imports anywhere (``import a.b``: a.b; ``from a.b import c``:
    a.b and a.b.c), at the top level, in functions and under TYPE_CHECKING alike."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def _names_methods_package(name: str) -> bool:
    return name == "fsad_methods" or name.startswith("fsad_methods.")


def test_bench_imports_nothing_from_the_methods_package():
    """``fsad-bench bench`` times any detector from its declarations: neither bench.py nor any
    fsad_bench module it imports (directly or through others) imports fsad_methods, and bench.py names
    no fsad_methods module in a string (importlib)."""
    # the walk sees such an import where there is one: the reference script outside the core has one
    assert "fsad_methods.training" in imported_names(REFERENCE_SCRIPT)
    bench = "fsad_bench.bench"
    assert {"fsad_bench.detectors.base", "fsad_bench.config"} <= _closure(bench)
    for module in sorted({bench} | _closure(bench)):
        hits = sorted(n for n in imported_names(MODULES[module]) if _names_methods_package(n))
        assert hits == [], f"{module} (imported by {bench}) imports {hits}"
    for node in ast.walk(ast.parse(MODULES[bench].read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert "fsad_methods" not in node.value, f"bench.py:{node.lineno} names {node.value[:60]!r}"
