"""``run --dry-run``: the grid's counts, what the store holds, an estimated time; nothing runs or is
written."""

from __future__ import annotations

import os

import fsad_bench
from fsad_bench.cli import main
from fsad_bench.detectors.registry import load_detector


def dry(data_root, out, *extra: str, methods: str = "toy_detectors:Brightness,devnet", seeds: str = "0,1"):
    return main(["run", "--methods", methods, "--datasets", "brainmri,synthetic", "--data-root",
                 str(data_root), "--budget", "smoke", "--seeds", seeds, "--out", str(out), "--dry-run",
                 *extra])


def table_row(text: str, first: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first} "))
    return [c.strip() for c in line.strip("|").split("|")]


def snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_dry_run_prints_the_grid_and_writes_nothing(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert dry(data_root, out) == 0
    text = capsys.readouterr().out
    # brainmri: 1 category, synthetic: 3; 2 methods x 2 seeds
    assert table_row(text, "cells") == ["cells", "categories", "toy_detectors:Brightness", "devnet", "total"]
    assert table_row(text, "brainmri") == ["brainmri", "1", "2", "2", "4"]
    assert table_row(text, "synthetic") == ["synthetic", "3", "6", "6", "12"]
    assert table_row(text, "total") == ["total", "", "8", "8", "16"]
    assert "seeds: 0, 1; settings (1): n_anomaly=10" in text
    assert "in the store: 0 finished, 0 not applicable, 0 failed (rerun); to run: 16" in text
    assert "unknown for toy_detectors:Brightness" in text  # no default, nothing finished
    default = load_detector("devnet").seconds_per_cell["smoke"]
    assert f"devnet on brainmri: {default:.1f} s per cell (default measured" in text
    assert not out.exists()


def test_dry_run_counts_finished_cells_and_estimates_from_them_read_only(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--methods", "toy_detectors:Brightness", "--datasets", "brainmri", "--data-root",
                 str(data_root), "--budget", "smoke", "--seeds", "0", "--out", str(out),
                 "--no-progress"]) == 0
    stored = fsad_bench.load_results(out)
    before = snapshot(out)
    capsys.readouterr()
    assert dry(data_root, out, methods="toy_detectors:Brightness", seeds="0,1,2") == 0
    text = capsys.readouterr().out
    assert "in the store: 1 finished, 0 not applicable, 0 failed (rerun); to run: 11" in text
    assert (f"toy_detectors:Brightness on brainmri: {stored.wall_s[0]:.1f} s per cell (median of 1 finished "
            "cell(s) on brainmri in this store)") in text
    assert "toy_detectors:Brightness on synthetic" in text  # another dataset: any dataset's cells
    assert "median of 1 finished cell(s) in this store" in text
    assert snapshot(out) == before and len(os.listdir(out / "manifests")) == 1  # no new manifest


def test_api_dry_run_returns_the_grid_with_states(data_root, tmp_path):
    out = tmp_path / "out"
    fsad_bench.run(methods=["toy_detectors:Brightness"], datasets=["brainmri"], seeds=[0], budget="smoke",
                   data_root=data_root, out=out, progress=False)
    plan = fsad_bench.run(methods=["toy_detectors:Brightness"], datasets=["brainmri"], seeds=[0, 1],
                          budget="smoke", data_root=data_root, out=out, dry_run=True)
    assert list(plan.sort_values("seed").status) == ["ok", "to run"] and plan.attrs["to_run"] == 1
    assert len(fsad_bench.load_results(out)) == 1
