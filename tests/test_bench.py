"""``fsad-bench bench``: it runs every q1 method at the smoke budget, prints the table and writes JSON;
a detector from outside the package gets the same figures from its own declaration (or, declaring
nothing, its whole fit timed); the step accounting comes from each detector's declaration and is
checked against the steps fit runs. No speed is asserted (noisy shared cores). The comparison with
the authors'-style reference pipeline is benchmarks/reference_pipeline.py (test_reference_pipeline.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fsad_bench import bench
from fsad_bench.budgets import BUDGETS
from fsad_bench.cli import main
from fsad_bench.config import resolve_method_config
from fsad_bench.detectors.base import BenchPhase, Detector, TrainSet, TrainShape
from fsad_bench.errors import UserError
from fsad_bench.protocol import load_protocol

Q1 = load_protocol("q1")


# ---------------------------------------------------------------- detectors from outside the package
# Not registered: bench reaches them by dotted path (tests/ is on sys.path), as a user's own would be.

@dataclass
class PairedConfig:
    # field names that the old field-name guessing took for Deep SAD's loop
    epochs: int = 2
    steps_per_epoch: int = 3
    batch_size: int = 4
    eta: float = 1.0


class Paired(Detector):
    """Each step trains on ``batch_size`` images and their mirror images: 2 x batch_size per step."""

    Config = PairedConfig
    extra_steps = 0

    @classmethod
    def bench_phases(cls, config: PairedConfig, shape: TrainShape) -> list[BenchPhase]:
        return [BenchPhase("pairs", config.epochs * config.steps_per_epoch, 2 * config.batch_size)]

    @classmethod
    def bench_step_overrides(cls, config: PairedConfig, n_steps: int, shape: TrainShape) -> dict:
        return {"epochs": 1, "steps_per_epoch": n_steps}

    def fit(self, train: TrainSet) -> Paired:
        c = self.config
        rng = np.random.default_rng(train.seed)
        images = torch.from_numpy(train.images).float().div(255)
        self.w = torch.nn.Parameter(torch.zeros(3))
        opt = torch.optim.SGD([self.w], lr=0.01)
        for _ in range(c.epochs * c.steps_per_epoch + self.extra_steps):
            x = images[rng.choice(len(images), c.batch_size)]
            x = torch.cat([x, x.flip(2)])
            loss = ((x.mean(dim=(1, 2)) * self.w).sum(1) - 1).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.info = {}
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).float().div(255).mean(dim=(1, 2))
        return (x * self.w.detach()).sum(1).numpy()


class MisDeclared(Paired):
    """Declares one step fewer per phase than its fit runs."""

    extra_steps = 1


class Undeclared(Detector):
    """Declares nothing: bench times its whole fit."""

    def fit(self, train: TrainSet) -> Undeclared:
        self.mean = train.images[train.labels == 0].mean()
        self.info = {}
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return np.abs(images.reshape(len(images), -1).mean(1) - self.mean)


def test_a_detector_outside_the_package_gets_bench_numbers_from_its_declaration(tmp_path):
    out = tmp_path / "bench.json"
    code = main(["bench", "--methods", "test_bench:Paired,test_bench:Undeclared", "--budgets", "smoke",
                 "--steps", "3", "--eval-images", "4", "--device", "cpu", "--json", str(out)])
    assert code == 0
    paired, undeclared = json.loads(out.read_text())["rows"]
    # images per step, steps and the projected cell are the declaration's (not min(batch, N) = 4)
    assert paired["pipeline"] == "ours" and paired["batch"] == "8" and paired["img"] == 32
    assert [(p["name"], p["steps"], p["images_per_step"]) for p in paired["phases"]] == [("pairs", 3, 8)]
    timed = paired["phases"][0]
    assert paired["train_img_s"] == pytest.approx(3 * 8 / timed["seconds"])
    assert paired["s_per_step"] == pytest.approx(timed["seconds"] / 3)
    assert paired["cell_min"] > 0 and paired["eval_img_s"] > 0
    # nothing declared: the whole fit, honestly labelled, no per-step figures
    assert undeclared["pipeline"] == "ours (whole fit)" and undeclared["s_per_step"] is None
    assert undeclared["cell_min"] is None and undeclared["note"] == bench.WHOLE_FIT_NOTE
    whole = undeclared["phases"][0]
    assert undeclared["train_img_s"] == pytest.approx(whole["images"] / whole["seconds"])
    assert whole["images"] == bench.N_NORMAL + bench.N_ANOMALY


def test_a_declaration_that_differs_from_what_fit_runs_is_refused_and_the_others_still_measured(
        tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--methods", "test_bench:MisDeclared,test_bench:Paired", "--budgets", "smoke",
                 "--steps", "2", "--eval-images", "4", "--device", "cpu", "--json", str(out)])
    assert code == 2
    captured = capsys.readouterr()
    wrong = "test_bench:MisDeclared declares optimiser phases [('pairs', 3)] but its fit ran [4]"
    assert wrong in captured.err.splitlines()[-1] and "1 method(s) not measured" in captured.err
    data = json.loads(out.read_text())
    assert [r["method"] for r in data["rows"]] == ["test_bench:Paired"] and wrong in data["errors"][0]
    assert "test_bench:Paired" in captured.out  # the table of what was measured is printed


def test_bench_command_all_methods_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--budgets", "smoke", "--steps", "2", "--eval-images", "8", "--device", "cpu",
                 "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "train img/s" in text and bench.NA_CPU in text
    assert "reference" not in text and "ours/ref" not in text  # that is benchmarks/reference_pipeline.py
    data = json.loads(out.read_text())
    rows = data["rows"]
    # the protocol's methods, our pipeline only
    assert [r["method"] for r in rows] == Q1.methods
    assert {r["pipeline"] for r in rows} == {"ours"}
    for r in rows:
        assert r["train_img_s"] > 0 and r["eval_img_s"] > 0 and math.isfinite(r["peak_mem_mb"])
        assert r["mem_kind"].startswith("CPU RSS growth")
    ours = {r["method"]: r for r in rows if r["pipeline"] == "ours"}
    assert ours["devnet"]["roofline"] == bench.NA_CPU
    # autoencoder, then one-class; 1 warm-up + 2 timed steps each
    dsvdd = [(p["name"], p["steps"]) for p in ours["dsvdd"]["phases"]]
    assert dsvdd == [("autoencoder", 2), ("one-class", 2)]
    assert ours["kdad"]["phases"][0]["steps"] >= 2


def test_bench_speed_options_are_applied_where_a_method_has_them(tmp_path):
    s = bench.BenchSettings(methods=["devnet", "kdad"], budgets=["smoke"], steps=1, eval_images=4,
                            device="cpu", channels_last=True)
    rows = bench.run_bench(s)
    assert rows[0].channels_last and not rows[0].bf16
    assert not rows[1].channels_last and rows[1].note == "no bf16/channels_last option"
    with pytest.raises(UserError, match="--amp-bf16 on cpu: bf16 autocast is benchmarked on CUDA only"):
        bench.run_bench(bench.BenchSettings(methods=["devnet"], budgets=["smoke"], device="cpu",
                                            amp_bf16=True))


def test_bench_rejects_bad_settings_before_measuring_anything(capsys):
    with pytest.raises(UserError, match="steps"):
        bench.run_bench(bench.BenchSettings(steps=0, device="cpu"))
    # a bad budget, method or hyper-parameter further down the list stops the run before the first fit
    with pytest.raises(UserError, match="unknown budget 'nope'"):
        bench.run_bench(bench.BenchSettings(methods=["kdad"], budgets=["smoke", "nope"], device="cpu"))
    with pytest.raises(UserError, match="unknown method 'nope'"):
        bench.run_bench(bench.BenchSettings(methods=["kdad", "nope"], budgets=["smoke"], device="cpu"))
    assert "measured" not in capsys.readouterr().err


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
    assert clock.counts() == [4, 3]
    phases = clock.phases(warmup=1)
    assert [n for n, _ in phases] == [3, 2] and all(t >= 0 for _, t in phases)
    assert [n for n, _ in clock.phases(warmup=2)] == [2, 1]


def test_step_clock_keeps_a_freed_phase_optimiser_apart_from_the_next_one():
    """Deep SVDD's autoencoder optimiser is freed after pretraining; CPython then often gives the
    one-class optimiser the same id(), which merged both phases into one count."""
    def phase(steps: int) -> None:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.1)
        for _ in range(steps):
            p.grad = torch.ones(1)
            opt.step()

    with bench.StepClock("cpu") as clock:
        for _ in range(5):
            phase(2)  # each optimiser unreachable as soon as its phase returns
    assert clock.counts() == [2] * 5


def _declared(method: str, budget: str = "paper", n_train: int = 250, n_normal: int = 240):
    """(phases as (steps, images per step), image size) that ``method`` declares at ``budget``."""
    r = resolve_method_config(BUDGETS[budget], method, weights="none")
    phases = r.cls.bench_phases(r.config, TrainShape(n_train, n_normal, r.img_size))
    return [(p.steps, p.images_per_step) for p in phases], r


def test_step_accounting_each_detector_declares_at_the_paper_budget():
    devnet, r = _declared("devnet")
    assert r.img_size == 448 and devnet == [(50 * 20, 48)]
    assert r.cls.bench_step_overrides(r.config, 3, TrainShape(202, 192, 448)) == {"epochs": 1,
                                                                                  "steps_per_epoch": 3}
    assert _declared("flos")[0] == [(50 * 20, 48)] and _declared("minns")[0] == [(50 * 20, 48)]
    assert _declared("dsvdd")[0] == [(350 * 2, 200), (150 * 2, 200)]  # one pass of 240 normals, batch 200
    assert _declared("deepsad")[0] == [(150 * 2, 128)]                 # one pass of all 250 images
    kdad, r = _declared("kdad")
    assert kdad == [(601 * 4, 240 / 4)]  # 4 steps per epoch of 240 normals: 64, 64, 64, 48 images
    over = r.cls.bench_step_overrides(r.config, 2, TrainShape(202, 192, 128))
    assert over["max_steps"] == 192 // 64 + 1  # past one epoch: the teacher cache is in use
    quick = resolve_method_config(BUDGETS["quick"], "kdad")
    assert quick.cls.bench_step_overrides(quick.config, 20, TrainShape(202, 192, 32))["max_steps"] == 20


def test_dsvdd_without_pretraining_declares_and_times_one_phase():
    r = resolve_method_config(BUDGETS["smoke"], "dsvdd", overrides={"pretrain": "false"})
    shape = TrainShape(202, 192, 32)
    assert [p.name for p in r.cls.bench_phases(r.config, shape)] == ["one-class"]
    assert "ae_epochs" not in r.cls.bench_step_overrides(r.config, 3, shape)


def test_training_flops_formula_and_table2_projection():
    def flops(method: str, budget: str = "paper", size: int = 224):
        r = resolve_method_config(BUDGETS[budget], method, weights="none")
        return r.cls.bench_phases(r.config, TrainShape(250, 240, size))[0].flops_per_image

    assert flops("devnet") == pytest.approx(3 * 2 * 1.82e9 * 1.25)  # two scales
    assert flops("devnet", size=448) == pytest.approx(4 * 3 * 2 * 1.82e9 * 1.25)
    assert flops("minns") == pytest.approx(3 * 2 * 1.82e9)  # one scale
    assert flops("deepsad") == pytest.approx(3 * 2 * 1.82e9)
    assert flops("kdad") is None and flops("dsvdd") is None
    assert flops("devnet", "quick") is None  # the narrow ResNet-18
    rows = [bench.BenchRow(m, "paper", "ours", "cuda", 448, "resnet18", "48", False, False, 1.0, 1.0, 0.0,
                           "", 1.0, cell_min=2.0) for m in Q1.methods[:-1]]
    hours, missing = bench.project_table2_hours(rows, Q1.methods, len(Q1.seeds))
    assert missing == ["devnet"] and hours == pytest.approx(5 * 2.0 * 23 * 3 / 60)


def test_roofline_is_the_declared_flops_rate_over_the_device_peak(monkeypatch):
    row = bench.BenchRow("devnet", "paper", "ours", "cuda", 448, "resnet18", "48", False, False, 2.0, 1.0,
                         0.0, "", 1.0, cell_min=1.0, train_flops_s=5e12)
    s = bench.BenchSettings(methods=["devnet", "kdad"], budgets=["paper"])
    measured = {"devnet": row, "kdad": dataclasses.replace(row, method="kdad", train_flops_s=None)}
    monkeypatch.setattr(bench, "measure_method", lambda resolved, *args: measured[resolved.method])
    monkeypatch.setattr(bench, "peak_flops", lambda device, dtype: (1e14, f"measured {dtype} matmul"))
    rows = bench.bench_rows(s, "cuda", bench.plan_bench(s))
    assert rows[0].roofline == pytest.approx(0.05) and "measured tf32 matmul" in rows[0].note
    assert rows[1].roofline == "n/a (FLOPs not declared)"


@pytest.mark.parametrize("option", ["--reference", "--ref-workers", "--ref-file-size"])
def test_bench_has_no_reference_pipeline_options(option, capsys):
    """The authors'-style reference is benchmarks/reference_pipeline.py, outside the core."""
    with pytest.raises(SystemExit) as exc:
        main(["bench", option, "1"])
    assert exc.value.code == 2 and f"unrecognized arguments: {option}" in capsys.readouterr().err


def test_bench_config_and_testing_name_no_built_in_method_and_touch_no_private_attribute():
    """What bench times comes from the detectors' declarations, so the core names none of them."""
    import ast
    from pathlib import Path

    import fsad_bench

    root = Path(fsad_bench.__file__).parent
    methods = ("devnet", "flos", "kdad", "dsvdd", "deepsad", "minns", "deep svdd", "deep sad")
    for rel in ("bench.py", "config.py", "testing.py", "runner/generator.py"):
        for node in ast.walk(ast.parse((root / rel).read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                hits = [m for m in methods if m in node.value.lower()]
                assert not hits, f"{rel}:{node.lineno} names {hits} in {node.value[:60]!r}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__"):
                owner = node.value.id if isinstance(node.value, ast.Name) else ""
                assert owner == "self", f"{rel}:{node.lineno} touches the private attribute .{node.attr}"
