"""Runner and store: resume skips finished cells, failures are recorded and the grid goes on."""

from __future__ import annotations

from fsad_bench.protocol import load_protocol
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.request import RunRequest
from fsad_bench.runner.runner import run_grid
from fsad_bench.store import ResultStore


def _cells(data_root, methods, seeds=(0, 1), overrides=()):
    spec = load_protocol("q1")
    req = RunRequest(methods=list(methods), datasets=["brainmri"], seeds=list(seeds), budget="smoke",
                      overrides=list(overrides), data_root=data_root)
    return build_cells(spec, req)[0]


def test_resume_skips_finished_cells(data_root, tmp_path):
    cells = _cells(data_root, ["toy_detectors:Brightness"])
    with ResultStore(tmp_path / "out") as store:
        first = run_grid(cells, store, progress=False)
        assert (first.ok, first.skipped, len(first.failed)) == (2, 0, 0)
        stamps = store.dataframe().set_index("key").finished_at.to_dict()
    more = _cells(data_root, ["toy_detectors:Brightness"], seeds=(0, 1, 2))
    with ResultStore(tmp_path / "out") as store:
        second = run_grid(more, store, progress=False)
        assert (second.ok, second.skipped) == (1, 2)
        df = store.dataframe().set_index("key")
    assert len(df) == 3
    for key, stamp in stamps.items():
        assert df.loc[key, "finished_at"] == stamp  # untouched rows


def test_failed_cell_is_recorded_and_others_complete(data_root, tmp_path):
    cells = _cells(data_root, ["toy_detectors:AlwaysFails", "toy_detectors:Brightness"])
    with ResultStore(tmp_path / "out") as store:
        summary = run_grid(cells, store, progress=False)
        df = store.dataframe()
    assert summary.ok == 2 and len(summary.failed) == 2
    failed = df[df.status == "failed"]
    assert set(failed.method) == {"toy_detectors:AlwaysFails"}
    assert failed.error.str.contains("planned failure").all()
    ok = df[df.status == "ok"]
    assert ok.auc_roc.between(0.9, 1.0).all()  # bright blobs: brightness separates them
    # failed cells are retried on the next run; ok ones are not
    with ResultStore(tmp_path / "out") as store:
        again = run_grid(cells, store, progress=False)
    assert again.skipped == 2 and len(again.failed) == 2


def test_result_record_holds_manifest_and_provenance(data_root, tmp_path):
    cells = _cells(data_root, ["toy_detectors:Brightness"], seeds=(0,))
    with ResultStore(tmp_path / "out") as store:
        run_grid(cells, store, progress=False)
        row = store.get(cells[0].key)
    assert row["status"] == "ok" and row["manifest_hash"]
    assert len(row["manifest"]["labelled_anomalies"]) == 10
    assert len(row["scores"]["scores"]) == len(row["manifest"]["test"])
    assert row["device"] and row["wall_s"] > 0 and row["code_version"]


def test_set_overrides_change_the_key_and_reach_the_detector(data_root):
    base = _cells(data_root, ["toy_detectors:Brightness"], seeds=(0,))[0]
    changed = _cells(data_root, ["toy_detectors:Brightness"], seeds=(0,), overrides=["power=2"])[0]
    assert changed.params["power"] == 2.0 and base.key != changed.key


def test_worker_processes_give_the_same_results(data_root, tmp_path):
    cells = _cells(data_root, ["toy_detectors:Brightness"])
    with ResultStore(tmp_path / "a") as a, ResultStore(tmp_path / "b") as b:
        run_grid(cells, a, jobs=1, progress=False)
        run_grid(cells, b, jobs=2, progress=False)
        ra = a.dataframe().set_index("key").auc_roc.sort_index()
        rb = b.dataframe().set_index("key").auc_roc.sort_index()
    assert ra.equals(rb)
