"""Executors: GPU slot placement (fake device lists), the local pool, dask (LocalCluster) and the
SLURM / PBS job scripts (built without sbatch or qsub)."""

from __future__ import annotations

import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from fsad_bench.cli import main
from fsad_bench.errors import UserError
from fsad_bench.protocol import load_protocol
from fsad_bench.runner import executors
from fsad_bench.runner.executors import (
    ClusterOptions,
    DeviceSlots,
    ExecConfig,
    Execution,
    jobqueue_cluster,
    plan_slots,
    run_cell_on_worker,
)
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.request import RunRequest
from fsad_bench.runner.runner import run_grid
from fsad_bench.store import CellResult, ResultStore


def _cells(data_root, methods=("toy_detectors:Brightness",), seeds=(0, 1, 2, 3)):
    req = RunRequest(methods=list(methods), datasets=["brainmri"], seeds=list(seeds), budget="smoke",
                      data_root=data_root)
    return build_cells(load_protocol("q1"), req)[0]


# --- slot logic with fake devices ----------------------------------------------------------------

def test_slots_round_robin_with_k_cells_per_gpu():
    slots = DeviceSlots(["cuda:0", "cuda:1"], per_device=2)
    assert [slots.acquire() for _ in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", None]
    slots.release("cuda:1")
    assert slots.acquire() == "cuda:1"  # a freed slot is reused, the full GPU is passed over
    assert slots.acquire() is None
    slots.release("cuda:0")
    slots.release("cuda:0")
    assert [slots.acquire(), slots.acquire(), slots.acquire()] == ["cuda:0", "cuda:0", None]
    with pytest.raises(ValueError):
        DeviceSlots(["cuda:0"], 1).release("cuda:0")


def test_slots_never_exceed_k_per_device_in_any_finishing_order():
    rng = random.Random(0)
    slots = DeviceSlots(["cuda:0", "cuda:1", "cuda:2"], per_device=2)
    held, used = [], set()
    for _ in range(2000):
        if held and (rng.random() < 0.5 or slots.busy == slots.total):
            slots.release(held.pop(rng.randrange(len(held))))  # cells finish in random order
        elif (dev := slots.acquire()) is not None:
            held.append(dev)
            used.add(dev)
        assert all(held.count(d) <= 2 for d in slots.devices)
        assert slots.in_use == {d: held.count(d) for d in slots.devices}
    assert used == {"cuda:0", "cuda:1", "cuda:2"}


def test_plan_slots_workers_from_gpus_and_jobs():
    gpus = ["cuda:0", "cuda:1"]
    assert plan_slots(gpus, None, 1).limit == 2
    assert plan_slots(gpus, None, 3).limit == 6          # workers = n_gpus * K by default
    capped = plan_slots(gpus, 3, 2)                      # --jobs caps the total, K still caps a GPU
    assert capped.limit == 3 and [capped.acquire() for _ in range(4)] == ["cuda:0", "cuda:1", "cuda:0", None]
    assert plan_slots(["cpu"], None, 4).limit == 1       # CPU: --jobs slots (default 1), K unused
    assert plan_slots(["cpu"], 3, 1).limit == 3


def _fake_run_cell(log: list, lock: threading.Lock, running: dict):
    def fake(cell, device, threads=None):
        with lock:
            running[device] = running.get(device, 0) + 1
            log.append(dict(running))
        time.sleep(random.uniform(0.005, 0.03))
        with lock:
            running[device] -= 1
        return CellResult(cell.key, cell.protocol, cell.dataset, cell.category, cell.method, cell.seed,
                          cell.setting, cell.budget, cell.img_size, "ok", auc_roc=0.5, device=device)
    return fake


def test_local_pool_places_at_most_k_cells_per_gpu(data_root, monkeypatch):
    """The driver loop with fake GPUs: a thread pool stands in for the processes (no CUDA here)."""
    log, lock, running = [], threading.Lock(), {}
    monkeypatch.setattr(executors, "run_cell", _fake_run_cell(log, lock, running))
    monkeypatch.setattr(Execution, "_new_pool", lambda self: ThreadPoolExecutor(self.workers))
    # --device is checked against this machine's GPUs: pretend it has two
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    ex = Execution(ExecConfig(device="cuda:0,cuda:1", cells_per_gpu=2))
    assert ex.workers == 4
    cells = _cells(data_root, seeds=range(24))
    results = list(ex.results(cells))
    assert sorted(r.key for r in results) == sorted(c.key for c in cells)
    assert max(max(s.values()) for s in log) <= 2
    assert max(sum(s.values()) for s in log) >= 3  # it does run cells side by side
    assert {r.device for r in results} == {"cuda:0", "cuda:1"}
    assert ex.slots.busy == 0


def test_dask_worker_side_slots_cap_cells_per_gpu(data_root, monkeypatch):
    """On dask a worker places its cells itself: 8 threads, 2 fake GPUs, K=2 -> never 3 on a GPU."""
    log, lock, running = [], threading.Lock(), {}
    monkeypatch.setattr(executors, "run_cell", _fake_run_cell(log, lock, running))
    monkeypatch.setattr(executors, "_WORKER_SLOTS", {})
    cells = _cells(data_root, seeds=range(16))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda c: run_cell_on_worker(c, "cuda:0,cuda:1", 2), cells))
    assert len(results) == 16 and max(max(s.values()) for s in log) <= 2
    assert {r.device for r in results} == {"cuda:0", "cuda:1"}


