"""The run manifest next to the store: one file per invocation, the latest as run_manifest.json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fsad_bench import __version__
from fsad_bench.cli import main
from fsad_bench.runner import manifest as manifest_mod
from fsad_bench.runner.manifest import git_revision, method_configs


def _run(data_root: Path, out: Path, *extra: str) -> int:
    return main(["run", "--methods", "toy_detectors:Brightness,toy_detectors:AlwaysFails", "--datasets",
                 "brainmri", "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0,1",
                 "--set", "power=2", "--out", str(out), "--no-progress", *extra])


def test_manifest_records_command_specs_versions_hardware_and_counts(data_root, tmp_path):
    out = tmp_path / "out"
    assert _run(data_root, out) == 1  # AlwaysFails fails: exit 1, manifest still complete
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["argv"][:2] == ["fsad-bench", "run"] and "power=2" in m["argv"]
    assert m["status"] == "finished" and m["start_time"] <= m["end_time"]
    assert m["spec"]["name"] == "q1" and m["spec"]["settings"] == {"n_anomaly": [10]}
    assert m["budget"] == "smoke" and m["datasets"] == ["brainmri"] and m["seeds"] == [0, 1]
    assert m["methods"]["toy_detectors:Brightness"] == [{"img_size": 32, "params": {"power": 2.0}}]
    assert m["n_cells"] == 4 and m["already_finished"] == 0 and m["to_run"] == 4
    assert m["summary"] == {"total": 4, "already_finished": 0, "ok": 2, "failed": 2, "not_applicable": 0,
                            "flagged": 0, "not_run": 0, "worker_deaths": 0, "stopped": "", "error": ""}
    assert m["execution"]["executor"] == "local" and m["execution"]["devices"] == ["cpu"]
    assert m["execution"]["jobs"] == 1 and m["execution"]["cells_per_gpu"] == 1
    v = m["versions"]
    assert v["fsad-bench"] == __version__ and v["python"].count(".") == 2
    for pkg in ("torch", "torchvision", "numpy", "scikit-learn", "dask", "distributed"):
        assert v[pkg], pkg
    hw = m["hardware"]
    assert hw["cpu_count"] >= 1 and hw["platform"] and hw["cpu"] and isinstance(hw["gpus"], list)
    assert m["hostname"] and set(m["git"]) == {"commit", "dirty"}
    runs = sorted((out / "manifests").glob("run-*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text()) == m


def test_each_invocation_keeps_its_own_manifest(data_root, tmp_path):
    out = tmp_path / "out"
    _run(data_root, out)
    _run(data_root, out)
    runs = sorted((out / "manifests").glob("run-*.json"))
    assert len(runs) == 2
    first, second = (json.loads(p.read_text()) for p in runs)
    assert first["already_finished"] == 0 and second["already_finished"] == 2  # the ok cells
    assert json.loads((out / "run_manifest.json").read_text())["start_time"] == second["start_time"]
    assert second["summary"]["failed"] == 2  # the failed cells were retried


def test_manifest_of_a_run_that_breaks_off_says_so(data_root, tmp_path, monkeypatch):
    def boom(self, cells):
        raise KeyboardInterrupt
        yield  # pragma: no cover

    monkeypatch.setattr("fsad_bench.runner.executors.Execution.results", boom)
    assert _run(data_root, tmp_path / "out") == 130
    m = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert m["status"] == "error" and m["summary"]["error"] == "KeyboardInterrupt"
    assert m["summary"]["not_run"] == 4


def test_git_revision_of_a_checkout_and_outside_one(tmp_path):
    repo = Path(manifest_mod.__file__).resolve().parents[2]
    rev = git_revision()
    if (repo / ".git").exists():
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert rev["commit"] == head and isinstance(rev["dirty"], bool)
    pkg = tmp_path / "site-packages" / "fsad_bench"
    pkg.mkdir(parents=True)
    assert git_revision(pkg) == {"commit": "unknown", "dirty": None}


def test_method_configs_lists_swept_values(data_root):
    from fsad_bench.runner.job import Cell

    cells = [Cell("k", "q1", "d", "c", "devnet", s, {"topk_ratio": r}, "quick", 64, {"topk_ratio": r})
             for r in (0.1, 0.2) for s in (0, 1)]
    assert method_configs(cells) == {"devnet": [{"img_size": 64, "params": {"topk_ratio": 0.1}},
                                                {"img_size": 64, "params": {"topk_ratio": 0.2}}]}



def test_same_millisecond_gets_a_suffix_not_an_overwrite(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from fsad_bench.protocol import load_protocol
    from fsad_bench.runner.manifest import RunManifest

    fixed = datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)
    monkeypatch.setattr(manifest_mod, "_now", lambda: fixed)
    paths = [RunManifest(tmp_path, ["fsad-bench", "run", str(i)], load_protocol("q1"), [], "smoke").write()
             for i in range(2)]
    assert [p.name for p in paths] == ["run-20300102T030405.006Z.json", "run-20300102T030405.006Z-1.json"]
    assert [json.loads(p.read_text())["argv"][-1] for p in paths] == ["0", "1"]
