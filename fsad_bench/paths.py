"""Where data, caches and results live, in the documented order of precedence."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "fsad-bench"


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Root holding one folder per real dataset: ``--data-root``, then ``$FSAD_DATA``, then the
    per-user data folder (e.g. ``~/.local/share/fsad-bench/data`` on Linux)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("FSAD_DATA"):
        return Path(os.environ["FSAD_DATA"]).expanduser()
    return Path(platformdirs.user_data_dir(APP)) / "data"


def cache_dir() -> Path:
    """Decoded-image caches and the generated ``synthetic`` dataset: ``$FSAD_CACHE`` or the per-user
    cache folder (e.g. ``~/.cache/fsad-bench``)."""
    if os.environ.get("FSAD_CACHE"):
        return Path(os.environ["FSAD_CACHE"]).expanduser()
    return Path(platformdirs.user_cache_dir(APP))


def default_results_dir(protocol: str) -> Path:
    """Default ``--out``: ``results/<protocol>`` under the current directory."""
    return Path("results") / protocol
