"""Everything checkable is checked before the grid (one line, exit 2, nothing written); duplicates run
once; diverged training is flagged in the row; known tracebacks are one-line errors instead."""

from __future__ import annotations

import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fsad_bench.budgets import BUDGETS
from fsad_bench.cli import main
from fsad_bench.config import resolve_method_config
from fsad_bench.detectors.base import Detector
from fsad_bench.errors import UserError
from fsad_bench.protocol import load_protocol, packaged_protocols
from fsad_bench.runner.generator import build_cells, check_img_size
from fsad_bench.runner.job import run_cell
from fsad_bench.runner.request import RunRequest
from fsad_bench.store import STORE_NAME, ResultStore
from fsad_methods.devnet import DevNet

TOY = "toy_detectors:Brightness"


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the CLI in-process; it must exit 2 with one stderr line and no traceback. Returns the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- item 3: duplicates run once ----------------------------------------------------------------

def test_duplicate_seeds_methods_and_datasets_make_one_cell(data_root):
    req = RunRequest(methods=[TOY, TOY], datasets=["brainmri", "brainmri"], seeds=[0, 0], budget="smoke",
                      data_root=data_root)
    cells, _ = build_cells(load_protocol("q1"), req)
    assert len(cells) == 1


def test_duplicate_seeds_on_the_command_line_run_once(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--methods", TOY, "--datasets", "brainmri", "--data-root", str(data_root),
                 "--budget", "smoke", "--seeds", "0,0,1,1", "--out", str(out), "--no-progress"]) == 0
    assert "2 cells ran ok" in capsys.readouterr().err


def test_duplicate_values_in_a_spec_run_once(tmp_path):
    spec = tmp_path / "dup.toml"
    spec.write_text('name = "dup"\nsplit = "q1"\ndatasets = ["synthetic", "synthetic"]\n'
                    'methods = ["devnet", "devnet"]\nseeds = [0, 0, 2]\n'
                    '[settings]\nn_anomaly = [10, 10]\n')
    loaded = load_protocol(str(spec))
    assert loaded.datasets == ["synthetic"] and loaded.methods == ["devnet"] and loaded.seeds == [0, 2]
    assert loaded.setting_grid() == [{"n_anomaly": 10}]


# --- item 4: validation before the grid ---------------------------------------------------------

@pytest.mark.parametrize("extra, needle", [
    (["--set", "img_size=abc"], "bad --set img_size 'abc'"),
    (["--set", "img_size=0"], "greater than or equal to 1"),
    (["--set", "img_size=32"], "img_size 32 is below devnet's minimum of 64 px"),
    (["--set", "devnet.epochs=0"], "bad value '0' for epochs of devnet"),
    (["--set", "devnet.steps_per_epoch=-2"], "steps_per_epoch of devnet"),
    (["--set", "devnet.batch_size=1"], "bad value '1' for batch_size of devnet: input should be greater"),
    (["--set", "devnet.lr=nan"], "lr of devnet: input should be a finite number"),
    (["--set", "devnet.lr=inf"], "lr of devnet: input should be a finite number"),
    (["--set", "devnet.lr=-1e-3"], "lr of devnet: input should be greater than 0"),
    (["--set", "devnet.weight_decay=-1"], "weight_decay of devnet"),
    (["--set", "devnet.topk_ratio=1.5"], "topk_ratio of devnet"),
    (["--set", "devnet.variant=nope"], "variant of devnet: input should be 'mil_ds'"),
    (["--set", "devnet.backbone=resnet17"], "backbone of devnet"),
    (["--set", "devnet.bn_recalibration=maybe"], "bn_recalibration of devnet: input should be a valid bool"),
    (["--set", "devnet.epoch=3"], "did you mean 'epochs'?"),
    (["--seeds=-1"], "bad seed -1: input should be greater than or equal to 0"),
    (["--seeds", ","], "has no cells (seeds: []"),
    (["--device", "tpu"], "--device 'tpu': tpu is no device"),
])
def test_bad_hyper_parameters_seeds_and_devices_stop_before_the_grid(extra, needle, tmp_path, capsys):
    out = tmp_path / "out"
    err = one_line_exit_2(["run", "--methods", "devnet", "--budget", "smoke", "--seeds", "0",
                           "--out", str(out), "--no-progress", *extra], capsys)
    assert needle in err
    assert not out.exists()


