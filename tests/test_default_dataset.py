"""Which dataset a run uses when no dataset of its spec is prepared: ELPV, prepared once from the
installed elpv-dataset package, else the embedded synthetic; the choice and its reason are printed."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from fsad_bench.errors import DataError
from fsad_bench.protocol import load_protocol
from fsad_bench.runner import generator
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.request import RunRequest


def fake_elpv_package(site: str, n_normal: int = 40, n_per_type: int = 12, size: int = 32) -> None:
    """A package ``elpv_dataset`` on ``site`` with the real one's data layout (labels.csv + images)."""
    from pathlib import Path

    pkg = Path(site) / "elpv_dataset"
    (pkg / "data" / "images").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    rng = np.random.default_rng(0)
    rows = []
    kinds = [(0.0, "mono")] * n_normal + [(1.0, "mono")] * n_per_type + [(1.0, "poly")] * n_per_type
    kinds += [(1 / 3, "poly")] * 3  # dropped by the paper's rule
    for i, (prob, kind) in enumerate(kinds):
        img = rng.integers(90, 130, (size, size), dtype=np.uint8)
        if prob == 1.0:
            img[8:16, 8:16] = 250
        Image.fromarray(img).save(pkg / "data" / "images" / f"cell{i:04d}.png")
        rows.append(f"images/cell{i:04d}.png  {prob:.10f}  {kind}")
    (pkg / "data" / "labels.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def auto_elpv(monkeypatch, tmp_path):
    # the real package may be installed and imported by an earlier test: find_spec would return it
    monkeypatch.delitem(sys.modules, "elpv_dataset", raising=False)
    monkeypatch.setenv("FSAD_AUTO_ELPV", "1")
    monkeypatch.setenv("FSAD_DATA", str(tmp_path / "data"))
    return tmp_path


def _datasets(**req) -> set[str]:
    cells, _ = build_cells(load_protocol("q1"), RunRequest(methods=["devnet"], budget="smoke", seeds=[0],
                                                            **req))
    return {c.dataset for c in cells}


def test_installed_elpv_package_is_prepared_once_and_run_with_the_reason_printed(auto_elpv, monkeypatch,
                                                                                 capsys):
    site = auto_elpv / "site"
    fake_elpv_package(str(site))
    monkeypatch.syspath_prepend(str(site))
    assert _datasets() == {"elpv"}
    err = capsys.readouterr().err
    assert "no dataset of protocol q1 is prepared" in err and "elpv-dataset package is installed" in err
    assert "elpv ready in" in err and (auto_elpv / "data" / "elpv" / "elpv" / "train" / "good").is_dir()
    train = sorted((auto_elpv / "data" / "elpv" / "elpv" / "train" / "good").iterdir())
    assert len(train) == 30  # 40 normals, 75/25
    assert _datasets() == {"elpv"}  # now simply a present dataset: not prepared again, nothing printed
    assert "prepared into" not in capsys.readouterr().err


def test_without_the_package_the_synthetic_fallback_says_how_to_get_elpv(auto_elpv, monkeypatch, capsys):
    monkeypatch.setattr(generator, "elpv_package_installed", lambda: False)
    assert _datasets() == {"synthetic"}
    assert "pip install 'fsad-bench[elpv]'" in capsys.readouterr().err


def test_auto_elpv_off_or_explicit_datasets_never_prepare(auto_elpv, monkeypatch, capsys):
    monkeypatch.setattr(generator, "elpv_package_installed", lambda: True)
    monkeypatch.setattr(generator, "_prepare_auto_dataset", lambda *a: pytest.fail("must not prepare"))
    assert _datasets(datasets=["synthetic"]) == {"synthetic"}
    monkeypatch.setenv("FSAD_AUTO_ELPV", "0")
    assert _datasets() == {"synthetic"}
    assert not (auto_elpv / "data" / "elpv").exists()


def test_a_broken_package_is_a_one_line_error_naming_the_way_out(auto_elpv, monkeypatch):
    site = auto_elpv / "site"
    (site / "elpv_dataset").mkdir(parents=True)
    (site / "elpv_dataset" / "__init__.py").write_text("")  # no data/labels.csv
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(DataError, match=r"labels\.csv.*--datasets synthetic") as info:
        _datasets()
    assert "\n" not in str(info.value)
    assert not (auto_elpv / "data" / "elpv").exists()


def test_a_dry_run_never_prepares_elpv_and_says_what_a_real_run_would_do(auto_elpv, monkeypatch, capsys):
    from fsad_bench.cli import main

    site = auto_elpv / "site"
    fake_elpv_package(str(site))
    monkeypatch.syspath_prepend(str(site))
    out = auto_elpv / "results"
    assert main(["run", "--protocol", "q1", "--methods", "devnet", "--budget", "smoke", "--out", str(out),
                 "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "dry run (nothing is run or written): protocol q1, budget smoke, grid not known yet" in text
    assert "a real run first prepares ELPV from the installed elpv-dataset package" in text
    assert "fsad-bench data prepare elpv" in text
    assert not (auto_elpv / "data").exists() and not out.exists()  # nothing prepared, nothing written
    assert _datasets() == {"elpv"}  # the real run still prepares it
