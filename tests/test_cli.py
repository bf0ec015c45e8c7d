"""The command line end to end (smoke budget) and its one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fsad_bench.cli import main
from fsad_bench.store import ResultStore


def test_run_and_report_end_to_end(tmp_path, cli_env):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fsad_bench.cli", "run", "--protocol", "q1", "--methods",
           "devnet,toy_detectors:Brightness", "--budget", "smoke", "--seeds", "0", "--out", str(out),
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "running on synthetic" in proc.stderr and "6 cells ran ok" in proc.stderr
    with ResultStore(out) as store:
        df = store.dataframe()
    assert len(df) == 6 and (df.status == "ok").all()
    assert set(df.category) == {"brick", "grass", "gravel"}
    assert df.weights[df.method == "devnet"].eq("none").all()
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=cli_env, timeout=300)
    assert rerun.returncode == 0 and "6 already finished" in rerun.stderr
    rep = subprocess.run([sys.executable, "-m", "fsad_bench.cli", "report", str(out)], capture_output=True,
                         text=True, env=cli_env, timeout=120)
    assert rep.returncode == 0
    assert "SYNTHETIC" in rep.stdout and "DevNet" in rep.stdout and "budget smoke" in rep.stdout


@pytest.mark.parametrize("argv, needle", [
    (["run", "--protocol", "nope"], "unknown protocol 'nope'"),
    (["run", "--methods", "nope"], "unknown method 'nope'"),
    (["run", "--methods", "devnet", "--datasets", "nope"], "unknown dataset 'nope'"),
    (["run", "--methods", "devnet", "--datasets", "mvtec"], "dataset 'mvtec' not found"),
    (["run", "--methods", "devnet", "--budget", "huge"], "unknown budget 'huge'"),
    (["run", "--methods", "devnet", "--set", "epochs"], "bad --set 'epochs'"),
    (["run", "--methods", "devnet", "--set", "nonsense=1"], "no method in this run has"),
    (["run", "--methods", "devnet", "--set", "devnet.epochs=many"], "bad value 'many' for epochs"),
    (["run", "--methods", "devnet", "--set", "devnet.nonsense=1"], "unknown hyper-parameter 'nonsense'"),
    (["run", "--methods", "no.such.module:Cls"], "cannot import detector"),
    (["run", "--methods", "devnet", "--jobs", "0"], "--jobs must be >= 1"),
    (["report", "/nonexistent/folder"], "no results store"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys):
    assert main(argv + (["--out", "/tmp/fsad-never-written"] if argv[0] == "run" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_imagenet_weights_missing_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty cache
    import torchvision

    def no_network(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict",
                        no_network)
    assert main(["run", "--methods", "devnet", "--weights", "imagenet", "--budget", "smoke",
                 "--set", "backbone=resnet18", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    # the fetch is a printed step before the grid; its failure is one line after it
    step, error = err.strip().splitlines()
    assert step.startswith("ImageNet weights for resnet18 are not in the torch cache: fetching them once")
    assert "ImageNet weights for resnet18" in error and "--weights none" in error
    # the smoke/quick budgets' narrow backbone has no ImageNet weights: the error says what to do
    assert main(["run", "--methods", "devnet", "--weights", "imagenet", "--budget", "smoke",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--set backbone=resnet18" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the grid could start


def test_bad_image_fails_cell_keeps_others_and_exits_2(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    def args(seed: int) -> list[str]:
        return ["run", "--methods", "toy_detectors:Brightness", "--datasets", "brainmri", "--budget",
                "smoke", "--seeds", str(seed), "--data-root", str(data_root), "--out", str(out),
                "--no-progress"]
    assert main(args(0)) == 0
    with ResultStore(out) as store:
        before = store.dataframe()
    (data_root / "brainmri/brainmri/test/good/zzz.png").write_bytes(b"garbage")
    assert main(args(1)) == 2
    assert "zzz.png" in capsys.readouterr().err
    with ResultStore(out) as store:
        after = store.dataframe()
    assert before.key.isin(after.key).all()  # nothing already stored is lost
    assert set(after.status) == {"ok", "failed"}


def test_list_shows_detectors_protocols_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "devnet" in out and "q1" in out and "mvtec" in out and "missing" in out


def test_all_six_methods_end_to_end_on_smoke(tmp_path, capsys):
    out = tmp_path / "all"
    assert main(["run", "--protocol", "q1", "--methods", "all", "--budget", "smoke", "--seeds", "0",
                 "--out", str(out), "--no-progress"]) == 0
    with ResultStore(out) as store:
        df = store.dataframe()
    assert set(df.method) == {"kdad", "dsvdd", "deepsad", "flos", "minns", "devnet"}
    assert len(df) == 18 and (df.status == "ok").all() and df.auc_roc.between(0, 1).all()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| Data")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Data", "KDAD", "DSVDD", "DeepSAD", "FLOS", "MINNS", "DevNet"]
