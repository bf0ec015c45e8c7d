"""One resolution of a method's configuration (budget table, ``--weights``, ``--set``) for the grid and
for ``bench``; budgets resolved once per grid; bad values are one-line errors."""

from __future__ import annotations

import pytest

from fsad_bench import bench
from fsad_bench.budgets import BUDGETS
from fsad_bench.cli import main
from fsad_bench.config import parse_overrides, resolve_method_config
from fsad_bench.errors import UserError
from fsad_bench.protocol import load_protocol
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.request import RunRequest

Q1 = load_protocol("q1")


def test_budget_then_weights_then_set_in_that_order():
    quick = BUDGETS["quick"]
    r = resolve_method_config(quick, "devnet")
    assert (r.img_size, r.config.backbone, r.config.weights) == (64, "resnet18_w16", "none")
    assert r.config.epochs == 10
    assert r.params["steps_per_epoch"] == 10 and r.detector().config is r.config
    r = resolve_method_config(quick, "devnet", "imagenet", parse_overrides(
        ["epochs=7", "devnet.lr=0.5", "flos.lr=9", "img_size=96", "weights=none"]))
    # --set beats --weights; a key scoped to another method is not applied
    assert (r.img_size, r.config.epochs, r.config.lr, r.config.weights) == (96, 7, 0.5, "none")
    # an unscoped key the method does not have is ignored (another method of the run may have it)
    assert resolve_method_config(quick, "kdad", overrides={"steps_per_epoch": "3"}).img_size == 32


def test_a_scoped_unknown_key_and_a_bad_image_size_are_user_errors():
    quick = BUDGETS["quick"]
    with pytest.raises(UserError, match="unknown hyper-parameter 'nope' for detector devnet"):
        resolve_method_config(quick, "devnet", overrides={"devnet.nope": "1"})
    with pytest.raises(UserError, match=r"bad --set devnet.img_size 'abc'"):
        resolve_method_config(quick, "devnet", overrides={"devnet.img_size": "abc"})


def test_with_params_validates_again():
    r = resolve_method_config(BUDGETS["smoke"], "devnet")
    assert r.with_params({"epochs": "3"}).config.epochs == 3 and r.config.epochs == 1
    with pytest.raises(UserError, match="unknown hyper-parameter"):
        r.with_params({"nope": 1})


def test_the_grid_and_bench_use_the_same_resolution(data_root):
    req = RunRequest(methods=["devnet", "kdad", "dsvdd"], datasets=["brainmri"], seeds=[0], budget="quick",
                      overrides=["epochs=2"], data_root=data_root)
    cells, _ = build_cells(Q1, req)
    budget = BUDGETS["quick"]
    for cell in cells:
        r = resolve_method_config(budget, cell.method, None, {"epochs": "2"})
        assert (cell.img_size, cell.params) == (r.img_size, r.params)
    plan = bench.plan_bench(bench.BenchSettings(methods=["devnet", "kdad"], budgets=["quick"]))
    for method in ("devnet", "kdad"):
        ours = plan.ours["quick", method]
        run = resolve_method_config(budget, method, "none")  # bench: weights none, nothing downloaded
        assert (ours.img_size, ours.params) == (run.img_size, run.params)


def test_budgets_are_resolved_once_per_grid(data_root, monkeypatch):
    from fsad_bench.runner import generator

    calls = []
    original = generator.get_budget

    def counting(name, declared=None):
        calls.append(name)
        return original(name, declared)

    monkeypatch.setattr(generator, "get_budget", counting)
    req = RunRequest(methods=["devnet", "kdad", "dsvdd", "flos"], datasets=["brainmri"], seeds=[0],
                      budget="smoke", data_root=data_root)
    cells, _ = build_cells(Q1, req)
    assert len(cells) == 4 and calls == ["smoke"]


def test_a_bad_image_size_on_the_command_line_is_one_line_exit_2(data_root, tmp_path, capsys):
    code = main(["run", "--methods", "devnet", "--datasets", "brainmri", "--data-root", str(data_root),
                 "--budget", "smoke", "--set", "img_size=abc", "--out", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == 2
    assert "bad --set img_size 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_a_method_without_the_budget_runs_on_its_defaults_and_the_run_says_so_once(data_root, tmp_path,
                                                                                  capsys):
    # Brightness declares no budgets: its Config defaults apply (img_size 32) and the dry run says so
    # once, however many cells the method has; devnet declares its budgets and gets no such line.
    code = main(["run", "--methods", "devnet,toy_detectors:Brightness", "--datasets", "brainmri",
                 "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0,1",
                 "--out", str(tmp_path / "out"), "--no-progress", "--dry-run"])
    assert code == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("declares no budget 'smoke': it runs on its Config defaults") == 1
    assert "method toy_detectors:Brightness declares no budget 'smoke'" in text
    assert "method devnet declares no budget" not in text
