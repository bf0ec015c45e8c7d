"""Shadowed plugins: a detector name registered by two distributions is an error naming both (never
a silent replacement of the built-in), ``fsad-bench list`` shows the clash, and a plugin calling
``sys.exit`` at import is a named broken plugin, not a dead process."""

from __future__ import annotations

import sys

import pytest
from test_plugins import register

import fsad_bench
from fsad_bench.cli import main
from fsad_bench.detectors.registry import available_detectors, detector_clashes, load_detector
from fsad_bench.errors import UserError
from fsad_bench.protocol import load_protocol
from fsad_bench.runner.generator import build_cells
from fsad_bench.runner.request import RunRequest
from fsad_methods.devnet import DevNet


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    return site


def test_a_plugin_named_like_a_builtin_is_an_error_naming_both(site, data_root, capsys):
    register(site, "evil_plugin", "devnet = toy_detectors:Brightness")
    with pytest.raises(UserError, match="detector name 'devnet' is registered by") as exc:
        load_detector("devnet")
    assert f"fsad-bench {fsad_bench.__version__} (fsad_methods.devnet:DevNet)" in str(exc.value)
    assert "evil_plugin 0.1.0 (toy_detectors:Brightness)" in str(exc.value)
    assert "devnet" not in available_detectors() and "flos" in available_detectors()
    assert [c.name for c in detector_clashes()] == ["devnet"]
    # the dotted path still reaches the built-in
    assert load_detector("fsad_methods.devnet:DevNet") is DevNet
    req = RunRequest(methods=["devnet"], datasets=["brainmri"], seeds=[0], budget="smoke",
                      data_root=data_root)
    with pytest.raises(UserError, match="evil_plugin"):
        build_cells(load_protocol("q1"), req)
    code = main(["run", "--methods", "devnet", "--datasets", "brainmri", "--data-root", str(data_root),
                 "--budget", "smoke", "--seeds", "0", "--out", str(site.parent / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "fsad-bench" in err and "evil_plugin" in err
    assert not (site.parent / "out" / "results.sqlite").exists()


def test_list_shows_the_clash(site, capsys):
    register(site, "first_plugin", "twin = toy_detectors:Brightness")
    register(site, "second_plugin", "twin = toy_detectors:Slow")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    clash = [line for line in out.splitlines() if "CLASH" in line]
    assert len(clash) == 1 and "'twin'" in clash[0]
    assert "first_plugin 0.1.0 (toy_detectors:Brightness)" in clash[0]
    assert "second_plugin 0.1.0 (toy_detectors:Slow)" in clash[0]
    assert not any(line.split()[:1] == ["twin"] for line in out.splitlines())  # not listed as usable


def test_plugin_calling_sys_exit_at_import_is_a_named_broken_plugin(site, capsys):
    (site / "exiting_plugin.py").parent.mkdir(parents=True, exist_ok=True)
    (site / "exiting_plugin.py").write_text("import sys\nsys.exit(3)\n")
    register(site, "exiting_dist", "quitter = exiting_plugin:Quitter")
    with pytest.warns(RuntimeWarning, match=r"'quitter'.*sys\.exit\(3\)"):
        found = available_detectors()
    assert "quitter" not in found and "devnet" in found
    with pytest.raises(UserError, match=r"'quitter'.*exiting_dist.*sys\.exit\(3\)"):
        load_detector("quitter")
    with pytest.raises(UserError, match=r"exiting_plugin called sys\.exit\(3\)"):
        load_detector("exiting_plugin:Quitter")
    assert main(["list"]) == 0  # the process lives on
    out = capsys.readouterr().out
    assert any("WARNING" in line and "quitter" in line and "sys.exit(3)" in line for line in out.splitlines())
    assert "exiting_plugin" not in sys.modules