def test_ranges_of_every_baseline_are_declared_on_its_config():
    from fsad_bench.detectors.registry import load_detector

    for method, params in [("dsvdd", {"nu": "0"}), ("dsvdd", {"ae_batch_size": "1"}),
                           ("dsvdd", {"lr_milestones": "50,x"}), ("deepsad", {"eps": "0"}),
                           ("kdad", {"lamda": "-1"}), ("kdad", {"input_norm": "bgr"}),
                           ("minns", {"dropout": "1"}), ("minns", {"pooling": "median"}),
                           ("flos", {"logit": "raw"}), ("flos", {"gamma": "-1"}),
                           ("devnet_rep", {"n_ref": "1"})]:
        with pytest.raises(UserError, match=f"for {next(iter(params))} of {method}"):
            load_detector(method).config_from_params(params)


def test_set_strings_are_parsed_into_the_field_types():
    from fsad_methods.dsvdd import DeepSVDD

    c = DevNet.config_from_params({"epochs": "3", "lr": "1e-3", "bn_recalibration": "yes", "n_scales": 1})
    assert (c.epochs, c.lr, c.bn_recalibration, c.n_scales) == (3, 1e-3, True, 1)
    d = DeepSVDD.config_from_params({"lr_milestones": "50,100", "ae_lr_milestones": ""})
    assert d.lr_milestones == (50, 100) and d.ae_lr_milestones == ()


@pytest.mark.parametrize("value", [True, 4.5])
def test_spec_values_are_not_coerced_silently(value):
    # a TOML `epochs = true` or `epochs = 4.5` is an error, not 1 or 4
    with pytest.raises(UserError, match="for epochs of devnet"):
        DevNet.config_from_params({"epochs": value})


@dataclass
class _LooseConfig:  # a third-party config without precise annotations
    steps: Any = 3
    ratio: UnresolvableName = 0.5  # noqa: F821 - a name the plugin never imported
    name: str = "x"


class _Loose(Detector):
    Config = _LooseConfig

    def fit(self, train):  # pragma: no cover
        return self

    def score(self, images):  # pragma: no cover
        return np.zeros(len(images))


def test_third_party_configs_without_precise_annotations_still_parse():
    c = _Loose.config_from_params({"steps": "7", "ratio": "0.25", "name": "y"})
    assert (c.steps, c.ratio, c.name) == (7, 0.25, "y")


def test_every_packaged_budget_table_is_valid():
    # ranges and image-size minimums hold for every method of every packaged spec and budget
    checked = set()
    for name in packaged_protocols():
        spec = load_protocol(name)
        for budget in BUDGETS:
            for method in spec.methods:
                r = resolve_method_config(BUDGETS[budget], method, "none", protocol_set=spec.set_at(budget))
                check_img_size(method, r.config, r.img_size)
                checked.add((name, budget, method))
    assert {p for p, _, _ in checked} >= {"q1", "q2", "q3", "q4", "q5", "q6", "ksweep"}
    assert {b for _, b, _ in checked} == set(BUDGETS)


