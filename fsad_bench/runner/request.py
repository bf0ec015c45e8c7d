"""The one run request: what ``fsad-bench run`` was asked, whether it came from the command line
(:func:`fsad_bench.cli.run_request`), the Python API (:func:`fsad_bench.run`) or a script calling the
grid generator directly. None means "the protocol's default"."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsad_bench.runner.executors import ExecConfig


@dataclass
class RunRequest:
    protocol: str = "q1"
    #: method names (entry points, 'package.module:Class'); the API also takes Detector classes
    methods: list[Any] | None = None
    datasets: list[str] | None = None
    seeds: list[int] | None = None
    budget: str | None = None
    weights: str | None = None
    overrides: list[str] = field(default_factory=list)  # "key=value" / "method.key=value" (--set)
    data_root: Path | None = None
    out: Path | None = None
    execution: ExecConfig = field(default_factory=ExecConfig)
    progress: bool = True
    mlflow: str | None = None             # tracking URI or path (see tracking.py)
    mlflow_experiment: str | None = None  # default: tracking.default_experiment
    argv: list[str] | None = None         # recorded in the run manifest
    rerun: str = "failed"                 # "all": recompute every cell (runner.RERUN_CHOICES)
