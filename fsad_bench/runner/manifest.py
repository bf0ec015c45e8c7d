"""The run manifest: what one ``fsad-bench run`` was asked, resolved and ran on.

Each invocation writes ``DIR/manifests/run-<UTC start, ms>.json`` (never overwritten: a second run
in the same millisecond gets a suffix) and copies it to ``DIR/run_manifest.json`` (the latest run). It is
written when the executor is ready (so a killed driver still leaves one, with ``status`` "running")
and rewritten at the end with the summary counts.

Every write goes to a temporary file that is then renamed into place (the first one is linked to
its new name, which also claims the name exclusively), so a full disk or a killed driver never leaves
a truncated manifest and a failed write leaves the previous one intact. A write that fails is a
one-line error (exit 2).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from fsad_bench import __version__
from fsad_bench.errors import UserError
from fsad_bench.protocol import ProtocolSpec
from fsad_bench.runner.job import Cell
from fsad_bench.store import CellResult

MANIFEST_DIR = "manifests"
LATEST = "run_manifest.json"
PACKAGES = ("fsad-bench", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas", "pillow",
            "scikit-image", "dask", "distributed", "dask-jobqueue")


@dataclass
class RunSummary:
    """The counts of one run, written into its manifest and printed by ``fsad-bench run``."""

    total: int = 0
    skipped: int = 0
    ok: int = 0
    failed: list[CellResult] = field(default_factory=list)
    not_applicable: list[CellResult] = field(default_factory=list)
    flagged: list[CellResult] = field(default_factory=list)  # ran ok, but suspect (e.g. diverged)
    not_run: int = 0          # cells left for the next run when the executor gave up
    worker_deaths: int = 0    # cells whose worker process died under them (stored as failed)
    stopped: str = ""         # why the run stopped before the end ("" = it did not)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def package_versions() -> dict[str, str | None]:
    """Python and the installed versions of the packages that can change a result (None = absent)."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["fsad-bench"] = __version__  # the imported code, even when an older copy is installed
    return out


def git_revision(package_dir: Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout holding this package, or commit "unknown" (installed
    from a wheel, no git). Dirty = tracked files differ from HEAD (untracked results do not count)."""
    pkg = (package_dir or Path(__file__).resolve().parents[1]).resolve()
    unknown = {"commit": "unknown", "dirty": None}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(pkg), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if top / pkg.name != pkg:  # a site-packages copy that happens to live inside some other repo
            return unknown
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return unknown


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def hardware() -> dict[str, Any]:
    """The driver's machine (cluster workers are listed under ``execution``)."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(), "ram_gb": _ram_gb(), "gpus": gpus,
            "cuda": torch.version.cuda, "hostname": socket.gethostname()}


