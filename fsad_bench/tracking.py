"""Experiment tracking: each stored cell as one MLflow run (``fsad-bench run --mlflow URI``).

The driver logs a cell right after the results store committed it (the store stays the record; MLflow
is a copy for browsing), so MLflow never holds a cell the store lacks. Per run:

* params: protocol, method, dataset, category, seed, budget, img_size, the setting (``setting.*``) and
  the resolved hyper-parameters (``param.*``);
* metrics: auc_roc, auc_pr, pixel metrics (q3), wall_s, peak_mem_mb (failed cells: wall_s only);
* tags: ``fsad.cell_key``, ``fsad.split_hash`` (the split manifest's hash), ``fsad.status``,
  ``fsad.code_version``, ``fsad.device``, ``fsad.weights``, ``fsad.out``, and ``fsad.error``;
* artefacts: ``split_manifest.json`` (labelled anomalies and test files), ``scores.json`` (test scores
  and labels, per-anomaly pixel AUCs) and, for localisation cells, one ``heatmaps/<class>_*.png``
  image / mask / map triple per defect class.

Where runs go (:func:`tracking_target`): a tracking URI is used as given (``sqlite:///mlflow.db``,
``http://host:5000``, ...); a ``file:`` URI is MLflow's file store, which MLflow >= 3.7 refuses unless
``MLFLOW_ALLOW_FILE_STORE`` is true, so it is set for this process when unset (naming a file store is
the opt-in); a plain folder is a SQLite store inside it (``FOLDER/mlflow.db``, artefacts in
``FOLDER/artifacts``), so that the folder holds everything and ``mlflow ui`` opens it without the
opt-in, unless the folder already is a file store (then that store, as for ``file:``).

``mlflow`` is an optional extra (``pip install "fsad-bench[mlflow]"``) and imported only here.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shlex
import socket
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsad_bench.errors import UserError
from fsad_bench.store import CellResult, ResultStore

EXTRA = 'pip install "fsad-bench[mlflow]"'
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
#: the MLflow file store is refused by MLflow >= 3.7 unless this environment variable is set
FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"
#: a folder given to --mlflow holds a SQLite store of this name and the artefacts in ARTIFACTS_DIR
FOLDER_DB, ARTIFACTS_DIR = "mlflow.db", "artifacts"
PROBE_TIMEOUT_S = 5.0  # an http(s) tracking server that accepts no connection in this time is an error


@dataclass(frozen=True)
class TrackingTarget:
    """What ``--mlflow`` names: the MLflow tracking URI, the artefact location of experiments this run
    creates (None: the store's default), what was asked for in words, and how to browse it."""

    uri: str
    artifact_location: str | None
    where: str
    browse: str
    file_store: bool = False


def _is_uri(text: str) -> bool:
    """A URI with a scheme (``sqlite:``, ``http:``, ``file:``, ...) rather than a path; a Windows drive
    (``C:\\runs``) is a path."""
    return text == "databricks" or re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", text) is not None


def _ui(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"


def _is_file_store(folder: Path) -> bool:
    """A folder MLflow's file store wrote (``.trash`` and one ``meta.yaml`` per experiment)."""
    return folder.is_dir() and ((folder / ".trash").is_dir() or any(folder.glob("*/meta.yaml")))


def _file_store_target(uri: str, folder: Path, why: str) -> TrackingTarget:
    return TrackingTarget(uri, None, f"MLflow file store {folder}{why}",
                          f"{FILE_STORE_OPT_IN}=true {_ui(uri)}", file_store=True)


def tracking_target(text: str) -> TrackingTarget:
    """``--mlflow`` resolved (see the module docstring); a path that is a file is a UserError."""
    if _is_uri(text):
        if text.startswith("file:"):
            folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path))
            return _file_store_target(text, folder, "")
        if text.startswith(("http:", "https:")):
            return TrackingTarget(text, None, f"tracking server {text}", f"open {text} in a browser")
        return TrackingTarget(text, None, text, _ui(text))
    folder = Path(text).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--mlflow {text}: {folder} is a file; pass a folder (a SQLite store is made in "
                        "it) or a tracking URI such as sqlite:///mlflow.db")
    if _is_file_store(folder):
        return _file_store_target(folder.as_uri(), folder, " (an existing one, kept)")
    uri = f"sqlite:///{(folder / FOLDER_DB).as_posix()}"
    artifacts = folder / ARTIFACTS_DIR
    return TrackingTarget(uri, artifacts.as_uri(), f"SQLite store {folder / FOLDER_DB}, artefacts in "
                          f"{artifacts}", _ui(uri))


