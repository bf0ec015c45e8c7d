"""Fingerprints that make a cell's key change whenever its data or its detector's code changes.

**Data.** :func:`content_digest` is a sha256 over (relative path, sha256 of the file's bytes) of every
image and mask of a category, in the index's order (so it also covers which mask belongs to which
image). Re-hashing gigabytes on every run would be slow, so each file's digest is kept in a small
JSON sidecar under the cache folder, keyed by the file's (size, mtime_ns, ctime_ns, inode, device).
The change time cannot be set by a user (``os.utime`` sets it to *now*), so a rewritten file always
gets a new entry, even when its size and modification time are put back. A digest is only cached
when the file's change time is at least :data:`SETTLE_NS` old: kernel timestamps are coarse (a few
ms), and a file rewritten within the same tick as its first hashing could otherwise keep its ctime.

**Detector.** :func:`detector_identity` is the entry-point target (``module:Class``), the owning
distribution and its version, and a sha256 of the source files of the detector: the modules that
define the class and each class of its MRO, and every module they import, directly or through one
another, from those modules' top-level packages (a static walk of the ``import`` statements, so the
digest does not depend on what else the process happens to have imported). The package
``__init__`` files on the way are included. Editing a detector's loss or backbone module therefore
changes the digest; editing an unrelated module of the same package does not.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from fsad_bench.errors import DataError
from fsad_bench.paths import cache_dir

#: a file whose status changed less than this long ago is hashed but its digest is not cached
SETTLE_NS = 2_000_000_000
UNREGISTERED = "unregistered"  # distribution of a detector given as a dotted path outside any package
_CHUNK = 1 << 20


# --- data -----------------------------------------------------------------------------------------

def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _hash_file(path: Path) -> tuple[str, os.stat_result]:
    """(sha256 of the bytes, the stat taken before reading); re-read if the file changed meanwhile."""
    for _ in range(3):
        try:
            before = path.stat()
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
            if _stat_key(path.stat()) == _stat_key(before):
                return h.hexdigest(), before
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}; restore the file or re-prepare "
                            "the dataset") from None
    raise DataError(f"{path} keeps changing while it is read; wait until whatever writes it has finished")


def _sidecar(root: Path) -> Path:
    name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]
    return cache_dir() / "digests" / f"{name}.json"


def file_digests(root: Path, rel_paths: Iterable[str]) -> dict[str, str]:
    """sha256 of each file under ``root`` (paths relative to it), from the sidecar cache when the
    file's status is unchanged since it was hashed, else read and hashed."""
    rel_paths = list(dict.fromkeys(rel_paths))
    sidecar = _sidecar(root)
    try:
        cached = json.loads(sidecar.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        cached = {}  # no cache yet, or an unreadable one: hash everything
    out: dict[str, str] = {}
    todo: list[str] = []
    for rel in rel_paths:
        entry = cached.get(rel)
        try:
            st = (root / rel).stat()
        except OSError as exc:
            raise DataError(f"cannot read {root / rel}: {exc.strerror or exc}; restore the file or "
                            "re-prepare the dataset") from None
        if isinstance(entry, list) and len(entry) == 6 and entry[:5] == _stat_key(st):
            out[rel] = entry[5]
        else:
            todo.append(rel)
    if not todo:
        return out
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL on large buffers
        hashed = list(pool.map(lambda rel: _hash_file(root / rel), todo))
    now = time.time_ns()
    fresh = {}
    for rel, (digest, st) in zip(todo, hashed):
        out[rel] = digest
        if now - st.st_ctime_ns >= SETTLE_NS:
            fresh[rel] = [*_stat_key(st), digest]
    if fresh:
        _write_sidecar(sidecar, root, {**{k: v for k, v in cached.items() if k in out}, **fresh})
    return out


def _write_sidecar(path: Path, root: Path, files: dict[str, list]) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"root": str(root.resolve()), "files": files}))
        os.replace(tmp, path)  # concurrent writers: the last complete file wins
    except OSError:
        # Only a cache: a digest that cannot be saved is computed again next time, never wrong.
        tmp.unlink(missing_ok=True)


