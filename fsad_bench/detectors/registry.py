"""Finding detectors: the ``fsad_bench.detectors`` entry-point group, or a dotted path.

Our own DevNet and the baselines are registered through the same entry-point group a third-party
package would use (see pyproject.toml), so the plugin path is exercised by our own code.

A name registered by two distributions is a *clash*: it is never resolved to either of them
(a plugin must not silently replace a built-in), using it is an error naming both, and
``fsad-bench list`` shows it. A plugin that raises, or calls ``sys.exit``, while it is imported is
a broken plugin named in a warning (``list``) or a one-line error (when used); it never ends the
process.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fsad_bench.detectors.base import Detector
from fsad_bench.errors import UserError

GROUP = "fsad_bench.detectors"

#: Detector classes handed to ``fsad_bench.run`` directly, by name and by 'module:Class', while that
#: run lasts (see :func:`registered_for_run`): the driver finds them even when they do not import.
_RUN_DETECTORS: dict[str, type[Detector]] = {}


@contextmanager
def registered_for_run(classes: dict[str, type[Detector]]) -> Iterator[None]:
    """Make ``load_detector(key)`` return ``classes[key]`` in this process until the block ends."""
    _RUN_DETECTORS.update(classes)
    try:
        yield
    finally:
        for key in classes:
            _RUN_DETECTORS.pop(key, None)


@dataclass(frozen=True)
class Registration:
    """One entry point of the group: name, target ``module:Class`` and the distribution providing it."""

    name: str
    target: str
    distribution: str
    version: str
    entry_point: Any = None

    @property
    def label(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"{self.distribution}{version} ({self.target})"


@dataclass(frozen=True)
class Clash:
    """A detector name registered by more than one distribution."""

    name: str
    registrations: tuple[Registration, ...]

    @property
    def message(self) -> str:
        return (f"detector name {self.name!r} is registered by "
                f"{' and by '.join(r.label for r in self.registrations)}; uninstall one of these packages, "
                "or give the detector as package.module:Class")


def _registration(ep: EntryPoint, names: dict[int, tuple[str, str]]) -> Registration:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        if id(dist) not in names:  # parsing METADATA is the slow part: once per distribution
            meta = dist.metadata
            names[id(dist)] = (meta["Name"] or dist.name, meta["Version"] or dist.version)
        name, version = names[id(dist)]
    else:  # an entry point not read from an installed distribution
        from fsad_bench.provenance import distribution_of_module

        name, version = distribution_of_module(ep.value.partition(":")[0])
    return Registration(ep.name, ep.value, name, version, ep)


def _stamp(paths: list[str]) -> tuple:
    """Status of each path; changes when a package is installed or removed (its sys.path folder) or a
    distribution's metadata is rewritten in place."""
    out = []
    for path in paths:
        try:
            st = os.stat(path or ".")
            out.append((path, st.st_mtime_ns, st.st_ctime_ns, st.st_size))
        except OSError:
            out.append((path, None))
    return tuple(out)


_CACHE: dict[str, Any] = {}


def registrations() -> tuple[dict[str, Registration], list[Clash]]:
    """(unique names, clashing names). importlib.metadata lists each distribution once (the first on
    sys.path), so a clash is two *different* distributions registering one name. Cached until sys.path
    or one of the registering distributions' metadata files changes."""
    cached = _CACHE.get("registrations")
    if cached is not None and cached[0] == _stamp(sys.path) and cached[1] == _stamp(cached[2]):
        return cached[3]
    by_name: dict[str, list[Registration]] = {}
    names: dict[int, tuple[str, str]] = {}
    files: list[str] = []
    for ep in entry_points(group=GROUP):
        reg = _registration(ep, names)
        folder = getattr(getattr(ep, "dist", None), "_path", None)
        if folder is not None:
            files += [os.path.join(folder, "METADATA"), os.path.join(folder, "PKG-INFO"),
                      os.path.join(folder, "entry_points.txt")]
        regs = by_name.setdefault(ep.name, [])
        if all((r.distribution, r.target) != (reg.distribution, reg.target) for r in regs):
            regs.append(reg)
    unique = {n: regs[0] for n, regs in by_name.items() if len(regs) == 1}
    clashes = [Clash(n, tuple(sorted(regs, key=lambda r: (r.distribution.lower(), r.target))))
               for n, regs in sorted(by_name.items()) if len(regs) > 1]
    files = sorted(set(files))
    _CACHE["registrations"] = (_stamp(sys.path), _stamp(files), files, (unique, clashes))
    return unique, clashes


