"""The suite is isolated from plugins installed where it runs (``conftest.pytest_configure``): a
distribution registering a detector, dataset and report layout named like ours (``devnet``, the
README example's ``brightness``, ``synthetic``, ``table2``) changes no test's result, in the test
process or in the processes tests start; plugins that tests register themselves are still seen."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import PLUGIN_GROUPS, hide_installed_plugins

REPO = Path(__file__).parents[1]

#: tests that a foreign plugin breaks when nothing hides it (checked by hand: each fails then), run
#: in a nested session with the plugin installed before it starts
AFFECTED = [
    "tests/test_cli.py::test_list_shows_detectors_protocols_datasets",  # list: no foreign names, no clash
    "tests/test_plugin_clash.py",  # a clash a test registers is still one; q1's layout table2 resolves
    "tests/test_own_data.py::test_dataset_plugin_runs_q1_and_clashes_are_errors",  # dataset plugins
    "tests/test_plugins.py::test_example_plugin_runs_through_the_cli",  # a test's own plugin, in a subprocess
]


def install_foreign_plugins(site: Path) -> None:
    """A third-party distribution as pip would leave it: a module and a .dist-info folder."""
    site.mkdir(parents=True)
    (site / "foreign_plugins.py").write_text(textwrap.dedent("""
        import numpy as np

        from fsad_bench.data.registry import DatasetInfo
        from fsad_bench.detectors.base import Detector
        from fsad_bench.report.layouts import PaperTableLayout as Table2


        class Brightness(Detector):
            def fit(self, train):
                return self

            def score(self, images):
                return np.zeros(len(images))


        DevNet = Foreign = Brightness
        SYNTHETIC = DatasetInfo("synthetic", "Not ours", True, "foreign", kind="plugin", locate=lambda: "/")
    """))
    info = site / "foreign_plugins-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: foreign-plugins\nVersion: 9.9\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [console_scripts]
        foreign-tool = foreign_plugins:main

        [fsad_bench.detectors]
        brightness = foreign_plugins:Brightness
        devnet = foreign_plugins:DevNet
        foreign = foreign_plugins:Foreign

        [fsad_bench.datasets]
        synthetic = foreign_plugins:SYNTHETIC

        [fsad_bench.layouts]
        table2 = foreign_plugins:Table2
    """))


def test_the_copy_that_hides_a_plugin_keeps_its_name_version_and_other_entry_points(tmp_path, monkeypatch):
    install_foreign_plugins(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "hidden").mkdir()
    hidden = hide_installed_plugins(tmp_path / "hidden")
    assert f"foreign-plugins 9.9 ({tmp_path / 'site' / 'foreign_plugins-9.9.dist-info'})" in hidden
    assert not any(name.startswith("fsad-bench ") for name in hidden)  # our own entry points stay
    copy = tmp_path / "hidden" / "foreign_plugins-9.9.dist-info"
    assert "Name: foreign-plugins\nVersion: 9.9" in (copy / "METADATA").read_text()
    text = (copy / "entry_points.txt").read_text()
    assert "[console_scripts]\nforeign-tool = foreign_plugins:main" in text
    assert not any(group in text for group in PLUGIN_GROUPS)


def test_an_installed_plugin_named_like_ours_changes_no_test(tmp_path):
    site = tmp_path / "site"
    install_foreign_plugins(site)
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    # where nothing hides it, the plugin is installed for real: fsad-bench sees the clash
    listing = subprocess.run([sys.executable, "-m", "fsad_bench.cli", "list"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=300)
    assert "detector name 'devnet' is registered by foreign-plugins 9.9" in listing.stdout
    # a session started with it installed hides it, and the affected tests pass
    nested = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider",
                             "--basetemp", str(tmp_path / "nested"), *AFFECTED], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=900)
    assert nested.returncode == 0, nested.stdout[-4000:] + nested.stderr[-2000:]
    assert f"installed plugins hidden from the tests: foreign-plugins 9.9 ({site}" in nested.stdout
    assert "6 passed" in nested.stdout
