"""True float32: every cell switches TF32 off (cuBLAS and cuDNN) and records it in its row."""

from __future__ import annotations

import torch

from fsad_bench.precision import tf32_enabled, use_true_float32
from fsad_bench.protocol import load_protocol
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.request import RunRequest
from fsad_bench.runner.runner import run_grid
from fsad_bench.store import ResultStore


def _allow_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def test_use_true_float32_turns_both_flags_off():
    _allow_tf32(True)  # cuDNN's default, and what other code in a worker may have left
    try:
        assert tf32_enabled()
        assert use_true_float32() == {"tf32": False}
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert not tf32_enabled()
    finally:
        _allow_tf32(False)


def test_every_cell_runs_and_records_true_float32(data_root, tmp_path):
    req = RunRequest(methods=["toy_detectors:Brightness"], datasets=["brainmri"], seeds=[0, 1],
                      budget="smoke", data_root=data_root)
    cells, _ = build_cells(load_protocol("q1"), req)
    _allow_tf32(True)
    try:
        with ResultStore(tmp_path / "out") as store:
            assert run_grid(cells, store, progress=False).ok == 2
            rows = store.dataframe()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        _allow_tf32(False)
    assert [info["tf32"] for info in rows["info"]] == [False, False]
    assert all(info["n_train"] > 0 for info in rows["info"])  # the detector's own record is kept
