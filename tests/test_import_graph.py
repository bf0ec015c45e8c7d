"""The import graph of fsad_bench: no cycles (module-level and function-level imports alike), the
report package stands below the runner, the CLI and the benchmark, and the core imports no method
package and names no built-in method outside its comments and docstrings: our methods are plugins."""

from __future__ import annotations

import ast
from pathlib import Path

import fsad_bench

ROOT = Path(fsad_bench.__file__).parent
REPORT = "fsad_bench.report"
ABOVE_REPORT = ("fsad_bench.runner", "fsad_bench.cli", "fsad_bench.bench")
BUILT_IN_METHODS = ("devnet", "flos", "kdad", "dsvdd", "deepsad", "minns")
METHOD_PACKAGES = ("fsad_methods",)


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
    assert _docstrings(ast.parse('"""doc"""\nx = "devnet"')) and METHOD_PACKAGES
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


def test_the_report_reads_only_the_store():
    """No report module imports the detector registry (or anything that does) or loads a protocol by
    name: what a report shows comes from the results store (fsad_bench.store's self-description)."""
    report = [m for m in GRAPH if m.startswith(REPORT + ".")]
    for module in report:
        reached = _closure(module)
        assert "fsad_bench.detectors.registry" not in reached, module
        assert "fsad_bench.upgrade" not in reached, module
        names = {n.id if isinstance(n, ast.Name) else n.attr
                 for n in ast.walk(ast.parse(MODULES[module].read_text()))
                 if isinstance(n, (ast.Name, ast.Attribute))}
        assert not names & {"load_protocol", "packaged_protocols", "load_detector"}, module


def _imported_names(path: Path) -> set[str]:
    """Every module name ``path`` imports, inside or outside fsad_bench, at any level of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_no_core_module_imports_a_method_package():
    assert len(MODULES) > 40
    for module, path in MODULES.items():
        hits = sorted(n for n in _imported_names(path) if n.split(".")[0] in METHOD_PACKAGES)
        assert not hits, f"{module} imports {hits}"


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_core_code_names_no_built_in_method():
    """Strings of the core's code (not its docstrings or comments) name no built-in method: the core
    knows methods only through the registry and what they declare."""
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                hits = [m for m in BUILT_IN_METHODS if m in node.value.lower()]
                assert not hits, f"{module}:{node.lineno} names {hits} in {node.value[:60]!r}"