# --- real runs ------------------------------------------------------------------------------------

def _rows(store: ResultStore) -> dict:
    df = store.dataframe()
    return {r.key: (r.status, round(r.auc_roc, 12) if r.status == "ok" else r.error) for r in df.itertuples()}


def test_dask_local_cluster_equals_local_process_pool(data_root, tmp_path):
    from distributed import LocalCluster

    cells = _cells(data_root, methods=("toy_detectors:Brightness", "toy_detectors:AlwaysFails"))
    with ResultStore(tmp_path / "local") as store:
        local = run_grid(cells, store, jobs=2, device="cpu", progress=False)  # spawned worker processes
        expected = _rows(store)
    assert local.ok == 4 and len(local.failed) == 4
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        config = ExecConfig(executor="dask", scheduler=cluster.scheduler_address, device="cpu")
        with ResultStore(tmp_path / "dask") as store:
            remote = run_grid(cells, store, progress=False, execution=config)
            got = _rows(store)
    assert (remote.ok, len(remote.failed), remote.worker_deaths) == (4, 4, 0)
    assert got == expected  # cell for cell: same keys, status and AUC


def test_unreachable_scheduler_is_a_one_line_error(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", "1s")
    rc = main(["run", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9", "--methods",
               "toy_detectors:Brightness", "--datasets", "brainmri", "--data-root", str(data_root),
               "--budget", "smoke", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in err
    assert not (tmp_path / "out" / "results.sqlite").exists()  # the store is not touched


@pytest.mark.parametrize("argv, message", [
    (["--executor", "dask"], "needs --scheduler"),
    (["--scheduler", "tcp://x:1"], "only used with --executor dask"),
    (["--cells-per-gpu", "0"], "--cells-per-gpu must be >= 1"),
    (["--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_execution_options(argv, message, tmp_path, capsys):
    assert main(["run", "--methods", "devnet", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("kind, command", [("slurm", "sbatch"), ("pbs", "qsub")])
def test_batch_executor_without_its_submit_command(kind, command, monkeypatch):
    monkeypatch.setattr(executors.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match=f"'{command}', which is not on PATH"):
        Execution(ExecConfig(executor=kind))


def test_missing_packages_name_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"fsad-bench\[cluster\]"):
        jobqueue_cluster("slurm", ClusterOptions())
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(UserError, match="pip install distributed"):
        Execution(ExecConfig(executor="dask", scheduler="tcp://127.0.0.1:9"))


# --- SLURM / PBS job scripts (no sbatch / qsub needed to build them) ------------------------------

def test_slurm_job_script_has_queue_walltime_and_gres():
    opts = ClusterOptions(queue="gpu-long", account="proj42", gpus_per_job=2, walltime="12:00:00",
                          cores=8, memory="64GB")
    cluster = jobqueue_cluster("slurm", opts, cells_per_gpu=3)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu-long", "#SBATCH -A proj42", "#SBATCH -t 12:00:00", "#SBATCH --gres=gpu:2",
                 "#SBATCH --cpus-per-task=8"):
        assert line in script
    assert "--nthreads 6" in script and "--resources GPU=2" in script  # 2 GPUs x 3 cells each


def test_pbs_job_script_has_queue_walltime_and_ngpus():
    opts = ClusterOptions(queue="gpuq", gpus_per_job=1, walltime="02:30:00", cores=4, memory="16GB")
    cluster = jobqueue_cluster("pbs", opts)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#PBS -q gpuq" in script and "#PBS -l walltime=02:30:00" in script
    assert "#PBS -l select=1:ncpus=4:mem=16GB:ngpus=1" in script
    cpu = jobqueue_cluster("pbs", ClusterOptions(gpus_per_job=0, cores=4))
    try:
        assert "ngpus" not in cpu.job_script() and "--nthreads 4" in cpu.job_script()
    finally:
        cpu.close()
