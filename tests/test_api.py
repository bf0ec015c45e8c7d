"""The Python API: ``fsad_bench.run`` (same code path as the CLI), ``load_results``, detector classes
passed directly, and the docs' example (docs/python-api.md), executed as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from own_data_toys import BrightMap

import fsad_bench
from fsad_bench.api import FIRST_COLUMNS
from fsad_bench.cli import main
from fsad_bench.detectors.base import Detector, TrainSet
from fsad_bench.errors import UserError

README = Path(__file__).parents[1] / "docs/python-api.md"


def readme_python_block(heading: str = "# Python API") -> str:
    """The first ```python block of the docs page's section ``heading``."""
    text = README.read_text()
    section = text[text.index(heading):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    code = readme_python_block()
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, f"{README}:Python API", "exec"), namespace)
    df, raw = namespace["df"], namespace["raw"]
    assert list(df.columns[:len(FIRST_COLUMNS)]) == FIRST_COLUMNS
    assert set(df.method) == {"brightness", "devnet"} and (df.status == "ok").all()
    assert len(df) == 2 * df.category.nunique() * df.seed.nunique()
    assert sorted(raw.key) == sorted(df.key) and (tmp_path / "results/api-demo/cells.csv").is_file()


def test_run_returns_the_grid_rows_stored_and_equal_to_the_cli(data_root, tmp_path):
    kwargs = dict(protocol="q1", datasets=["brainmri"], seeds=[0, 1], budget="smoke", data_root=data_root,
                  progress=False)
    df = fsad_bench.run(methods=["toy_detectors:Brightness", BrightMap], out=tmp_path / "api", **kwargs)
    assert list(df.columns[:len(FIRST_COLUMNS)]) == FIRST_COLUMNS and len(df) == 4
    assert set(df.method) == {"toy_detectors:Brightness", "brightmap"}  # a class runs under its name
    assert (df.status == "ok").all() and (df.auc_roc > 0.9).all() and df.attrs["ok"] == 4
    raw = fsad_bench.load_results(tmp_path / "api")
    merged = df.merge(raw, on="key", suffixes=("", "_stored"))
    assert len(merged) == 4 and np.allclose(merged.auc_roc, merged.auc_roc_stored)
    # the CLI computes the same cells (same keys) and the same numbers
    assert main(["run", "--methods", "toy_detectors:Brightness", "--datasets", "brainmri", "--data-root",
                 str(data_root), "--budget", "smoke", "--seeds", "0,1", "--out", str(tmp_path / "cli"),
                 "--no-progress"]) == 0
    cli = fsad_bench.load_results(tmp_path / "cli").set_index("key")
    api = df[df.method == "toy_detectors:Brightness"].set_index("key")
    assert sorted(cli.index) == sorted(api.index)
    assert np.allclose(cli.loc[api.index, "auc_roc"], api.auc_roc)
    again = fsad_bench.run(methods=["toy_detectors:Brightness", BrightMap], out=tmp_path / "api", **kwargs)
    assert again.attrs["already_finished"] == 4 and again.attrs["ok"] == 0
    assert np.allclose(again.auc_roc, df.auc_roc)


def test_overrides_mapping_is_set(data_root, tmp_path):
    df = fsad_bench.run(methods=["toy_detectors:Brightness"], datasets=["brainmri"], seeds=[0],
                        budget="smoke", data_root=data_root, out=tmp_path / "o", overrides={"power": 2},
                        progress=False)
    assert df.params[0]["power"] == 2.0


class Imposter(Detector):
    name = "devnet"

    def fit(self, train: TrainSet) -> Imposter:
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return np.zeros(len(images))


def test_bad_methods_are_user_errors_before_anything_is_written(data_root, tmp_path):
    common = dict(datasets=["brainmri"], seeds=[0], budget="smoke", data_root=data_root, out=tmp_path / "x")
    with pytest.raises(UserError, match="already has"):
        fsad_bench.run(methods=[Imposter], **common)
    with pytest.raises(UserError, match="neither a method name nor"):
        fsad_bench.run(methods=[object], **common)
    with pytest.raises(UserError, match="no results in"):
        fsad_bench.load_results(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_class_workers_cannot_import_is_refused_with_workers_and_runs_in_the_driver(data_root, tmp_path):
    class Local(BrightMap):  # defined inside a function: a spawned worker cannot import it
        name = "local"

    common = dict(datasets=["brainmri"], seeds=[0, 1], budget="smoke", data_root=data_root, device="cpu",
                  progress=False)
    with pytest.raises(UserError, match="cannot run in worker processes: it is defined inside a function"):
        fsad_bench.run(methods=[Local], jobs=2, out=tmp_path / "pool", **common)
    assert not (tmp_path / "pool").exists()
    df = fsad_bench.run(methods=[Local], jobs=1, out=tmp_path / "driver", **common)
    assert (df.status == "ok").all() and set(df.method) == {"local"}


def test_a_worker_that_cannot_import_the_class_stores_a_one_line_failed_cell(data_root, tmp_path,
                                                                            monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "vanishing_detector.py").write_text(textwrap.dedent("""
        import numpy as np
        from fsad_bench.detectors.base import Detector

        class Vanishing(Detector):
            name = "vanishing"

            def fit(self, train):
                return self

            def score(self, images):
                return images.reshape(len(images), -1).mean(1)
    """))
    monkeypatch.syspath_prepend(str(mods))
    import vanishing_detector

    shutil.rmtree(mods)  # the driver holds the class; fresh worker processes cannot import it
    df = fsad_bench.run(methods=[vanishing_detector.Vanishing], datasets=["brainmri"], seeds=[0, 1],
                        budget="smoke", data_root=data_root, out=tmp_path / "out", jobs=2, device="cpu",
                        progress=False)
    assert list(df.status) == ["failed", "failed"] and set(df.method) == {"vanishing"}
    for error in df.error:
        assert error.startswith("cannot import detector 'vanishing_detector:Vanishing'") and "\n" not in error
        assert "worker process died" not in error


def test_importing_fsad_bench_stays_cheap():
    code = ("import sys, fsad_bench; heavy = [m for m in ('torch', 'pandas', 'sklearn') if m in sys.modules];"
            "assert not heavy, heavy; assert callable(fsad_bench.run) and 'pandas' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
