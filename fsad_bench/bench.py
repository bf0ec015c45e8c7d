"""``fsad-bench bench``: DevNet training / evaluation throughput per budget, and the default grid's
wall time. A benchmark prints figures; it asserts nothing (speed targets never live in tests)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from tabulate import tabulate

from fsad_bench.models.devnet import DevNet
from fsad_bench.models.training import (
    BalancedBatches,
    augment_and_normalise,
    predict,
    seed_everything,
    to_uint8_tensor,
)
from fsad_bench.protocol import load_protocol
from fsad_bench.runner.runner import resolve_device


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def devnet_throughput(budget_name: str, steps: int, device: str) -> dict:
    """Training images/s (full step: gather, rotate, fwd, bwd, Adam) and evaluation images/s."""
    budget = load_protocol("q1").budget(budget_name)
    params = budget.method_params("devnet")
    size = int(params.pop("img_size", budget.img_size))
    params["weights"] = "none"  # throughput does not depend on the weights' values
    det = DevNet(DevNet.config_from_params(params))
    c = det.config
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (max(2 * c.batch_size, 64), size, size, 3), dtype=np.uint8)
    labels = np.r_[np.zeros(len(images) - 10, int), np.ones(10, int)]
    seed_everything(0)
    det.device = device
    net = det.build_network().to(device)
    det._ref_gen = torch.Generator(device=device).manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=c.lr)
    gpu_images = to_uint8_tensor(images, device)
    batches = BalancedBatches(labels, c.batch_size, 0)
    gen = torch.Generator(device=device).manual_seed(0)
    lab = torch.as_tensor(labels, device=device)
    net.train()

    def step() -> None:
        idx = torch.as_tensor(batches.next(), device=device)
        loss = det.loss(net(augment_and_normalise(gpu_images[idx], c.rotation, gen)), lab[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    train_s = time.perf_counter() - t0
    det.network = net
    n_eval = max(c.eval_batch_size * 2, 64)
    eval_images = images[np.arange(n_eval) % len(images)]
    predict(net, eval_images[: c.eval_batch_size], device, c.eval_batch_size)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    predict(net, eval_images, device, c.eval_batch_size)
    _sync(device)
    eval_s = time.perf_counter() - t0
    return {"budget": budget_name, "device": device, "img_size": size, "backbone": c.backbone,
            "batch": c.batch_size, "train img/s": steps * c.batch_size / train_s,
            "eval img/s": n_eval / eval_s, "s/step": train_s / steps,
            "budget train time (min)": c.epochs * c.steps_per_epoch * train_s / steps / 60}


def time_default_grid() -> float:
    """Wall time of 'fsad-bench run --protocol q1 --methods all' into a fresh folder."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fsad_bench.cli", "run", "--protocol", "q1",
                               "--methods", "all", "--out", out, "--no-progress"])
        wall = time.perf_counter() - t0
        subprocess.run([sys.executable, "-m", "fsad_bench.cli", "report", out])
    if proc.returncode:
        print(f"default grid exited {proc.returncode}")
    return wall


def run_bench(budgets: list[str], steps: int, device: str, grid: bool) -> None:
    dev = resolve_device(device)[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}")
    rows = [devnet_throughput(b, steps, dev) for b in budgets]
    print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="github"))
    if grid:
        print(f"default grid wall time: {time_default_grid():.1f} s")
