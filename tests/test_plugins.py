"""Plugins: the example package is found through the entry-point group and runs through the CLI;
a broken plugin is reported with a warning and the other detectors still work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fsad_bench.detectors.registry import available_detectors
from fsad_bench.testing import check_detector

EXAMPLE = Path(__file__).parents[1] / "examples" / "fsad_plugin_example"


def register(site: Path, dist: str, entry_points: str) -> None:
    """Register entry points the way an installed package does: a .dist-info folder on the path."""
    info = site / f"{dist}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[fsad_bench.detectors]\n{entry_points}\n")


@pytest.fixture
def example_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    register(site, "fsad_plugin_example", "patchcolour = fsad_plugin_example.detector:PatchColour")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))
    return site


def test_example_plugin_runs_through_the_cli(example_site, data_root, tmp_path):
    assert "patchcolour" in available_detectors()
    # (keeping the session's PYTHONPATH, which hides installed plugins: conftest.pytest_configure)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(example_site), str(EXAMPLE), *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "fsad_bench.cli", "run", "--methods", "patchcolour",
                           "--datasets", "brainmri", "--data-root", str(data_root), "--budget", "smoke",
                           "--seeds", "0,1", "--set", "patchcolour.grid=2", "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = subprocess.run([sys.executable, "-m", "fsad_bench.cli", "report", str(out), "--format", "csv"],
                         capture_output=True, text=True, env=env, timeout=120)
    mean = [line for line in rep.stdout.splitlines() if line.startswith("BrainMRI")][0].split(",")[3]
    assert float(mean) > 0.8  # bright squares shift patch colours


def test_broken_plugin_warns_and_others_still_work(example_site, tmp_path, monkeypatch):
    site = tmp_path / "broken-site"
    register(site, "broken_plugin", "broken = no_such_module_xyz:Detector")
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(RuntimeWarning, match="'broken'.*failed to load"):
        found = available_detectors()
    assert "broken" not in found and "devnet" in found and "patchcolour" in found


def test_example_plugin_passes_the_conformance_checks(example_site):
    from fsad_plugin_example.detector import PatchColour

    report = check_detector(PatchColour, {"grid": 4})
    assert {"auc", "one_class_ignores_anomalies", "deterministic"} <= set(report.passed)
