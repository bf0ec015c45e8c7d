"""Where cells run: in the driver, in local worker processes, or on a dask cluster (an existing one at
``--scheduler``, or SLURM / PBS batch jobs started through dask-jobqueue).

Every executor only *computes* cells: results come back to the driver, which is the only writer of
the results store (``runner.run_grid``).

GPU placement
-------------
``DeviceSlots`` hands out devices round-robin and never more than ``cells_per_gpu`` cells per GPU at
once. Locally the driver holds the slots: it submits a cell to the process pool only when a slot is
free and passes the slot's device string to the cell, so the bound holds whatever order cells finish
in. (joblib's unordered generator cannot do this: it decides a cell's arguments when it queues it,
not when a worker takes it, so it cannot pin a free device to each running cell.) Workers are
started with ``spawn``: a forked child of a process that already used torch (threads, CUDA) can hang.

On dask the driver does not know which GPUs each worker has (a SLURM job sees its own
``CUDA_VISIBLE_DEVICES``), so placement happens on the worker: each worker process resolves
``--device`` on its machine and keeps its own ``DeviceSlots``; a cell waits there for a free slot.
How many cells a worker takes at once is its thread count, which ``slurm``/``pbs`` set to
``gpus_per_job * cells_per_gpu`` (a worker you start yourself: ``dask worker ADDRESS --nthreads N``).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from fsad_bench.errors import UserError
from fsad_bench.runner.job import Cell, failed_result, run_cell
from fsad_bench.store import CellResult

EXECUTORS = ("local", "dask", "slurm", "pbs")
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub"}
#: a pool whose workers keep dying is given up after this many restarts (a cell that is killed by
#: the OOM killer every time must not loop forever); the rerun retries what did not finish
MAX_POOL_RESTARTS = 3
CONNECT_TIMEOUT = "15s"  # to an existing dask scheduler
WORKER_DIED = ("worker process died while this cell was running (killed, or out of memory); "
               "rerun the command to retry it")


@dataclass
class ClusterOptions:
    """Batch jobs for ``--executor slurm|pbs`` (one dask worker per job)."""

    queue: str | None = None          # SLURM partition / PBS queue
    account: str | None = None        # project to charge
    gpus_per_job: int = 1             # 0 = CPU-only jobs
    walltime: str = "04:00:00"
    cluster_jobs: int = 1             # how many batch jobs to scale to
    cores: int = 4                    # CPU cores booked per job
    memory: str = "32GB"              # memory booked per job


@dataclass
class ExecConfig:
    """How and where to run the cells of a grid."""

    executor: str = "local"
    jobs: int | None = None           # local worker processes; None = 1 on CPU, n_gpus * cells_per_gpu
    device: str = "auto"
    cells_per_gpu: int = 1
    scheduler: str | None = None      # dask scheduler address (--executor dask)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)

    def validate(self) -> None:
        if self.executor not in EXECUTORS:
            raise UserError(f"unknown --executor {self.executor!r}; choose one of {', '.join(EXECUTORS)}")
        if self.jobs is not None and self.jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {self.jobs}")
        if self.cells_per_gpu < 1:
            raise UserError(f"--cells-per-gpu must be >= 1, got {self.cells_per_gpu}")
        if self.executor == "dask" and not self.scheduler:
            raise UserError("--executor dask needs --scheduler ADDRESS (e.g. tcp://head-node:8786)")
        if self.scheduler and self.executor != "dask":
            raise UserError("--scheduler is only used with --executor dask")
        c = self.cluster
        if c.cluster_jobs < 1 or c.cores < 1 or c.gpus_per_job < 0:
            raise UserError("--cluster-jobs and --cores must be >= 1, --gpus-per-job >= 0")
        check_device(self.device, local=self.executor == "local")


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check_device(device: str, local: bool = True) -> None:
    """``--device`` is auto, cpu, cuda or a comma-separated list of cuda:N; with ``local`` (the cells run
    on this machine) every GPU it names must exist here. On dask each worker resolves it on its own
    machine, so there only the syntax is checked."""
    if device == "auto":
        return
    names = [d.strip() for d in device.split(",") if d.strip()]
    bad = [d for d in names if not _DEVICE.fullmatch(d)]
    if bad or not names:
        raise UserError(f"--device {device!r}: {bad[0] if bad else 'empty'} is no device; use auto, cpu, "
                        "cuda or a list like cuda:0,cuda:1")
    gpus = [d for d in names if d.startswith("cuda")]
    if not local or not gpus:
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError(f"--device {device}: no CUDA GPU is visible here (torch.cuda.is_available() is "
                        "False); use --device cpu or --device auto")
    missing = [d for d in gpus if d != "cuda" and int(d.split(":")[1]) >= count]
    if missing:
        raise UserError(f"--device {device}: there is no {missing[0]}; this machine has {count} CUDA GPU(s): "
                        f"{', '.join(f'cuda:{i}' for i in range(count))}")


def resolve_device(device: str) -> list[str]:
    """Devices to place cells on: 'auto' = every CUDA GPU, else the CPU."""
    import torch

    if device == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    if device == "cuda":
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    return [d.strip() for d in device.split(",") if d.strip()]


def is_accelerator(device: str) -> bool:
    return not device.startswith("cpu")


class DeviceSlots:
    """Round-robin device slots: at most ``capacity[d]`` cells at once on device ``d``, and at most
    ``limit`` in all. Pure bookkeeping (no torch), so tests drive it with fake device lists."""

    def __init__(self, devices: list[str], per_device: int, limit: int | None = None) -> None:
        if not devices or per_device < 1:
            raise ValueError("need at least one device and per_device >= 1")
        self.devices = list(dict.fromkeys(devices))  # "cuda:0,cuda:0" is one device
        self.capacity = {d: per_device for d in self.devices}
        self.limit = min(limit, self.total) if limit else self.total
        self.in_use = {d: 0 for d in self.devices}
        self._next = 0

    @property
    def total(self) -> int:
        return sum(self.capacity.values())

    @property
    def busy(self) -> int:
        return sum(self.in_use.values())

    def acquire(self) -> str | None:
        """The next device (round-robin) with a free slot, or None when every slot is taken."""
        if self.busy >= self.limit:
            return None
        n = len(self.devices)
        for step in range(n):
            dev = self.devices[(self._next + step) % n]
            if self.in_use[dev] < self.capacity[dev]:
                self.in_use[dev] += 1
                self._next = (self._next + step + 1) % n
                return dev
        return None

    def release(self, device: str) -> None:
        if self.in_use.get(device, 0) <= 0:
            raise ValueError(f"release of {device!r}, which holds no slot")
        self.in_use[device] -= 1


def plan_slots(devices: list[str], jobs: int | None, cells_per_gpu: int) -> DeviceSlots:
    """Local slots: each GPU ``cells_per_gpu`` times (``--jobs``, if given, caps the total), or on the
    CPU ``--jobs`` slots (default 1)."""
    if any(is_accelerator(d) for d in devices):
        return DeviceSlots(devices, cells_per_gpu, limit=jobs)
    return DeviceSlots(devices, jobs or 1)


def usable_cores() -> int:
    """Cores this process may use (a batch job's allocation, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def died_result(cell: Cell, device: str, error: str = WORKER_DIED) -> CellResult:
    """A failed row for a cell whose worker vanished; 'failed' rows are retried by the next run."""
    result = failed_result(cell, device, error)
    result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return result


# --- local worker processes -------------------------------------------------------------------

def _watch_parent(parent: int) -> None:
    # A worker whose driver was killed (SIGKILL: no cleanup ran) would otherwise finish its cell and
    # then block on the task queue forever: exit as soon as the driver is gone.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker_init(parent: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


class Execution:
    """Runs cells with one executor; ``info`` describes it (for the manifest), ``stopped`` says why it
    gave up before the end (empty when it did not)."""

    def __init__(self, config: ExecConfig) -> None:
        config.validate()
        self.config = config
        self.stopped = ""
        self.worker_deaths = 0
        self.info: dict[str, Any] = {"executor": config.executor, "cells_per_gpu": config.cells_per_gpu,
                                     "device": config.device}
        self._client: Any = None
        self._cluster: Any = None
        if config.executor == "local":
            self.slots = plan_slots(resolve_device(config.device), config.jobs, config.cells_per_gpu)
            self.workers = self.slots.limit
            self.info.update(devices=self.slots.devices, jobs=self.workers,
                             threads_per_worker=max(1, usable_cores() // self.workers))
        else:
            self._client, self._cluster = _connect(config)
            self.info.update(_describe_cluster(self._client, self._cluster, config))

    def close(self) -> None:
        """Disconnect from the cluster (idempotent); SLURM/PBS jobs this run started are cancelled."""
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def results(self, cells: list[Cell]) -> Iterator[CellResult]:
        if self.config.executor != "local":
            yield from self._dask(cells)
        elif self.workers <= 1 or len(cells) <= 1:
            for cell in cells:  # in the driver: no process start-up cost, tracebacks stay simple
                dev = self.slots.acquire()
                yield run_cell(cell, dev)
                self.slots.release(dev)
        else:
            yield from self._pool(cells)

    def _new_pool(self) -> ProcessPoolExecutor:
        threads = max(1, usable_cores() // self.workers)
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(), threads))

    def _pool(self, cells: list[Cell]) -> Iterator[CellResult]:
        pending = deque(cells)
        running: dict[Future, tuple[Cell, str]] = {}
        restarts = 0
        pool = self._new_pool()
        try:
            while pending or running:
                broken = False
                while pending and not broken and (dev := self.slots.acquire()) is not None:
                    cell = pending.popleft()
                    try:
                        running[pool.submit(run_cell, cell, dev)] = (cell, dev)
                    except BrokenProcessPool:  # a worker died since the last wait
                        pending.appendleft(cell)
                        self.slots.release(dev)
                        broken = True
                if running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        cell, dev = running.pop(fut)
                        self.slots.release(dev)
                        try:
                            yield fut.result()
                        except BrokenProcessPool:
                            # The pool fails every running cell when one worker dies; none of them
                            # finished, so each is stored as failed and the next run retries it.
                            broken = True
                            self.worker_deaths += 1
                            yield died_result(cell, dev)
                if broken and not running:
                    pool.shutdown(wait=True, cancel_futures=True)
                    restarts += 1
                    if restarts > MAX_POOL_RESTARTS:
                        self.stopped = (f"worker processes died {restarts} times; stopped with "
                                        f"{len(pending)} cell(s) not run")
                        return
                    print(f"fsad-bench: a worker process died; restarting the pool "
                          f"({restarts}/{MAX_POOL_RESTARTS})", file=sys.stderr)
                    pool = self._new_pool()
        finally:
            _stop_pool(pool)

    def _dask(self, cells: list[Cell]) -> Iterator[CellResult]:
        from distributed import as_completed

        cfg = self.config
        futures = {self._client.submit(run_cell_on_worker, cell, cfg.device, cfg.cells_per_gpu,
                                       key=f"fsad-cell-{cell.key}", retries=0): cell for cell in cells}
        for fut in as_completed(futures):
            cell = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:  # KilledWorker (its worker died repeatedly), lost connection, ...
                self.worker_deaths += 1
                result = died_result(cell, "", f"dask: {type(exc).__name__}: {exc}; rerun the command "
                                               "to retry it")
            fut.release()
            yield result


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting for running cells (Ctrl-C, or the generator was closed)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public handle to the workers
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()


# --- dask ---------------------------------------------------------------------------------------

_WORKER_SLOTS: dict[tuple[str, int], tuple[DeviceSlots, threading.Condition]] = {}
_WORKER_LOCK = threading.Lock()


def run_cell_on_worker(cell: Cell, device: str, cells_per_gpu: int) -> CellResult:
    """A dask task: take a slot of this worker's devices (waiting for one), run the cell, free it."""
    with _WORKER_LOCK:
        if (device, cells_per_gpu) not in _WORKER_SLOTS:
            devices = resolve_device(device)
            per = cells_per_gpu if any(is_accelerator(d) for d in devices) else 10**6  # CPU: nthreads
            _WORKER_SLOTS[device, cells_per_gpu] = (DeviceSlots(devices, per), threading.Condition())
        slots, cond = _WORKER_SLOTS[device, cells_per_gpu]
    with cond:
        while (dev := slots.acquire()) is None:
            cond.wait()
    try:
        threads = None
        try:
            from distributed import get_worker

            threads = max(1, usable_cores() // get_worker().state.nthreads)
        except (ImportError, ValueError, AttributeError):
            pass
        return run_cell(cell, dev, threads)
    finally:
        with cond:
            slots.release(dev)
            cond.notify()


def _require(module: str, fix: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this executor needs the '{module}' package: {fix}") from None


def jobqueue_cluster(kind: str, opts: ClusterOptions, cells_per_gpu: int = 1) -> Any:
    """An (unscaled) dask-jobqueue SLURMCluster / PBSCluster; building it submits nothing, so its
    ``job_script()`` can be checked on a machine without SLURM or PBS."""
    jq = _require("dask_jobqueue", 'pip install "fsad-bench[cluster]" (or pip install dask-jobqueue)')
    g = opts.gpus_per_job
    # One worker process per job; its threads are the cells it runs at once: each GPU
    # cells_per_gpu times (the worker's own DeviceSlots pins them), or one per core without GPUs.
    nthreads = g * cells_per_gpu if g else opts.cores
    common: dict[str, Any] = dict(queue=opts.queue, account=opts.account, cores=nthreads, processes=1,
                                  memory=opts.memory, walltime=opts.walltime,
                                  worker_extra_args=["--resources", f"GPU={g}"] if g else [])
    if kind == "slurm":
        extra = [f"--gres=gpu:{g}"] if g else []
        return jq.SLURMCluster(**common, job_cpu=opts.cores, job_extra_directives=extra)
    if kind == "pbs":
        spec = f"select=1:ncpus={opts.cores}:mem={opts.memory}" + (f":ngpus={g}" if g else "")
        return jq.PBSCluster(**common, resource_spec=spec)
    raise ValueError(kind)


def _connect(config: ExecConfig) -> tuple[Any, Any]:
    distributed = _require("distributed", "pip install distributed")
    if config.executor == "dask":
        try:
            client = distributed.Client(config.scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"cannot reach the dask scheduler at {config.scheduler} ({exc}); start one "
                            "('dask scheduler' and 'dask worker ADDRESS') or fix --scheduler") from None
        return client, None
    submit = SUBMIT_COMMANDS[config.executor]
    # scale() submits the jobs in the background and only logs a failure, so a machine without the
    # batch system would wait for workers forever: check for the submit command first.
    if shutil.which(submit) is None:
        raise UserError(f"--executor {config.executor} submits jobs with '{submit}', which is not on PATH; "
                        "run the command on a login node of the cluster")
    cluster = jobqueue_cluster(config.executor, config.cluster, config.cells_per_gpu)
    cluster.scale(jobs=config.cluster.cluster_jobs)
    return distributed.Client(cluster), cluster


def _describe_cluster(client: Any, cluster: Any, config: ExecConfig) -> dict[str, Any]:
    workers = client.scheduler_info().get("workers", {})
    out: dict[str, Any] = {
        "scheduler": client.scheduler.address,
        "workers": [{"address": a, "nthreads": w.get("nthreads"), "resources": w.get("resources", {}),
                     "host": w.get("host")} for a, w in workers.items()],
    }
    if cluster is not None:
        out["cluster"] = asdict(config.cluster)
        out["job_script"] = cluster.job_script()
    return out