def method_configs(cells: list[Cell]) -> dict[str, list[dict[str, Any]]]:
    """Per method, its distinct resolved (image size, hyper-parameters); more than one only where the
    protocol sweeps a hyper-parameter (ksweep's topk_ratio)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        conf = {"img_size": cell.img_size, "params": cell.params}
        if conf not in out.setdefault(cell.method, []):
            out[cell.method].append(conf)
    return out


def cell_settings(cells: list[Cell]) -> dict[str, list[Any]]:
    """Each setting key of the cells with its values, in grid order: ``{"n_anomaly": [7]}``."""
    out: dict[str, list[Any]] = {}
    for cell in cells:
        for key, value in cell.setting.items():
            if value not in out.setdefault(key, []):
                out[key].append(value)
    return dict(sorted(out.items()))


def provenance(cells: list[Cell]) -> dict[str, Any]:
    """The data fingerprint of each category and the identity of each detector in the grid."""
    data = {f"{c.dataset}/{c.category}": c.data_fingerprint for c in cells if c.data_fingerprint}
    detectors = {c.method: c.detector_identity for c in cells if c.detector_identity}
    return {"data_fingerprints": dict(sorted(data.items())), "detectors": dict(sorted(detectors.items()))}


class RunManifest:
    """Collects the manifest of one invocation and writes it (see the module docstring)."""

    def __init__(self, folder: str | Path, argv: list[str], spec: ProtocolSpec, cells: list[Cell],
                 budget: str) -> None:
        self.folder = Path(folder)
        self.started = _now()
        self.path: Path | None = None
        self.data: dict[str, Any] = {
            "argv": list(argv),
            "status": "running",
            "start_time": self.started.isoformat(timespec="seconds"),
            "end_time": None,
            # the resolved protocol spec (report.document skips "spec*")
            "spec": spec.stored(),
            "budget": budget,
            "methods": method_configs(cells),
            "datasets": sorted({c.dataset for c in cells}),
            "seeds": sorted({c.seed for c in cells}),
            # the settings the cells run with: the spec's, or what --set gave instead (the "spec" above
            # is the protocol as written)
            "settings": cell_settings(cells),
            "n_cells": len(cells),
            **provenance(cells),
            "versions": package_versions(),
            "git": git_revision(),
            "hardware": hardware(),
            "hostname": socket.gethostname(),
        }

    def start(self, execution: dict[str, Any], summary: RunSummary) -> Path:
        self.data["execution"] = execution
        self.data["already_finished"] = summary.skipped
        self.data["to_run"] = summary.total - summary.skipped
        return self.write()

    def finish(self, summary: RunSummary, error: str = "") -> Path:
        self.data["end_time"] = _now().isoformat(timespec="seconds")
        self.data["wall_s"] = round((_now() - self.started).total_seconds(), 1)
        self.data["status"] = "error" if error else "stopped" if summary.stopped else "finished"
        self.data["summary"] = {
            "total": summary.total, "already_finished": summary.skipped, "ok": summary.ok,
            "failed": len(summary.failed), "not_applicable": len(summary.not_applicable),
            "flagged": len(summary.flagged),
            "not_run": summary.not_run, "worker_deaths": summary.worker_deaths,
            "stopped": summary.stopped, "error": error,
        }
        return self.write()

    def write(self) -> Path:
        folder = self.folder / MANIFEST_DIR
        text = json.dumps(self.data, indent=2, sort_keys=False, default=str) + "\n"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if self.path is None:  # claim a name no other invocation has (exclusive create)
                # milliseconds: names sort in start order, and two runs rarely share one
                stamp = self.started.strftime("%Y%m%dT%H%M%S.") + f"{self.started.microsecond // 1000:03d}Z"
                for n in range(1000):
                    path = folder / (f"run-{stamp}.json" if n == 0 else f"run-{stamp}-{n}.json")
                    if _atomic_create(path, text):
                        self.path = path
                        break
                else:  # pragma: no cover
                    raise RuntimeError(f"no free manifest name in {folder}")
            else:
                _atomic_write(self.path, text)
            _atomic_write(self.folder / LATEST, text)
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise UserError(f"cannot write the run manifest in {folder}: {exc.strerror or exc}"
                            + ("; free disk space and rerun (cells already stored are kept)" if full else
                               "; check that the results folder is writable")) from None
        return self.path


def _write_temp(path: Path, text: str) -> Path:
    """``text`` in a new temporary file next to ``path`` (removed again if the write fails)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _atomic_write(path: Path, text: str) -> None:
    # a driver killed while writing, or a full disk, must not leave half a JSON file behind
    tmp = _write_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_create(path: Path, text: str) -> bool:
    """Write ``path`` completely or not at all, only if it does not exist; False if it exists."""
    if path.exists():
        return False
    tmp = _write_temp(path, text)
    try:
        os.link(tmp, path)  # atomic, and fails if another invocation took the name meanwhile
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: claim the name, then replace the placeholder
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        os.replace(tmp, path)
        tmp = None  # type: ignore[assignment]
        return True
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
