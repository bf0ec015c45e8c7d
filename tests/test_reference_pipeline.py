"""benchmarks/reference_pipeline.py: it times our pipeline and the authors'-style PIL/DataLoader
reference side by side at the smoke budget, prints the table with the ratio and writes JSON; it finds
its detectors by duck typing (``balanced_training``), defaults to those that set ``bench_reference``,
and refuses bad settings before measuring anything; the reference's parts work like the authors'.
No speed is asserted (noisy shared cores)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fsad_bench import bench
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError
from fsad_bench.protocol import load_protocol

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_pipeline.py"
Q1 = load_protocol("q1")


@pytest.fixture(scope="module")
def ref():
    spec = importlib.util.spec_from_file_location("reference_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_reference_script_times_ours_beside_the_reference_with_json(ref, tmp_path, capsys):
    out = tmp_path / "ref.json"
    code = ref.main(["--budgets", "smoke", "--steps", "2", "--eval-images", "8", "--device", "cpu",
                     "--ref-workers", "0", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "train img/s" in text and "reference (0 workers)" in text and bench.NA_CPU in text
    assert "ours/ref train / eval" in text
    data = json.loads(out.read_text())
    rows = data["rows"]
    # by default, the protocol's methods whose detector asks for the reference (DevNet)
    assert [r["method"] for r in rows] == ["devnet", "devnet"]
    assert [r["pipeline"] for r in rows] == ["ours", "reference (0 workers)"]
    for r in rows:
        assert r["train_img_s"] > 0 and r["eval_img_s"] > 0 and math.isfinite(r["peak_mem_mb"])
        assert r["mem_kind"].startswith("CPU RSS growth")
    ours = {r["method"]: r for r in rows if r["pipeline"] == "ours"}
    assert ours["devnet"]["train_ratio"] > 0 and ours["devnet"]["roofline"] == bench.NA_CPU
    assert ours["devnet"]["eval_ratio"] > 0


def test_reference_script_finds_its_detectors_by_duck_typing(ref):
    assert ref.default_methods(Q1) == ["devnet"]  # bench_reference = True: DevNet's plain attribute
    assert all(ref.has_reference(load_detector(m)) for m in ("devnet", "flos", "minns"))
    assert not any(ref.has_reference(load_detector(m)) for m in ("kdad", "dsvdd", "deepsad"))
    # the core contract has neither
    from fsad_bench.detectors.base import Detector
    assert not hasattr(Detector, "balanced_training") and not hasattr(Detector, "bench_reference")


def test_reference_script_rejects_bad_settings_before_measuring_anything(ref, capsys):
    with pytest.raises(UserError, match="steps"):
        ref.run(ref.ReferenceSettings(steps=0, device="cpu"))
    with pytest.raises(UserError, match="--methods kdad: no reference pipeline.*balanced_training"):
        ref.run(ref.ReferenceSettings(methods=["kdad"], device="cpu"))
    with pytest.raises(UserError, match="--methods kdad: no reference pipeline"):
        ref.run(ref.ReferenceSettings(methods=["devnet", "kdad"], device="cpu"))
    # a bad budget or method further down the list stops the run before the first fit
    with pytest.raises(UserError, match="unknown budget 'nope'"):
        ref.run(ref.ReferenceSettings(methods=["devnet"], budgets=["smoke", "nope"], device="cpu"))
    with pytest.raises(UserError, match="unknown method 'nope'"):
        ref.run(ref.ReferenceSettings(methods=["devnet", "nope"], budgets=["smoke"], device="cpu"))
    with pytest.raises(UserError, match="--amp-bf16 on cpu: bf16 autocast is benchmarked on CUDA only"):
        ref.run(ref.ReferenceSettings(methods=["devnet"], budgets=["smoke"], device="cpu", amp_bf16=True))
    assert ref.main(["--methods", "kdad", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "reference_pipeline: error: --methods kdad: no reference pipeline" in err
    assert "measured" not in err


def test_reference_script_options_and_defaults(ref):
    args = ref.build_parser().parse_args([])
    assert (args.methods, args.budgets, args.ref_workers, args.ref_file_size) == (None, ["quick"], None, None)
    assert ref.default_ref_workers() == max(1, min(4, os.cpu_count() or 1))
    args = ref.build_parser().parse_args(["--methods", "devnet,flos", "--ref-workers", "2",
                                          "--ref-file-size", "1024"])
    assert (args.methods, args.ref_workers, args.ref_file_size) == (["devnet", "flos"], 2, 1024)


def test_reference_script_runs_as_a_script(monkeypatch, capsys):
    """``python benchmarks/reference_pipeline.py ...`` reaches main (in this process: torch is loaded)."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--ref-workers" in out and "--ref-file-size" in out


def test_reference_pipeline_parts_work_like_the_authors(ref):
    labels = np.r_[np.zeros(30, int), np.ones(4, int)]
    sampler = ref.BalancedEpochSampler(labels, 8, steps_per_epoch=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 and len(list(sampler)) == 5  # fresh epoch each iteration
    assert all(sum(labels[i] for i in b) == 4 and len(b) == 8 for b in batches)
    assert load_detector("devnet").Config().rotation == 180.0  # the reference's RandomRotation(180)


def test_reference_file_dataset_decodes_and_normalises(ref, tmp_path):
    from PIL import Image

    img = bench.texture_images(1, 40)[0]
    Image.fromarray(img).save(tmp_path / "a.png")
    ds = ref.FileDataset([str(tmp_path / "a.png")], np.zeros(1, int), 32, rotation=0.0)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    assert -2.2 < float(x.min()) and float(x.max()) < 2.7  # ImageNet-normalised
