"""``--mlflow``: each stored cell as one MLflow run, checked in a real local MLflow store."""

from __future__ import annotations

import json
import sys

import pytest

from fsad_bench.cli import main
from fsad_bench.store import ResultStore

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def run_cli(data_root, out, uri, *extra: str, method: str = "toy_detectors:Brightness") -> int:
    return main(["run", "--methods", method, "--datasets", "brainmri", "--data-root", str(data_root),
                 "--budget", "smoke", "--seeds", "0,1", "--out", str(out), "--no-progress", "--mlflow", uri,
                 *extra])


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # recent MLflow asks for this opt-in
    return tmp_path / "mlruns"


def runs_of(uri: str, name: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name!r}"
    return client, client.search_runs([exp.experiment_id])


def test_each_stored_cell_is_one_mlflow_run_with_params_metrics_tags_split(data_root, tmp_path, file_store):
    out = tmp_path / "out"
    assert run_cli(data_root, out, str(file_store), "--mlflow-experiment", "demo", "--set", "power=2") == 0
    uri = file_store.resolve().as_uri()
    client, runs = runs_of(uri, "demo")
    with ResultStore(out) as store:
        stored = {r["key"]: r for r in store.dataframe(with_blobs=True).to_dict("records")}
    assert len(runs) == len(stored) == 2
    for run in runs:
        row = stored[run.data.tags["fsad.cell_key"]]
        assert run.info.status == "FINISHED" and run.data.tags["fsad.status"] == "ok"
        assert run.data.tags["fsad.split_hash"] == row["manifest_hash"] != ""
        assert run.data.tags["fsad.code_version"] == row["code_version"]
        assert run.data.metrics["auc_roc"] == pytest.approx(row["auc_roc"])
        assert run.data.metrics["auc_pr"] == pytest.approx(row["auc_pr"])
        assert run.data.metrics["wall_s"] == pytest.approx(row["wall_s"])
        p = run.data.params
        assert (p["method"], p["dataset"], p["category"], p["seed"], p["budget"], p["img_size"]) == \
            ("toy_detectors:Brightness", "brainmri", "brainmri", str(row["seed"]), "smoke", "32")
        assert p["setting.n_anomaly"] == "10" and p["param.power"] == "2.0"
        local = client.download_artifacts(run.info.run_id, "split_manifest.json", str(tmp_path))
        assert json.load(open(local)) == row["manifest"]
        scores = json.load(open(client.download_artifacts(run.info.run_id, "scores.json", str(tmp_path))))
        assert scores["labels"] == row["scores"]["labels"]
        figure = client.download_artifacts(run.info.run_id, "figures/scores.png", str(tmp_path))
        with open(figure, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"  # the score histogram and ROC curve
    # a rerun finds every cell finished: nothing new is logged
    assert run_cli(data_root, out, str(file_store), "--mlflow-experiment", "demo", "--set", "power=2") == 0
    assert len(runs_of(uri, "demo")[1]) == 2


def test_failed_cells_and_localisation_figures_are_logged(data_root, tmp_path, file_store):
    uri = file_store.resolve().as_uri()
    assert run_cli(data_root, tmp_path / "f", uri, method="toy_detectors:AlwaysFails") == 1
    _, runs = runs_of(uri, f"fsad-bench q1 {(tmp_path / 'f').resolve()}")  # the default experiment name
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)
    assert all("planned failure" in r.data.tags["fsad.error"] for r in runs)
    assert main(["run", "--protocol", "q3", "--methods", "own_data_toys:BrightMap", "--datasets", "brainmri",
                 "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0", "--out",
                 str(tmp_path / "q3"), "--no-progress", "--mlflow", uri, "--mlflow-experiment", "q3"]) == 0
    client, (run,) = runs_of(uri, "q3")
    assert run.data.metrics["pixel_auc_per_image"] > 0.8 and "pixel_auc_pooled" in run.data.metrics
    figures = {f.path for f in client.list_artifacts(run.info.run_id, "heatmaps")}
    assert {"heatmaps/blob_image.png", "heatmaps/blob_mask.png", "heatmaps/blob_map.png"} <= figures


def test_a_database_store_works_too(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a database store's artefacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_cli(data_root, tmp_path / "out", uri, "--mlflow-experiment", "db") == 0
    client, runs = runs_of(uri, "db")
    assert len(runs) == 2 and (tmp_path / "mlruns").is_dir()
    artefacts = {f.path for f in client.list_artifacts(runs[0].info.run_id)}
    assert artefacts == {"figures", "scores.json", "split_manifest.json"}


def test_missing_mlflow_is_one_line_naming_the_extra(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    assert run_cli(data_root, tmp_path / "out", str(tmp_path / "mlruns")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'pip install "fsad-bench[mlflow]"' in err and not (tmp_path / "out").exists()


def test_a_refused_file_store_fails_before_the_store_with_the_fix(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    code = run_cli(data_root, tmp_path / "out", str(tmp_path / "mlruns"))
    if code == 0:  # an MLflow that still accepts file stores
        experiment = f"fsad-bench q1 {(tmp_path / 'out').resolve()}"
        assert len(runs_of((tmp_path / "mlruns").as_uri(), experiment)[1]) == 2
        return
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "MLFLOW_ALLOW_FILE_STORE=true" in err and "sqlite:///" in err
    assert not (tmp_path / "out").exists()


def test_the_score_figure_shows_both_labels_and_the_cells_auc():
    from sklearn.metrics import roc_auc_score

    from fsad_bench.store import CellResult
    from fsad_bench.tracking import score_figure

    scores, labels = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9], [0, 0, 1, 1, 0, 1]
    result = CellResult(key="k", protocol="q1", dataset="d", category="c", method="m", seed=0, setting={},
                        budget="smoke", img_size=32, status="ok")
    result.scores = {"scores": scores, "labels": labels}
    hist, roc = score_figure(result).axes
    assert roc.get_title() == f"AUC-ROC {roc_auc_score(labels, scores):.3f}" == "AUC-ROC 0.889"
    assert [t.get_text() for t in hist.get_legend().get_texts()] == ["normal (3)", "anomaly (3)"]
    assert sum(p.get_height() for p in hist.patches) == len(scores)  # every score in a bar
    result.scores = {"scores": [0.1, 0.2], "labels": [0, 0]}  # one label: no ROC curve to draw
    assert score_figure(result) is None
