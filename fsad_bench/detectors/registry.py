"""Finding detectors: the ``fsad_bench.detectors`` entry-point group, or a dotted path.

Our own DevNet and the baselines are registered through the same entry-point group a third-party
package would use (see pyproject.toml), so the plugin path is exercised by our own code.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points

from fsad_bench.detectors.base import Detector
from fsad_bench.errors import UserError

GROUP = "fsad_bench.detectors"


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_detectors() -> dict[str, type[Detector]]:
    """Every registered detector that imports; a broken plugin is skipped with a warning naming it."""
    found: dict[str, type[Detector]] = {}
    for name, ep in sorted(_entry_points().items()):
        try:
            found[name] = _checked(ep.load(), name)
        except Exception as exc:  # a broken plugin must not take the others down
            warnings.warn(f"detector plugin {name!r} ({ep.value}) failed to load: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
    return found


def load_detector(name: str) -> type[Detector]:
    """Detector class by entry-point name (e.g. ``devnet``) or dotted path ``pkg.module:Class``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"cannot load detector {name!r}: {exc}; check the dotted path "
                            "'package.module:Class'") from None
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
