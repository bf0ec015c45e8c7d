"""A results folder describes itself: its store records each protocol's resolved spec, each method's
report metadata and a configuration id per row, and the report reads nothing else. So a folder
reports the same after the plugin that made it is uninstalled, a spec given as a path keeps its
layout, and a folder written before stores described themselves reports as it did."""

from __future__ import annotations

import re
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from fsad_bench.cli import main
from fsad_bench.detectors.registry import load_detector
from fsad_bench.errors import UserError
from fsad_bench.store import STORE_NAME, ResultStore

EXAMPLE = Path(__file__).parents[1] / "examples" / "fsad_plugin_example"


def _report(folder: Path, capsys, *extra: str) -> str:
    assert main(["report", str(folder), *extra]) == 0
    return capsys.readouterr().out


def _install(site: Path, monkeypatch) -> None:
    """The example plugin 'installed': its package and a .dist-info with its entry point on the path."""
    info = site / "fsad_plugin_example-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fsad-plugin-example\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[fsad_bench.detectors]\n"
                                           "patchcolour = fsad_plugin_example.detector:PatchColour\n")
    shutil.copytree(EXAMPLE / "fsad_plugin_example", site / "fsad_plugin_example")
    monkeypatch.syspath_prepend(str(site))


def test_a_folder_made_with_a_plugin_reports_the_same_after_it_is_uninstalled(tmp_path, data_root, capsys,
                                                                              monkeypatch):
    site = tmp_path / "site"
    _install(site, monkeypatch)
    out = tmp_path / "out"
    assert main(["run", "--methods", "patchcolour,toy_detectors:Brightness", "--datasets", "brainmri",
                 "--data-root", str(data_root), "--budget", "smoke", "--seeds", "0,1", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    before = _report(out, capsys, "--compare-paper")
    assert "PatchColour" in before  # the plugin's declared display name, recorded at run time
    with ResultStore(out) as store:
        described = store.descriptions()
    assert described["methods"]["patchcolour"]["display_name"] == "PatchColour"
    assert described["protocols"]["q1"]["report"] == "table2"

    shutil.rmtree(site)  # uninstall the plugin
    for name in [m for m in sys.modules if m.startswith("fsad_plugin_example")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(UserError, match="unknown method 'patchcolour'"):
        load_detector("patchcolour")
    assert _report(out, capsys, "--compare-paper") == before


def test_a_spec_given_as_a_path_is_reported_in_its_own_layout(tmp_path, data_root, capsys):
    spec = tmp_path / "mine.toml"
    spec.write_text('name = "mine"\nsplit = "q1"\ndatasets = ["brainmri"]\n'
                    'methods = ["toy_detectors:Brightness"]\nreport = "curve"\ncurve_x = "n_anomaly"\n'
                    'title = "My curve"\n[settings]\nn_anomaly = [2, 4]\n')
    out = tmp_path / "out"
    assert main(["run", "--protocol", str(spec), "--data-root", str(data_root), "--budget", "smoke",
                 "--seeds", "0", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    text = _report(out, capsys)
    assert "## My curve" in text and re.search(r"\| Data +\| n_anomaly +\|", text)
    assert "p-value" not in text  # a curve, not Table 2's layout with its p-value rows
    assert (out / "figures" / "mine.png").is_file()
    spec.unlink()  # the report never reads the spec file again
    assert _report(out, capsys) == text


def test_a_folder_written_before_stores_described_themselves_reports_as_before(tmp_path, data_root, capsys):
    out = tmp_path / "out"
    assert main(["run", "--methods", "toy_detectors:Brightness", "--datasets", "brainmri", "--data-root",
                 str(data_root), "--budget", "smoke", "--seeds", "0,1", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    described = _report(out, capsys, "--compare-paper")
    with sqlite3.connect(out / STORE_NAME) as con:  # the 0.1 layout: no descriptions, no configuration ids
        con.execute("DROP TABLE protocols")
        con.execute("DROP TABLE methods")
        con.execute("UPDATE cells SET config_id = ''")
    assert _report(out, capsys, "--compare-paper") == described
    with ResultStore(out) as store:  # described once, in place
        assert set(store.descriptions()["protocols"]) == {"q1"}
