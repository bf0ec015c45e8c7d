"""One registration idiom for everything fsad-bench finds by name (detectors, datasets, split rules,
report layouts): a :class:`Registry`, filled with its ``register`` decorator where a thing is defined
(timm's style), and, for the kinds that plugins extend, from an entry-point group that other
distributions declare in their ``pyproject.toml``.

Names are unique. Registering a name twice in code is an error at import; a name that two
distributions declare is a *clash*, never resolved to either of them (a plugin must not silently
replace a built-in): using it is an error naming both, and ``fsad-bench list`` shows it. A plugin that
raises, or calls ``sys.exit``, while it is imported is named in a warning (``list``) or a one-line
error (when used); it never ends the process.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from fsad_bench.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Registration:
    """One entry point of a group: name, target ``module:attr`` and the distribution providing it."""

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
    """A name declared by more than one distribution."""

    kind: str
    name: str
    registrations: tuple[Registration, ...]
    hint: str = ""  # another way to name the thing, e.g. a detector's 'package.module:Class'

    @property
    def message(self) -> str:
        return (f"{self.kind} name {self.name!r} is registered by "
                f"{' and by '.join(r.label for r in self.registrations)}; uninstall one of these packages"
                + (f", or {self.hint}" if self.hint else ""))


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


class Registry(Generic[T]):
    """Things of one ``kind`` by name (see the module docstring). ``group``: the entry-point group
    plugins declare them in (None: registered in code only); ``check``: turns what an entry point
    loads into a ``T`` (or raises UserError)."""

    def __init__(self, kind: str, group: str | None = None,
                 check: Callable[[Any, str], T] | None = None, clash_hint: str = "") -> None:
        self.kind = kind
        self.group = group
        self.check = check
        self.clash_hint = clash_hint
        self._code: dict[str, T] = {}
        self._cache: tuple | None = None

    # --- registered in code -----------------------------------------------------------------------

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@LAYOUTS.register("table2") class Table2: ...``."""
        def add(obj: T) -> T:
            if name in self._code:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._code[name] = obj
            return obj
        return add

    def __contains__(self, name: object) -> bool:
        """Registered in code or by a distribution; a clashing name counts (using it is the error that
        names both distributions, not "unknown")."""
        if name in self._code:
            return True
        unique, clashes = self.registrations()
        return name in unique or any(c.name == name for c in clashes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        plugins = list(self.registrations()[0]) if self.group else []
        return sorted(set(self._code) | set(plugins))

    def __getitem__(self, name: str) -> T:
        if name in self._code:
            return self._code[name]
        if self.group is not None:
            unique, clashes = self.registrations()
            for clash in clashes:
                if clash.name == name:
                    raise UserError(clash.message)
            if name in unique:
                return self.load(unique[name])
        close = difflib.get_close_matches(name, self.names(), n=1)
        raise UserError(f"unknown {self.kind} {name!r}{f'; did you mean {close[0]!r}?' if close else ''} "
                        f"(known: {', '.join(self.names()) or 'none'})")

    # --- declared by distributions (entry points) -------------------------------------------------

    def registrations(self) -> tuple[dict[str, Registration], list[Clash]]:
        """(unique names, clashing names) of the entry-point group. importlib.metadata lists each
        distribution once (the first on sys.path), so a clash is two *different* distributions
        declaring one name. Cached until sys.path or a declaring distribution's metadata changes."""
        if self.group is None:
            return {}, []
        cached = self._cache
        if cached is not None and cached[0] == _stamp(sys.path) and cached[1] == _stamp(cached[2]):
            return cached[3]
        by_name: dict[str, list[Registration]] = {}
        names: dict[int, tuple[str, str]] = {}
        files: list[str] = []
        for ep in entry_points(group=self.group):
            reg = _registration(ep, names)
            folder = getattr(getattr(ep, "dist", None), "_path", None)
            if folder is not None:
                files += [os.path.join(folder, f) for f in ("METADATA", "PKG-INFO", "entry_points.txt")]
            regs = by_name.setdefault(ep.name, [])
            if all((r.distribution, r.target) != (reg.distribution, reg.target) for r in regs):
                regs.append(reg)
        unique = {n: regs[0] for n, regs in by_name.items() if len(regs) == 1}
        clashes = [Clash(self.kind, n, tuple(sorted(regs, key=lambda r: (r.distribution.lower(), r.target))),
                         self.clash_hint) for n, regs in sorted(by_name.items()) if len(regs) > 1]
        files = sorted(set(files))
        self._cache = (_stamp(sys.path), _stamp(files), files, (unique, clashes))
        return unique, clashes

    def clashes(self) -> list[Clash]:
        return self.registrations()[1]

    def load(self, reg: Registration) -> T:
        """What ``reg`` names, imported and checked; a plugin that fails (or calls sys.exit) while
        imported is a one-line UserError naming it."""
        where = f"{self.kind} plugin {reg.name!r} ({reg.target}, from {reg.distribution})"
        try:
            obj = reg.entry_point.load()
        except SystemExit as exc:  # a plugin must not end the process by calling sys.exit at import
            raise UserError(f"{where} called sys.exit({exc.code!r}) while being imported; fix or uninstall "
                            "it") from None
        except Exception as exc:
            raise UserError(f"{where} failed to import: {type(exc).__name__}: {exc}") from None
        return self.check(obj, reg.name) if self.check else obj

    def plugins(self, warn: bool = True) -> dict[str, T]:
        """Every entry point of the group that loads and whose name does not clash; a broken plugin is
        skipped with a warning naming it (clashes: :meth:`clashes`)."""
        found: dict[str, T] = {}
        for name, reg in sorted(self.registrations()[0].items()):
            try:
                found[name] = self.load(reg)
            except UserError as exc:  # a broken plugin must not take the others down
                if warn:
                    warnings.warn(str(exc).replace("failed to import", "failed to load"), RuntimeWarning,
                                  stacklevel=2)
        return found


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
