"""``--mlflow``: each stored cell as one MLflow run, checked in real MLflow stores of every form the
docs show: a folder (a SQLite store in it), a ``file:`` URI (MLflow's file store), a ``sqlite:`` URI and
an ``http:`` tracking server (MLflow's own tracking app, served on 127.0.0.1 by a child process)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from fsad_bench.cli import main
from fsad_bench.errors import UserError
from fsad_bench.store import ResultStore
from fsad_bench.tracking import FILE_STORE_OPT_IN, _is_uri, tracking_target

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def run_cli(data_root, out, uri, *extra: str, method: str = "toy_detectors:Brightness") -> int:
    return main(["run", "--methods", method, "--datasets", "brainmri", "--data-root", str(data_root),
                 "--budget", "smoke", "--seeds", "0,1", "--out", str(out), "--no-progress", "--mlflow", uri,
                 *extra])


@pytest.fixture
def no_opt_in(monkeypatch):
    """MLFLOW_ALLOW_FILE_STORE unset, and unset again after the test (fsad-bench may set it)."""
    monkeypatch.setenv(FILE_STORE_OPT_IN, "")  # records the original value for the undo
    monkeypatch.delenv(FILE_STORE_OPT_IN)


def runs_of(uri: str, name: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name!r}"
    return client, client.search_runs([exp.experiment_id])


def test_each_stored_cell_is_one_mlflow_run_with_params_metrics_tags_split(data_root, tmp_path, no_opt_in,
                                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out, folder = tmp_path / "out", tmp_path / "tracking"
    # a folder, no opt-in set: a SQLite store in it, every artefact in it too
    assert run_cli(data_root, out, "tracking", "--mlflow-experiment", "demo", "--set", "power=2") == 0
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    err = capsys.readouterr().err
    assert f"mlflow: experiment 'demo' in SQLite store {folder / 'mlflow.db'}, artefacts in " \
           f"{folder / 'artifacts'}" in err
    assert f"to browse: mlflow ui --backend-store-uri {uri}" in err
    assert sorted(p.name for p in folder.iterdir()) == ["artifacts", "mlflow.db"]
    assert not (tmp_path / "mlruns").exists() and FILE_STORE_OPT_IN not in os.environ
    client, runs = runs_of(uri, "demo")
    assert all(r.info.artifact_uri.startswith((folder / "artifacts").as_uri()) for r in runs)
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
    # a rerun finds every cell finished: nothing new is logged (the folder is the same store, by path)
    assert run_cli(data_root, out, str(folder), "--mlflow-experiment", "demo", "--set", "power=2") == 0
    assert len(runs_of(uri, "demo")[1]) == 2


def test_a_file_uri_is_a_file_store_and_failed_cells_and_localisation_figures_are_logged(
        data_root, tmp_path, no_opt_in, capsys):
    folder = tmp_path / "mlruns"
    uri = folder.as_uri()
    assert run_cli(data_root, tmp_path / "f", uri, method="toy_detectors:AlwaysFails") == 1
    assert os.environ[FILE_STORE_OPT_IN] == "true"  # naming a file store is the opt-in MLflow asks for
    assert (folder / ".trash").is_dir() and not (folder / "mlflow.db").exists()
    err = capsys.readouterr().err
    assert f"to browse: {FILE_STORE_OPT_IN}=true mlflow ui --backend-store-uri {uri}" in err
    _, runs = runs_of(uri, f"fsad-bench q1 {(tmp_path / 'f').resolve()}")  # the default experiment name
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)
    assert all("planned failure" in r.data.tags["fsad.error"] for r in runs)
    # the same folder by path: an existing file store is kept (no SQLite store beside it)
    assert main(["run", "--protocol", "q3", "--methods", "own_data_toys:BrightMap", "--datasets", "brainmri",
                 "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0", "--out",
                 str(tmp_path / "q3"), "--no-progress", "--mlflow", str(folder), "--mlflow-experiment",
                 "q3"]) == 0
    assert f"in MLflow file store {folder} (an existing one, kept)" in capsys.readouterr().err
    assert not (folder / "mlflow.db").exists()
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


def test_a_file_store_refused_on_purpose_fails_before_the_store_with_the_fix(data_root, tmp_path,
                                                                            monkeypatch, capsys):
    monkeypatch.setenv(FILE_STORE_OPT_IN, "false")  # set by the user: fsad-bench does not override it
    uri = (tmp_path / "mlruns").as_uri()
    code = run_cli(data_root, tmp_path / "out", uri)
    if code == 0:  # an MLflow that still accepts file stores
        experiment = f"fsad-bench q1 {(tmp_path / 'out').resolve()}"
        assert len(runs_of(uri, experiment)[1]) == 2
        return
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and f"{FILE_STORE_OPT_IN}=true" in err and "'false'" in err and "sqlite:///" in err
    assert not (tmp_path / "out").exists()


def test_each_form_of_the_option_resolves_as_documented(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tracking_target("runs")  # relative, not yet there
    assert folder.uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}" and not folder.file_store
    assert folder.artifact_location == (tmp_path / "runs" / "artifacts").as_uri()
    assert folder.browse == f"mlflow ui --backend-store-uri {folder.uri}"
    file = tracking_target((tmp_path / "fs").as_uri())
    assert file.file_store and file.artifact_location is None
    assert file.where == f"MLflow file store {tmp_path / 'fs'}"
    for uri in ("sqlite:///mlflow.db", "postgresql://u@host/db", "databricks", "databricks://profile"):
        assert tracking_target(uri).uri == uri and not tracking_target(uri).file_store
    http = tracking_target("http://127.0.0.1:5000")
    assert (http.uri, http.browse) == ("http://127.0.0.1:5000", "open http://127.0.0.1:5000 in a browser")
    assert not _is_uri("C:\\runs") and not _is_uri("./a:b") and _is_uri("https://x")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match="is a file; pass a folder"):
        tracking_target("a-file")


def test_a_tracking_server_nobody_runs_is_one_line_at_once(data_root, tmp_path, capsys):
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert run_cli(data_root, tmp_path / "out", f"http://127.0.0.1:{port}") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"no tracking server answers at 127.0.0.1:{port}" in err and "mlflow server" in err
    assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()  # not MLflow's ~4 min of retries


SERVER = textwrap.dedent("""
    import os, sys
    from mlflow.server import constants as c
    root = sys.argv[1]  # as `mlflow server --backend-store-uri sqlite:///ROOT/mlflow.db --serve-artifacts`
    os.environ.update({c.BACKEND_STORE_URI_ENV_VAR: f"sqlite:///{root}/mlflow.db",
                       c.ARTIFACT_ROOT_ENV_VAR: "mlflow-artifacts:/", c.SERVE_ARTIFACTS_ENV_VAR: "true",
                       c.ARTIFACTS_DESTINATION_ENV_VAR: f"{root}/artifacts"})
    from werkzeug.serving import make_server
    from mlflow.server import app
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()
""")


@pytest.fixture
def tracking_server(tmp_path):
    """MLflow's tracking app (the one `mlflow server` runs: REST API and artefact proxy), served on a
    free 127.0.0.1 port by a child process; `mlflow server` itself takes ~20 s to start here and its
    job consumers outlive a SIGTERM. Bounded start; stopped, with its process group, after the test."""
    root = tmp_path / "server"
    root.mkdir()
    log = open(root / "log", "w")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], stdout=subprocess.PIPE, stderr=log,
                            text=True, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 90)  # its port, or EOF if it died
        line = proc.stdout.readline().strip() if ready else ""
        assert line.isdigit(), f"the tracking server did not start: {(root / 'log').read_text()[-2000:]}"
        yield f"http://127.0.0.1:{line}", root
    finally:  # the child and anything it started (its own session, so its own process group)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.stdout.close()
        log.close()


def test_an_http_tracking_server_gets_each_cell(data_root, tmp_path, tracking_server, capsys):
    uri, root = tracking_server
    assert run_cli(data_root, tmp_path / "out", uri, "--mlflow-experiment", "http") == 0
    assert f"to browse: open {uri} in a browser" in capsys.readouterr().err
    client, runs = runs_of(uri, "http")
    assert len(runs) == 2 and {r.data.tags["fsad.status"] for r in runs} == {"ok"}
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in runs)  # through the server
    scores = client.download_artifacts(runs[0].info.run_id, "scores.json", str(tmp_path))
    assert len(json.load(open(scores))["labels"]) > 0
    assert (root / "mlflow.db").is_file() and any((root / "artifacts").rglob("scores.json"))


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
