"""Finding detectors: the ``fsad_bench.detectors`` entry-point group (a :class:`~fsad_bench.registry.
Registry`), or a dotted path ``package.module:Class``.

Our own methods are registered through the same entry-point group a third-party package uses (see
pyproject.toml), so the plugin path is exercised by our own code. Clashes and broken plugins: see
:mod:`fsad_bench.registry`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fsad_bench.detectors.base import Detector
from fsad_bench.errors import UserError
from fsad_bench.registry import Clash, Registration, Registry

GROUP = "fsad_bench.detectors"


def _checked(obj: object, name: str) -> type[Detector]:
    if not (isinstance(obj, type) and issubclass(obj, Detector)):
        raise UserError(f"{name!r} is not a fsad_bench Detector subclass")
    if not obj.name:
        obj.name = name.rsplit(":", 1)[-1].lower()
    return obj


DETECTORS: Registry[type[Detector]] = Registry("detector", GROUP, _checked,
                                               clash_hint="give the detector as package.module:Class")

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


def detector_clashes() -> list[Clash]:
    return DETECTORS.clashes()


def available_detectors(warn: bool = True) -> dict[str, type[Detector]]:
    """Every registered detector that imports and whose name is not clashing; a broken plugin is
    skipped with a warning naming it (clashes: :func:`detector_clashes`)."""
    return DETECTORS.plugins(warn)


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
    unique, clashes = DETECTORS.registrations()
    for clash in clashes:
        if clash.name == name:
            raise UserError(clash.message)
    if name not in unique:
        known = ", ".join(sorted(unique)) or "(none)"
        raise UserError(f"unknown method {name!r}; known: {known} (or give package.module:Class)")
    return DETECTORS.load(unique[name]), unique[name]


def load_detector(name: str) -> type[Detector]:
    """Detector class by entry-point name (e.g. ``devnet``) or dotted path ``pkg.module:Class``."""
    return resolve(name)[0]


def identify_detector(name: str) -> dict[str, str]:
    """Target, distribution, version and source digest of the detector ``name`` resolves to
    (:class:`fsad_bench.provenance.DetectorIdentity` as a dict)."""
    from fsad_bench.provenance import DetectorIdentity, source_digest

    cls, reg = resolve(name)
    return DetectorIdentity(reg.target, reg.distribution, reg.version, source_digest(cls)).as_dict()
