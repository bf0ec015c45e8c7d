"""benchmarks/trained_vs_untrained.py: it runs end to end at the smoke budget and prints both AUCs;
its "untrained" mode really leaves every optimised parameter at its initial value. No AUC thresholds
(a benchmark prints figures; the numbers are in the README)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "trained_vs_untrained.py"


@pytest.fixture(scope="module")
def tvu():
    spec = importlib.util.spec_from_file_location("trained_vs_untrained", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _adam_steps(model: torch.nn.Module, steps: int = 3) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1)  # decay alone would move them
    for _ in range(steps):
        opt.zero_grad()
        model(torch.ones(4, 3)).pow(2).sum().backward()
        opt.step()


def test_untrained_mode_keeps_parameters_and_counts_steps_then_goes_away(tvu):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    with tvu.optimiser_steps_disabled() as record:
        _adam_steps(model)
    assert record.steps == 3 and len(record.initial) == 2 and record.changed_parameters() == 0
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    _adam_steps(model)  # outside the block training works again
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_changed_parameters_detects_an_update_outside_the_optimiser(tvu):
    model = torch.nn.Linear(3, 2)
    with tvu.optimiser_steps_disabled() as record:
        _adam_steps(model, 1)
        with torch.no_grad():
            model.weight.add_(1.0)
    assert record.changed_parameters() == 1


def test_script_runs_end_to_end_and_prints_trained_and_untrained(tmp_path, cli_env):
    out = tmp_path / "tvu.json"
    # 64 px: two-scale DevNet's minimum (its half-size scale must reach the ResNet's 32 px stride)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--budget", "smoke", "--methods", "devnet", "--seeds", "0",
         "--datasets", "synthetic", "--set", "img_size=64", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "AUC trained" in proc.stdout and "AUC untrained" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["budget"] == "smoke" and doc["datasets"] == ["synthetic"] and not doc["failed"]
    (row,) = doc["methods"]
    assert row["method"] == "devnet" and row["cells"] == 3 and row["seeds"] == 1  # brick, grass, gravel
    assert 0 <= row["auc_trained"] <= 1 and 0 <= row["auc_untrained"] <= 1
    assert row["difference"] == pytest.approx(row["auc_trained"] - row["auc_untrained"])
    assert row["steps_disabled"] == 3 * 2  # smoke: 1 epoch x 2 steps per cell
    assert row["sds_above"] is None  # one seed: no spread to compare with
    assert f"{row['auc_trained']:.3f}" in proc.stdout and f"{row['auc_untrained']:.3f}" in proc.stdout
    assert {c["category"] for c in doc["cells"]} == {"brick", "grass", "gravel"}


def test_script_bad_input_is_one_line_and_exit_2(cli_env):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--budget", "smoke", "--methods", "nosuch"],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    assert proc.returncode == 2 and "nosuch" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
