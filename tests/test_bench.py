"""``fsad-bench bench``: it runs every q1 method and the reference pipeline at the smoke budget,
prints the table and writes JSON; its step accounting and projections are checked on their own.
No speed is asserted (noisy shared cores)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fsad_bench import bench
from fsad_bench.cli import main
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError


def test_bench_command_all_methods_with_reference_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--budgets", "smoke", "--steps", "2", "--eval-images", "8", "--device", "cpu",
                 "--ref-workers", "0", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "train img/s" in text and "reference (0 workers)" in text and bench.NA_CPU in text
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["method"] for r in rows] == list(bench.Q1_METHODS) + ["devnet"]
    for r in rows:
        assert r["train_img_s"] > 0 and r["eval_img_s"] > 0 and math.isfinite(r["peak_mem_mb"])
        assert r["mem_kind"].startswith("CPU RSS growth")
    ours = {r["method"]: r for r in rows if r["pipeline"] == "ours"}
    assert ours["devnet"]["train_ratio"] > 0 and ours["devnet"]["roofline"] == bench.NA_CPU
    assert [p["steps"] for p in ours["dsvdd"]["phases"]] == [2, 2]  # autoencoder, then one-class
    assert ours["kdad"]["phases"][0]["steps"] >= 2


def test_bench_speed_options_are_applied_where_a_method_has_them(tmp_path):
    s = bench.BenchSettings(methods=["devnet", "kdad"], budgets=["smoke"], steps=1, eval_images=4,
                            device="cpu", channels_last=True, reference=[])
    rows = bench.run_bench(s)
    assert rows[0].channels_last and not rows[0].bf16
    assert not rows[1].channels_last and rows[1].note == "no bf16/channels_last option"
    with pytest.raises(UserError, match="amp_bf16 is supported on CUDA only"):  # see DevNet.CPU_BF16_REFUSED
        bench.run_bench(bench.BenchSettings(methods=["devnet"], budgets=["smoke"], device="cpu",
                                            amp_bf16=True))


def test_bench_rejects_bad_settings():
    with pytest.raises(UserError, match="steps"):
        bench.run_bench(bench.BenchSettings(steps=0, device="cpu"))
    with pytest.raises(UserError, match="reference"):
        bench.run_bench(bench.BenchSettings(methods=["kdad"], reference=["devnet"], device="cpu"))


def test_step_clock_times_each_optimiser_separately_after_warmup():
    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    a, b = torch.optim.SGD([p], lr=0.1), torch.optim.SGD([q], lr=0.1)
    with bench.StepClock("cpu") as clock:
        for _ in range(4):
            p.grad = torch.ones(1)
            a.step()
        for _ in range(3):
            q.grad = torch.ones(1)
            b.step()
    b.step()  # after the block: not recorded
    phases = clock.phases(warmup=1)
    assert [n for n, _ in phases] == [3, 2] and all(t >= 0 for _, t in phases)
    assert [n for n, _ in clock.phases(warmup=2)] == [2, 1]


def _config(method: str, budget: str = "paper"):
    det, size = bench._detector(method, budget, "q1", {})
    return det.config, size


def test_step_accounting_per_method_at_the_paper_budget():
    devnet, size = _config("devnet")
    assert size == 448 and bench.images_per_step(devnet, 250, 240) == [48]
    assert bench.budget_steps(devnet, 250, 240) == [50 * 20]
    assert bench.step_overrides(devnet, 3, 192) == {"epochs": 1, "steps_per_epoch": 3}
    dsvdd, _ = _config("dsvdd")
    assert bench.images_per_step(dsvdd, 250, 240) == [200, 200]
    assert bench.budget_steps(dsvdd, 250, 240) == [350 * 2, 150 * 2]
    deepsad, _ = _config("deepsad")
    assert bench.images_per_step(deepsad, 250, 240) == [128]
    assert bench.budget_steps(deepsad, 250, 240) == [150 * 2]
    kdad, _ = _config("kdad")
    assert bench.budget_steps(kdad, 250, 240) == [601 * 4]
    over = bench.step_overrides(kdad, 2, 192)
    assert over["max_steps"] == 192 // 64 + 1  # past one epoch: the teacher cache is in use
    assert bench.step_overrides(_config("kdad", "quick")[0], 20, 192)["max_steps"] == 20


def test_training_flops_formula_and_table2_projection():
    devnet, size = _config("devnet")
    assert bench.train_flops_per_image("devnet", devnet, 224) == pytest.approx(3 * 2 * 1.82e9 * 1.25)
    assert bench.train_flops_per_image("devnet", devnet, 448) == pytest.approx(4 * 3 * 2 * 1.82e9 * 1.25)
    assert bench.train_flops_per_image("minns", _config("minns")[0], 224) == pytest.approx(3 * 2 * 1.82e9)
    assert bench.train_flops_per_image("kdad", _config("kdad")[0], 128) is None
    assert bench.train_flops_per_image("devnet", _config("devnet", "quick")[0], 64) is None  # narrow net
    rows = [bench.BenchRow(m, "paper", "ours", "cuda", 448, "resnet18", "48", False, False, 1.0, 1.0, 0.0,
                           "", 1.0, cell_min=2.0) for m in bench.Q1_METHODS[:-1]]
    hours, missing = bench.project_table2_hours(rows)
    assert missing == ["devnet"] and hours == pytest.approx(5 * 2.0 * 23 * 3 / 60)


def test_reference_pipeline_parts_work_like_the_authors():
    labels = np.r_[np.zeros(30, int), np.ones(4, int)]
    sampler = bench.BalancedEpochSampler(labels, 8, steps_per_epoch=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 and len(list(sampler)) == 5  # fresh epoch each iteration
    assert all(sum(labels[i] for i in b) == 4 and len(b) == 8 for b in batches)
    assert load_detector("devnet").Config().rotation == 180.0  # the reference's RandomRotation(180)


def test_reference_file_dataset_decodes_and_normalises(tmp_path):
    from PIL import Image

    img = bench.texture_images(1, 40)[0]
    Image.fromarray(img).save(tmp_path / "a.png")
    ds = bench.FileDataset([str(tmp_path / "a.png")], np.zeros(1, int), 32, rotation=0.0)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    assert -2.2 < float(x.min()) and float(x.max()) < 2.7  # ImageNet-normalised