def content_digest(root: Path, files: list[str], masks: list[str | None]) -> str:
    """sha256 over (relative path, content digest) of every image and its mask, in index order."""
    digests = file_digests(root, [*files, *(m for m in masks if m)])
    h = hashlib.sha256(b"fsad-content-v1")
    for rel, mask in zip(files, masks):
        h.update(f"\0{rel}\0{digests[rel]}\0{mask or ''}\0{digests[mask] if mask else ''}".encode())
    return h.hexdigest()


# --- detectors ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectorIdentity:
    """Which code a detector name resolved to; part of every cell key and result row."""

    target: str          # entry-point value or dotted path, "module:Class"
    distribution: str    # the installed distribution that provides it, or "unregistered"
    version: str         # that distribution's version ("" when unregistered)
    source_digest: str   # sha256 over the detector's source modules (see the module docstring)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


_PACKAGES: dict[tuple, dict[str, list[str]]] = {}


def _packages_distributions() -> dict[str, list[str]]:
    """importlib.metadata.packages_distributions() (slow: it reads every distribution's file list),
    cached until an entry of sys.path changes (installing or removing a package touches it)."""
    stamp = []
    for entry in sys.path:
        try:
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            stamp.append((entry, None))
    key = tuple(stamp)
    if key not in _PACKAGES:
        _PACKAGES.clear()
        _PACKAGES[key] = metadata.packages_distributions()
    return _PACKAGES[key]


def distribution_of_module(module: str) -> tuple[str, str]:
    """(name, version) of the installed distribution owning ``module``'s top-level package, or
    ("unregistered", "")."""
    top = module.split(".")[0]
    names = _packages_distributions().get(top, [])
    for name in dict.fromkeys(names):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return dist.metadata["Name"] or name, dist.version
    return UNREGISTERED, ""


_PARSED: dict[tuple[str, tuple[int, ...]], list[tuple[str, list[str]]]] = {}


def _imports(path: Path, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names imported from it) of every import statement in the file."""
    st = path.stat()
    memo = (str(path), (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    if memo in _PARSED:
        return _PARSED[memo]
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        tree = ast.Module(body=[], type_ignores=[])  # not Python source (an extension): hashed only
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target:
                found.append((target, [alias.name for alias in node.names if alias.name != "*"]))
    _PARSED[memo] = found
    return found


def _module_file(name: str) -> tuple[Path, bool] | None:
    """(source file, is a package) of an importable module, or None."""
    mod = sys.modules.get(name)
    spec = getattr(mod, "__spec__", None) if mod is not None else None
    if spec is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    path = Path(spec.origin)
    return (path, spec.submodule_search_locations is not None) if path.is_file() else None


def source_modules(cls: type) -> dict[str, Path]:
    """The module files whose code a detector class runs (see the module docstring)."""
    roots = [c.__module__ for c in inspect.getmro(cls) if c.__module__ not in ("builtins", "abc")]
    tops = {name.split(".")[0] for name in roots}
    tops -= set(sys.stdlib_module_names)
    found: dict[str, Path] = {}
    queue = [name for name in roots if name.split(".")[0] in tops]
    while queue:
        name = queue.pop()
        if name in found or name.split(".")[0] not in tops:
            continue
        located = _module_file(name)
        if located is None:
            continue
        path, is_package = located
        found[name] = path
        parts = name.split(".")
        queue += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages' __init__
        for target, names in _imports(path, name, is_package):
            queue.append(target)
            queue += [f"{target}.{n}" for n in names]  # 'from pkg import module'
    return found


def source_digest(cls: type) -> str:
    """sha256 over (module name, sha256 of its file) of :func:`source_modules`."""
    h = hashlib.sha256(b"fsad-source-v1")
    for name, path in sorted(source_modules(cls).items()):
        h.update(f"\0{name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}".encode())
    return h.hexdigest()