def detector_clashes() -> list[Clash]:
    return registrations()[1]


def _load_entry_point(reg: Registration) -> type[Detector]:
    try:
        obj = reg.entry_point.load()
    except SystemExit as exc:  # a plugin must not end the process by calling sys.exit at import
        raise UserError(f"detector plugin {reg.name!r} ({reg.target}, from {reg.distribution}) called "
                        f"sys.exit({exc.code!r}) while being imported; fix or uninstall it") from None
    except Exception as exc:
        raise UserError(f"detector plugin {reg.name!r} ({reg.target}, from {reg.distribution}) failed to "
                        f"import: {type(exc).__name__}: {exc}") from None
    return _checked(obj, reg.name)


def available_detectors(warn: bool = True) -> dict[str, type[Detector]]:
    """Every registered detector that imports and whose name is not clashing; a broken plugin is
    skipped with a warning naming it (clashes: :func:`detector_clashes`)."""
    found: dict[str, type[Detector]] = {}
    unique, _ = registrations()
    for name, reg in sorted(unique.items()):
        try:
            found[name] = _load_entry_point(reg)
        except UserError as exc:  # a broken plugin must not take the others down
            if warn:
                warnings.warn(str(exc).replace("failed to import", "failed to load"), RuntimeWarning,
                              stacklevel=2)
    return found


def _import_dotted(name: str) -> type[Detector]:
    module_name, _, attr = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):  # a nested class: Outer.Inner
            obj = getattr(obj, part)
    except SystemExit as exc:  # a module must not end the process by calling sys.exit at import
        raise UserError(f"cannot import detector {name!r} in this process: module {module_name} called "
                        f"sys.exit({exc.code!r}) while being imported; fix it") from None
    except Exception as exc:  # ImportError, AttributeError, or an error raised by the module itself
        raise UserError(f"cannot import detector {name!r} in this process: {type(exc).__name__}: {exc}; "
                        "check the dotted path 'package.module:Class' and that the module is on the "
                        "path of every worker") from None
    return _checked(obj, name)


def resolve(name: str) -> tuple[type[Detector], Registration]:
    """Detector class and its registration, by entry-point name or dotted path ``pkg.module:Class``
    (or a class handed to this run, :func:`registered_for_run`)."""
    from fsad_bench.provenance import distribution_of_module

    if name in _RUN_DETECTORS:
        cls = _RUN_DETECTORS[name]
        target = f"{cls.__module__}:{cls.__qualname__}"  # what a worker imports it by
        return cls, Registration(name, target, *distribution_of_module(cls.__module__))
    if ":" in name:
        cls = _import_dotted(name)
        dist, version = distribution_of_module(name.partition(":")[0])
        return cls, Registration(name, name, dist, version)
    unique, clashes = registrations()
    for clash in clashes:
        if clash.name == name:
            raise UserError(clash.message)
    if name not in unique:
        known = ", ".join(sorted(unique)) or "(none)"
        raise UserError(f"unknown method {name!r}; known: {known} (or give package.module:Class)")
    return _load_entry_point(unique[name]), unique[name]


def load_detector(name: str) -> type[Detector]:
    """Detector class by entry-point name (e.g. ``devnet``) or dotted path ``pkg.module:Class``."""
    return resolve(name)[0]


def identify_detector(name: str) -> dict[str, str]:
    """Target, distribution, version and source digest of the detector ``name`` resolves to
    (:class:`fsad_bench.provenance.DetectorIdentity` as a dict)."""
    from fsad_bench.provenance import DetectorIdentity, source_digest

    cls, reg = resolve(name)
    return DetectorIdentity(reg.target, reg.distribution, reg.version, source_digest(cls)).as_dict()


def _checked(obj: object, name: str) -> type[Detector]:
    if not (isinstance(obj, type) and issubclass(obj, Detector)):
        raise UserError(f"{name!r} is not a fsad_bench Detector subclass")
    if not obj.name:
        obj.name = name.rsplit(":", 1)[-1].lower()
    return obj
