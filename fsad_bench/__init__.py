"""fsad-bench: few-shot image anomaly detection benchmark (DevNet and baselines).

``fsad_bench.run(...)`` and ``fsad_bench.load_results(dir)`` (see :mod:`fsad_bench.api`) are imported
on first use, so ``import fsad_bench`` stays cheap (no torch, no pandas).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_LAZY = {"run": "fsad_bench.api", "load_results": "fsad_bench.api", "Detector": "fsad_bench.detectors.base",
         "TrainSet": "fsad_bench.detectors.base", "UserError": "fsad_bench.errors"}
__all__ = ["Detector", "TrainSet", "UserError", "__version__", "load_results", "run"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'fsad_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
