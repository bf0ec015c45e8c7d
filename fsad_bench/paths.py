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


def check_output_dir(folder: str | os.PathLike, option: str = "--out") -> Path:
    """``folder`` if results can be written there (it exists as a writable folder, or can be created under
    its nearest existing parent); else a one-line :class:`UserError` naming it. Creates nothing, so a run
    that stops later for another reason leaves no empty folder behind."""
    from fsad_bench.errors import UserError

    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder; give a folder for the results")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{option} {path}: {probe} is a file, so the folder cannot be created there")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise UserError(f"{option} {path} {where}; choose a writable folder")
    return path
