"""A driver killed with SIGKILL in mid-grid loses no finished cell; the rerun computes only the rest."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from fsad_bench.store import ResultStore


def test_kill_9_then_rerun_recomputes_only_unfinished_cells(data_root, tmp_path, cli_env):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fsad_bench.cli", "run", "--methods", "toy_detectors:Slow", "--datasets",
           "brainmri", "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0,1,2,3,4,5,6,7",
           "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and done < 3:
        time.sleep(0.2)
        if (out / "results.sqlite").exists():
            with ResultStore(out) as store:
                done = len(store.done_keys())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
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