def _probe(uri: str) -> None:
    """Fail at once, not after MLflow's minutes of retries, when nothing accepts a connection at an
    http(s) tracking URI's host and port (skipped where a proxy is configured for it)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"--mlflow {uri}: no tracking server answers at {parts.hostname}:{port} "
                        f"({exc.strerror or type(exc).__name__}); start it (mlflow server) or fix the URI"
                        ) from None


def default_experiment(protocol: str, out: Path) -> str:
    """One experiment per protocol and results folder: ``fsad-bench q1 /abs/results/q1``."""
    return f"fsad-bench {protocol} {Path(out).expanduser().resolve()}"


def _mlflow() -> Any:
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError(f"--mlflow needs the mlflow package: {EXTRA}") from None
    return mlflow, MlflowClient


class MlflowTracker:
    """Logs cells into one experiment; built before the grid, so a bad URI fails before any cell."""

    def __init__(self, uri: str, experiment: str) -> None:
        mlflow, client_cls = _mlflow()
        self.target = tracking_target(uri)
        self.uri = self.target.uri
        self.experiment = experiment
        self.failures: list[str] = []
        self.logged = 0
        if self.target.file_store:  # naming a file store is the opt-in MLflow >= 3.7 asks for
            os.environ.setdefault(FILE_STORE_OPT_IN, "true")
        _probe(self.uri)
        try:
            self.client = client_cls(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(
                experiment, artifact_location=self.target.artifact_location)
        except mlflow.exceptions.MlflowException as exc:
            text = str(exc) or type(exc).__name__
            if self.target.file_store and FILE_STORE_OPT_IN in text:
                raise UserError(f"--mlflow {uri}: MLflow {mlflow.__version__} refuses file stores unless "
                                f"{FILE_STORE_OPT_IN}=true, and it is set to "
                                f"{os.environ.get(FILE_STORE_OPT_IN)!r}; unset it, or pass a folder (a "
                                "SQLite store is made in it) or a database URI such as sqlite:///mlflow.db"
                                ) from None
            first = text.strip().splitlines()[0].split(". ")[0]
            raise UserError(f"--mlflow {uri}: {first[:200]}") from None

    def log(self, result: CellResult, out: Path) -> str:
        """One MLflow run for ``result``; returns its run id."""
        from mlflow.entities import Metric, Param, RunTag

        tags = {"fsad.cell_key": result.key, "fsad.split_hash": result.manifest_hash,
                "fsad.status": result.status, "fsad.code_version": result.code_version,
                "fsad.device": result.device, "fsad.weights": result.weights, "fsad.out": str(out),
                "fsad.protocol": result.protocol}
        if result.error:
            tags["fsad.error"] = result.error[:5000]
        setting = ",".join(f"{k}={v}" for k, v in sorted(result.setting.items()))
        name = f"{result.dataset}/{result.category} {result.method} seed={result.seed}" + \
            (f" {setting}" if setting else "")
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        params = {"protocol": result.protocol, "method": result.method, "dataset": result.dataset,
                  "category": result.category, "seed": result.seed, "budget": result.budget,
                  "img_size": result.img_size}
        params.update({f"setting.{k}": v for k, v in result.setting.items()})
        params.update({f"param.{k}": v for k, v in result.params.items()})
        stamp = int(time.time() * 1000)
        values = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
        values.update(wall_s=result.wall_s, peak_mem_mb=result.peak_mem_mb)
        metrics = [Metric(k, float(v), stamp, 0) for k, v in values.items()
                   if v is not None and math.isfinite(float(v))]
        self.client.log_batch(run_id, metrics=metrics,
                              params=[Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()],
                              tags=[RunTag(k, str(v)) for k, v in tags.items()])
        if result.manifest:
            self.client.log_dict(run_id, result.manifest, "split_manifest.json")
        scores = {k: v for k, v in result.scores.items() if k not in ("examples", "gallery")}  # no images
        if "pixel_auc_each" in result.metrics:
            scores["pixel_auc_each"] = result.metrics["pixel_auc_each"]
        if scores:
            self.client.log_dict(run_id, scores, "scores.json")
        figure = score_figure(result)
        if figure is not None:
            self.client.log_figure(run_id, figure, "figures/scores.png")
        for example in result.scores.get("examples", []):
            for part in ("image", "mask", "map"):
                self.client.log_image(run_id, _decode_png(example[part]),
                                      artifact_file=f"heatmaps/{example['class']}_{part}.png")
        self.client.set_terminated(run_id, "FINISHED" if result.status in ("ok", "skipped") else "FAILED")
        self.logged += 1
        return run_id


def score_figure(result: CellResult) -> Any:
    """The cell's test scores as a figure (a histogram per label and the ROC curve), or None when the
    cell has no scores of both labels. A matplotlib Figure not attached to pyplot (no global state)."""
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = np.asarray(result.scores.get("scores", []), dtype=float)
    labels = np.asarray(result.scores.get("labels", []), dtype=int)
    if len(scores) == 0 or len(scores) != len(labels) or len(set(labels.tolist())) < 2:
        return None
    fig = Figure(figsize=(8, 3.2))
    hist, roc = fig.subplots(1, 2)
    bins = np.histogram_bin_edges(scores, bins=30)
    for label, name, colour in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
        hist.hist(scores[labels == label], bins=bins, alpha=0.6, color=colour,
                  label=f"{name} ({int((labels == label).sum())})")
    hist.set_xlabel("anomaly score")
    hist.set_ylabel("test images")
    hist.legend(fontsize=8)
    fpr, tpr, _ = roc_curve(labels, scores)
    roc.plot(fpr, tpr, color="black")
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.set_title(f"AUC-ROC {roc_auc_score(labels, scores):.3f}", fontsize=9)
    fig.suptitle(f"{result.dataset}/{result.category} {result.method} seed={result.seed} "
                 f"(budget {result.budget})", fontsize=9)
    fig.tight_layout()
    return fig


def _decode_png(b64: str) -> Any:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(b64)))


class TrackedStore:
    """The results store, with every ``put`` also logged to MLflow (after the store committed it).

    A logging failure (server gone, disk full) does not stop the grid or lose the cell: it is
    printed at once, counted, and reported when the run ends (``tracker.failures``)."""

    def __init__(self, store: ResultStore, tracker: MlflowTracker, out: Path) -> None:
        self.store = store
        self.tracker = tracker
        self.out = out

    def put(self, result: CellResult) -> None:
        self.store.put(result)
        try:
            self.tracker.log(result, self.out)
        except Exception as exc:  # reported here and at the end of the run, never dropped silently
            msg = f"{result.dataset}/{result.category} {result.method} seed={result.seed}: " \
                  f"{type(exc).__name__}: {str(exc)[:200]}"
            self.tracker.failures.append(msg)
            print(f"fsad-bench: mlflow: cell not logged ({msg}); it is in the results store", file=sys.stderr)

    def __getattr__(self, name: str) -> Any:  # done_keys, dataframe, ...: the store's own
        return getattr(self.store, name)
