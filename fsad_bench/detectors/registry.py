"""Finding detectors: the ``fsad_bench.detectors`` entry-point group, or a dotted path.

Our own DevNet and the baselines are registered through the same entry-point group a third-party
package would use (see pyproject.toml), so the plugin path is exercised by our own code.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points

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


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_detectors(warn: bool = True) -> dict[str, type[Detector]]:
    """Every registered detector that imports; a broken plugin is skipped with a warning naming it."""
    found: dict[str, type[Detector]] = {}
    for name, ep in sorted(_entry_points().items()):
        try:
            found[name] = _checked(ep.load(), name)
        except Exception as exc:  # a broken plugin must not take the others down
            if warn:
                warnings.warn(f"detector plugin {name!r} ({ep.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
    return found


def load_detector(name: str) -> type[Detector]:
    """Detector class by entry-point name (e.g. ``devnet``) or dotted path ``pkg.module:Class``."""
    if name in _RUN_DETECTORS:
        return _RUN_DETECTORS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attr.split("."):  # a nested class: Outer.Inner
                obj = getattr(obj, part)
        except Exception as exc:  # ImportError, AttributeError, or an error raised by the module itself
            raise UserError(f"cannot import detector {name!r} in this process: {type(exc).__name__}: {exc}; "
                            "check the dotted path 'package.module:Class' and that the module is on the "
                            "path of every worker") from None
        return _checked(obj, name)
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "(none)"
        raise UserError(f"unknown method {name!r}; known: {known} (or give package.module:Class)")
    try:
        return _checked(eps[name].load(), name)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"detector plugin {name!r} ({eps[name].value}) failed to import: "
                        f"{type(exc).__name__}: {exc}") from None


def _checked(obj: object, name: str) -> type[Detector]:
    if not (isinstance(obj, type) and issubclass(obj, Detector)):
        raise UserError(f"{name!r} is not a fsad_bench Detector subclass")
    if not obj.name:
        obj.name = name.rsplit(":", 1)[-1].lower()
    return obj