def test_device_that_does_not_exist_stops_before_the_grid(monkeypatch, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--methods", TOY, "--budget", "smoke", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert "no CUDA GPU is visible here" in one_line_exit_2(argv + ["--device", "cuda"], capsys)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    err = one_line_exit_2(argv + ["--device", "cuda:0,cuda:3"], capsys)
    assert "there is no cuda:3; this machine has 1 CUDA GPU(s): cuda:0" in err
    assert not out.exists()


def test_out_that_is_a_file_or_below_a_file_stops_before_the_grid(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    base = ["run", "--methods", TOY, "--budget", "smoke", "--no-progress"]
    assert "is a file, not a folder" in one_line_exit_2(base + ["--out", str(afile)], capsys)
    assert "is a file, so the folder cannot" in one_line_exit_2(base + ["--out", str(afile / "x")], capsys)
    assert afile.read_text() == "not a folder"


def test_unwritable_out_is_one_line(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    err = one_line_exit_2(["run", "--methods", TOY, "--budget", "smoke", "--no-progress",
                           "--out", str(locked / "results")], capsys)
    assert f"cannot be created: {locked} is not writable" in err
    assert not any(locked.iterdir())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc refuses new folders on Linux")
def test_out_the_file_system_refuses_is_one_line(capsys):
    # root passes every permission check, so this fails only when the store is created
    assert main(["run", "--methods", TOY, "--budget", "smoke", "--seeds", "0", "--no-progress",
                 "--out", "/proc/fsad-bench-test/out"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fsad-bench: error: cannot ") and "/proc/fsad-bench-test/out" in last


SPEC = '''name = "mine"
split = "q1"
datasets = ["synthetic"]
methods = ["devnet"]
[settings]
n_anomaly = [10]
'''


@pytest.mark.parametrize("old, new, needle", [
    ('methods = ["devnet"]', 'methods = ["devnet"]\nseed = [0]', "unknown key 'seed'; did you mean 'seeds'?"),
    ('methods = ["devnet"]', 'methods = ["devnet"]\nseeds = "02"', "seeds = '02': input should be a valid"),
    ('methods = ["devnet"]', 'methods = ["devnet"]\nseeds = ["02"]', "seeds[0] = '02': input should be a"),
    ('methods = ["devnet"]', 'methods = ["devnet"]\nseeds = [-1]', "seeds[0] = -1: input should be greater"),
    ('datasets = ["synthetic"]', 'datasets = "mvtec"', "datasets = 'mvtec': input should be a valid list"),
    ('split = "q1"', 'split = "q7"', "split = 'q7' is no split rule"),
    ('name = "mine"', 'name = "mine"\nbudgets_from = "q1"', "'budgets_from' is gone: each method declares "
                                                             "its own budgets"),
    ('n_anomaly = [10]', 'n_anomalies = [10]', "settings.n_anomalies is no argument of split rule 'q1'; did "
                                               "you mean 'n_anomaly'?"),
    ('n_anomaly = [10]', '', "split rule 'q1' needs n_anomaly"),
    ('name = "mine"', 'name = "mine"\nreport = "tabel2"', "report = 'tabel2' is no report layout; did you"),
    ('name = "mine"', 'name = "mine"\npixel_metrics = "yes"', "pixel_metrics = 'yes': input should be a"),
    ('name = "mine"', '', "lacks the key 'name'"),
    ('n_anomaly = [10]', 'n_anomaly = [10]\n[budgets.quick]\nimg_size = 64', "'budgets' is gone"),
    ('n_anomaly = [10]', 'n_anomaly = [10]\n[set.quick]\n"devnet.lr" = 0.1',
     "set.quick = {'devnet.lr': 0.1}: 'devnet.lr' names one method"),
    ('n_anomaly = [10]', 'n_anomaly = [-3]', "settings.n_anomaly = -3: input should be greater than"),
    ('n_anomaly = [10]', 'n_anomaly = ["10"]', "settings.n_anomaly = '10': input should be a valid integer"),
    ('name = "mine"', 'name = "mine"\ndefault_budget = "fast"', "default_budget = 'fast' is not one of"),
])
def test_protocol_spec_schema_errors_are_one_line(old, new, needle, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace(old, new))
    with pytest.raises(UserError, match="protocol .*spec.toml") as info:
        load_protocol(str(spec))
    assert needle in str(info.value) and "\n" not in str(info.value)
    err = one_line_exit_2(["run", "--protocol", str(spec), "--out", str(tmp_path / "out")], capsys)
    assert needle in err and not (tmp_path / "out").exists()


def test_protocol_spec_accepts_the_report_keys(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace('name = "mine"', 'name = "mine"\ncurve_x = "n_anomaly"\n'
                                 'reference_method = "devnet"') + '[display]\ndevnet = "DevNet (ours)"\n')
    loaded = load_protocol(str(spec))
    assert (loaded.curve_x, loaded.reference_method, loaded.display) == ("n_anomaly", "devnet",
                                                                         {"devnet": "DevNet (ours)"})


def test_protocol_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    assert "is not UTF-8 text" in one_line_exit_2(["run", "--protocol", str(spec)], capsys)


# --- item 7: diverged training is flagged -------------------------------------------------------

def test_divergence_criterion():
    from fsad_methods.training import divergence

    assert divergence([2.3, 1.0, 0.4, 0.1]) is None                  # healthy
    assert divergence([2.3, 5.2]) is None                            # noisy, but within 10x
    assert "rose from 2.3 at initialisation to 5.2e+13" in divergence([2.3, 5.2e13])
    # DevNet with lr=1e6 at the quick budget: explodes at once, then "improves" from 1e13 to 4e10
    exploded = [2.3] + [1.6e13] * 9 + [4.7e12] * 10 + [2.1e12] * 10 + [3.9e10] * 10
    assert "diverged" in divergence(exploded)
    assert divergence([2.3]) is None                                 # one step: nothing to compare


def test_diverged_training_is_flagged_in_the_row_and_the_summary(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["run", "--methods", "devnet", "--datasets", "brainmri", "--data-root", str(data_root),
            "--budget", "smoke", "--seeds", "0", "--no-progress"]
    assert main(base + ["--out", str(out), "--set", "devnet.lr=1e6"]) == 0
    captured = capsys.readouterr()  # the FLAGGED line is printed beside the progress bar, as FAILED ones
    assert "FLAGGED brainmri/brainmri devnet seed=0: diverged: training loss rose" in captured.out
    assert "1 cells ran ok (1 FLAGGED" in captured.err
    assert main(base + ["--out", str(out)]) == 0  # the healthy setting: a new key, no flag
    with ResultStore(out) as store:
        df = store.dataframe()
    diverged, healthy = sorted(df.itertuples(), key=lambda row: -row.params["lr"])
    assert diverged.params["lr"] == 1e6 and diverged.status == "ok"
    assert [f["flag"] for f in diverged.flags] == ["diverged"]
    assert "at initialisation" in diverged.flags[0]["reason"]
    assert healthy.status == "ok" and healthy.flags == []


def test_every_training_loop_reports_divergence(data_root):
    # each method's own loop records its step losses: a huge lr is flagged everywhere (KDAD's student
    # reaches NaN at lr=1e6, which fails the cell as non-finite; at 1e3 it stays finite and explodes)
    from fsad_bench.detectors.registry import load_detector

    cells, _ = build_cells(load_protocol("q1"), RunRequest(
        methods=["dsvdd", "deepsad", "kdad", "flos", "minns"], datasets=["brainmri"], seeds=[0],
        budget="smoke", overrides=["lr=1e6", "dsvdd.ae_lr=1e6", "kdad.lr=1e3", "kdad.max_steps=4"],
        data_root=data_root))
    for cell in cells:
        result = run_cell(cell)
        assert result.status == "ok", (cell.method, result.error)
        assert "diverged" in [f["flag"] for f in result.flags], (cell.method, load_detector(cell.method))


def test_a_store_without_the_flags_column_gains_it(tmp_path):
    con = sqlite3.connect(tmp_path / STORE_NAME)
    con.execute("CREATE TABLE cells (key TEXT PRIMARY KEY, protocol TEXT, status TEXT)")
    con.execute("INSERT INTO cells VALUES ('k0', 'q1', 'ok')")
    con.commit()
    con.close()
    with ResultStore(tmp_path) as store:
        assert store.get("k0")["flags"] == []
        cols = {row[1] for row in store.con.execute("PRAGMA table_info(cells)")}
    assert "flags" in cols


# --- item 8: tracebacks become one line ---------------------------------------------------------

def test_decompression_bomb_in_data_verify_names_the_file(data_root, monkeypatch, capsys):
    cat = data_root / "brainmri" / "brainmri"
    Image.new("RGB", (60, 60)).save(cat / "train/good/bomb.png")    # 3600 px > 2 x limit: PIL's error
    Image.new("RGB", (40, 40)).save(cat / "test/good/warned.png")   # 1600 px > limit: PIL's warning
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)             # the real limit is 89 Mpx
    assert main(["data", "verify", "brainmri", "--root", str(data_root)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "bomb.png" in err and "decompression-bomb" in err
    assert "warned.png" in captured.out  # listed as a problem too, not only warned about


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse non-UTF-8 names")
def test_non_utf8_file_name_is_named_not_a_traceback(data_root, tmp_path, capsys):
    good = data_root / "brainmri" / "brainmri" / "train" / "good"
    os.rename(os.fsencode(good / "000.png"), os.fsencode(good) + b"/caf\xe9.png")
    err = one_line_exit_2(["data", "verify", "brainmri", "--root", str(data_root)], capsys)
    assert "b'caf\\xe9.png'" in err and "not valid UTF-8" in err
    err = one_line_exit_2(["run", "--methods", TOY, "--datasets", "brainmri", "--data-root", str(data_root),
                           "--budget", "smoke", "--seeds", "0", "--out", str(tmp_path / "out"),
                           "--no-progress"], capsys)  # the grid's data fingerprint scans it first
    assert "b'caf\\xe9.png'" in err and "rename it" in err and not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse non-UTF-8 names")
def test_non_utf8_category_name_stops_before_the_grid(data_root, tmp_path, capsys):
    # the name would reach the results store, which cannot hold it: the driver crashed mid-grid
    dataset = os.fsencode(data_root / "brainmri")
    os.rename(dataset + b"/brainmri", dataset + b"/m\xe9")
    err = one_line_exit_2(["run", "--methods", TOY, "--datasets", "brainmri", "--data-root", str(data_root),
                           "--budget", "smoke", "--seeds", "0", "--out", str(tmp_path / "out"),
                           "--no-progress"], capsys)
    assert "b'm\\xe9'" in err and "not valid UTF-8" in err and not (tmp_path / "out").exists()


def test_corrupt_results_store_is_one_line(tmp_path, capsys):
    (tmp_path / STORE_NAME).write_text("not a database")
    err = one_line_exit_2(["report", str(tmp_path)], capsys)
    assert STORE_NAME in err and "integrity_check" in err


def test_non_numeric_csv_values_are_one_line(tmp_path, capsys):
    csv = tmp_path / "long.csv"
    csv.write_text("dataset,category,method,seed,auc_roc\nmvtec,carpet,devnet,0,0.9\nmvtec,carpet,devnet,1,"
                   "abc\n")
    err = one_line_exit_2(["report", "--from-csv", str(csv)], capsys)
    assert "auc_roc" in err and "'abc'" in err and "line 3" in err
    csv.write_bytes(b"dataset,category,method,seed,auc_roc\nmvtec,caf\xe9,devnet,0,0.9\n")
    assert "not UTF-8" in one_line_exit_2(["report", "--from-csv", str(csv)], capsys)


def test_report_output_that_cannot_be_written_is_one_line(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--methods", TOY, "--datasets", "brainmri", "--data-root", str(data_root),
                 "--budget", "smoke", "--seeds", "0", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    err = one_line_exit_2(["report", str(out), "-o", str(tmp_path)], capsys)  # a folder
    assert "cannot write the report to" in err


def _cell(data_root: Path, method: str):
    cells, _ = build_cells(load_protocol("q1"), RunRequest(methods=[method], datasets=["brainmri"],
                                                            seeds=[0], budget="smoke", data_root=data_root))
    return cells[0]


def test_wrong_length_scores_are_not_called_non_finite(data_root):
    wrong = run_cell(_cell(data_root, "toy_detectors:WrongLength"))
    assert wrong.status == "failed" and "shape (21,) for 22 test images" in wrong.error
    assert "non-finite" not in wrong.error
    nan = run_cell(_cell(data_root, "toy_detectors:NaNScores"))
    assert nan.status == "failed" and "1 non-finite scores (NaN or inf) of 22" in nan.error


def test_prepare_into_a_root_that_is_a_file_is_one_line(tmp_path, capsys):
    raw = tmp_path / "raw"
    (raw / "no").mkdir(parents=True)
    root = tmp_path / "root"
    root.write_text("")
    err = one_line_exit_2(["data", "prepare", "brainmri", "--raw", str(raw), "--root", str(root)], capsys)
    assert "is a file" in err



# --- a dry run refuses what a run refuses, with the same line, and neither writes anything ----------

def _tree(folder: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _bad_store(out: Path, how: str) -> None:
    from fsad_bench.store import CellResult

    out.mkdir()
    if how == "empty":
        (out / STORE_NAME).write_bytes(b"")
    elif how == "text":
        (out / STORE_NAME).write_text("dataset,seed\nmine,0\n")
    elif how == "foreign":
        with sqlite3.connect(out / STORE_NAME) as con:
            con.execute("CREATE TABLE photos (path TEXT)")
        con.close()
    else:
        with ResultStore(out) as store:
            store.put(CellResult(key="k", protocol="q1", dataset="d", category="c", method="m", seed=0,
                                 setting={}, budget="smoke", img_size=32, status="ok", auc_roc=0.7))
            change = ("setting = '{\"n_anomaly\": 1'" if how == "undecodable" else "auc_roc = NULL")
            store.con.execute(f"UPDATE cells SET {change}")
            store.con.commit()


SPEC_Q1 = 'name = "mine"\nsplit = "q1"\ndatasets = ["brainmri"]\nmethods = ["devnet"]\n'

BAD_RUNS = [  # (case, extra run arguments, spec [settings] / store fault, the error line's text)
    ("seed too large", ["--seeds", str(2**63 - 1)], None,
     f"seed {2**63 - 1} is too large: seeds go up to {2**63 - 2}"),
    ("seed too large in a spec", [], 'seeds = [9223372036854775807]\n[settings]\nn_anomaly = [1]',
     "seeds go up to 9223372036854775806"),
    ("negative n_anomaly in a spec", [], "[settings]\nn_anomaly = [-3]", "settings.n_anomaly = -3: "
                                                                         "input should be greater"),
    ("text n_anomaly in a spec", [], '[settings]\nn_anomaly = ["10"]', "settings.n_anomaly = '10': "
                                                                       "input should be a valid"),
    ("--set value no category holds", ["--set", "n_anomaly=11"], None,
     "--set n_anomaly=11: no category of the grid can hold it (brainmri/brainmri n_anomaly=11: "
     "n_anomaly=11 is "
     "more than half of the 20 anomalies"),
    ("spec value no category holds", [], "[settings]\nn_anomaly = [11]",
     "no cell of the grid of protocol mine can run: its data cannot hold the setting"),
    ("q5 draw above its largest", ["--protocol", "q5", "--set", "n_anomaly=50"], None,
     "n_anomaly=50 must be between 0 and the largest draw max_anomaly=40"),
    ("bad --set value", ["--set", "n_anomaly=ten"], None, "--set n_anomaly = 'ten'"),
    ("unknown dataset", ["--datasets", "nope"], None, "unknown dataset 'nope'"),
    ("empty store", [], "store:empty", "is empty (0 bytes): not a results store"),
    ("store that is no database", [], "store:text", "PRAGMA integrity_check: file is not a database"),
    ("another program's database", [], "store:foreign", "a database without a 'cells' table (it has photos)"),
    ("undecodable row", [], "store:undecodable", "row k has an undecodable 'setting'"),
    ("ok row without an AUC", [], "store:noauc", "row k is 'ok' without a finite AUC"),
]


@pytest.mark.parametrize("case, extra, setup, needle", BAD_RUNS, ids=[c[0] for c in BAD_RUNS])
def test_dry_run_refuses_what_a_run_refuses_with_the_same_line_and_nothing_is_written(
        case, extra, setup, needle, data_root, tmp_path, capsys):
    out = tmp_path / "out"
    protocol = "q1"
    if setup and setup.startswith("store:"):
        _bad_store(out, setup.removeprefix("store:"))
    elif setup:
        protocol = str(tmp_path / "spec.toml")
        (tmp_path / "spec.toml").write_text(SPEC_Q1 + setup + "\n")
    seeds = [] if "seeds =" in (setup or "") or "--seeds" in extra else ["--seeds", "0"]
    argv = ["run", "--protocol", protocol, "--methods", TOY, "--datasets", "brainmri", "--data-root",
            str(data_root), "--budget", "smoke", *seeds, "--out", str(out), "--no-progress", *extra]
    before = _tree(tmp_path)
    dry = one_line_exit_2([*argv, "--dry-run"], capsys)
    real = one_line_exit_2(argv, capsys)
    assert dry == real and needle in real, (dry, real)
    assert _tree(tmp_path) == before  # no store, manifest, figure or folder; a bad store left as it was
    assert out.exists() == bool(setup and setup.startswith("store:"))


def test_seeds_up_to_the_limit_run_and_are_stored(data_root, tmp_path):
    import fsad_bench
    from fsad_bench.runner.generator import MAX_SEED

    df = fsad_bench.run(methods=[TOY], datasets=["brainmri"], seeds=[MAX_SEED], budget="smoke",
                        data_root=data_root, out=tmp_path / "out", progress=False)
    assert list(df.status) == ["ok"] and fsad_bench.load_results(tmp_path / "out").seed.tolist() == [MAX_SEED]
    with pytest.raises(UserError, match="too large"):
        fsad_bench.run(methods=[TOY], datasets=["brainmri"], seeds=[MAX_SEED + 1], budget="smoke",
                       data_root=data_root, out=tmp_path / "out2", dry_run=True)


@pytest.mark.parametrize("how", ["empty", "text", "foreign"])
def test_report_refuses_an_empty_or_non_store_file_and_writes_nothing(how, tmp_path, capsys):
    out = tmp_path / "out"
    _bad_store(out, how)
    before = _tree(tmp_path)
    err = one_line_exit_2(["report", str(out)], capsys)
    assert str(out / STORE_NAME) in err
    err = one_line_exit_2(["report", str(out), "--format", "html"], capsys)
    assert _tree(tmp_path) == before and sorted(p.name for p in out.iterdir()) == [STORE_NAME]
    import fsad_bench

    with pytest.raises(UserError, match="results store"):
        fsad_bench.load_results(out)
