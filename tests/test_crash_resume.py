"""A driver or a worker process killed with SIGKILL in mid-grid loses no finished cell; the rerun computes
only the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsad_bench.store import ResultStore


@pytest.mark.parametrize("jobs", [[], ["--jobs", "2"]], ids=["in-driver", "2-workers"])
def test_kill_9_then_rerun_recomputes_only_unfinished_cells(jobs, data_root, tmp_path, cli_env):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fsad_bench.cli", "run", "--methods", "toy_detectors:Slow", "--datasets",
           "brainmri", "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0,1,2,3,4,5,6,7",
           "--out", str(out), "--no-progress", *jobs]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done, workers = 0, []
    while time.time() < deadline and done < 3:
        time.sleep(0.2)
        if (out / "results.sqlite").exists():  # a reader: it neither creates nor migrates the live store
            with ResultStore(out, create=False) as store:
                done = len(store.done_keys())
        workers = _worker_pids(proc.pid) or workers
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if jobs:  # orphaned workers notice their driver is gone and exit (no process left behind)
        assert workers
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
    with ResultStore(out) as store:
        before = store.dataframe().set_index("key").finished_at.to_dict()
    assert 3 <= len(before) < 8, "the kill must land in mid-grid"
    rerun = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} already finished" in rerun.stderr
    assert f"{8 - len(before)} cells ran ok" in rerun.stderr
    with ResultStore(out) as store:
        after = store.dataframe().set_index("key")
    assert len(after) == 8 and (after.status == "ok").all()
    for key, stamp in before.items():
        assert after.loc[key, "finished_at"] == stamp  # finished cells neither lost nor recomputed


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie (dead, not yet reaped by init) counts as gone


def _worker_pids(driver: int) -> list[int]:
    """The driver's spawned worker processes (not multiprocessing's resource tracker)."""
    try:
        import psutil

        kids = []
        for p in psutil.Process(driver).children():
            try:
                kids.append((p.pid, " ".join(p.cmdline())))
            except psutil.Error:  # it ended between the listing and the question (a zombie, or gone)
                pass
    except ImportError:  # Linux without psutil
        pids = []
        for task in Path(f"/proc/{driver}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        kids = [(p, Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()) for p in pids]
    return [pid for pid, cmd in kids if "spawn_main" in cmd and "resource_tracker" not in cmd]


def test_worker_killed_mid_grid_loses_no_finished_cell(data_root, tmp_path, cli_env):
    out, n = tmp_path / "out", 10
    cmd = [sys.executable, "-m", "fsad_bench.cli", "run", "--methods", "toy_detectors:Slow", "--datasets",
           "brainmri", "--data-root", str(data_root), "--budget", "smoke", "--seeds",
           ",".join(map(str, range(n))), "--jobs", "2", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, done, workers = time.time() + 120, 0, []
    while time.time() < deadline and (done < 2 or not workers):
        time.sleep(0.1)
        if (out / "results.sqlite").exists():  # a reader: it neither creates nor migrates the live store
            with ResultStore(out, create=False) as store:
                done = len(store.done_keys())
        workers = _worker_pids(proc.pid)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err  # the interrupted cells are stored as failed
    assert "lost their worker process" in err and "rerun the same command" in err
    with ResultStore(out) as store:
        first = store.dataframe().set_index("key")
    ok = first[first.status == "ok"].finished_at.to_dict()
    died = first[first.status == "failed"]
    assert len(died) >= 1 and died.error.str.contains("worker process died").all()
    print(f"first run: {len(ok)} ok, {len(died)} failed with a dead worker")  # shown on failure
    assert len(ok) + len(died) == n and 2 <= len(ok) < n  # the grid went on after the death
    rerun = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{n - len(ok)} cells ran ok, {len(ok)} already finished" in rerun.stderr
    with ResultStore(out) as store:
        after = store.dataframe().set_index("key")
    assert len(after) == n and (after.status == "ok").all()
    for key, stamp in ok.items():
        assert after.loc[key, "finished_at"] == stamp  # finished cells neither lost nor recomputed
