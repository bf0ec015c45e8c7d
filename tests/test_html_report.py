"""The HTML report end to end: written from a results store, opened in headless Chromium, which must
render the tables (DOM rows) and the embedded figures (decoded images, a non-blank screenshot), in the
report's order: the budget banner, the protocols' tables and figures, the failed cells, and the run
settings collapsed at the end. The LaTeX report: well-formed, every caption naming the budget."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsad_bench.cli import main
from fsad_bench.store import CellResult, ResultStore

DATASETS = ["aitex", "sdd", "elpv", "optical", "mastcam", "brainmri", "headct", "hyperkvasir"]
METHODS = {"devnet": 0.85, "minns": 0.80, "flos": 0.78, "kdad": 0.70}


def _result(i: int, protocol: str, dataset: str, method: str, seed: int, value: float, **kw) -> CellResult:
    return CellResult(key=f"{protocol}-{i}", protocol=protocol, dataset=dataset, category=dataset,
                      method=method, seed=seed, setting=kw.pop("setting", {"n_anomaly": 10}), budget="quick",
                      img_size=64, status=kw.pop("status", "ok"), auc_roc=value, auc_pr=value, device="cpu",
                      weights="none", code_version="0.1.0", finished_at="2026-11-29T10:00:00+00:00", **kw)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A store with Q1 on 8 datasets x 4 methods x 3 seeds, a Q5 curve, and one failed cell."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "res"
    i = 0
    with ResultStore(folder) as store:
        for d in DATASETS:
            for m, base in METHODS.items():
                for seed in range(3):
                    store.put(_result(i := i + 1, "q1", d, m, seed, base + rng.normal(0, 0.02)))
                    for n in (5, 10):
                        store.put(_result(i := i + 1, "q5", d, m, seed, base - 0.05 + 0.005 * n,
                                          setting={"n_anomaly": n}))
        store.put(_result(i + 1, "q1", "aitex", "deepsad", 0, None, status="failed",
                          error="RuntimeError: CUDA out of memory (deepsad.py:42)"))
    return folder


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("FSAD_SKIP_BROWSER"):
        pytest.skip("FSAD_SKIP_BROWSER is set and no Chromium is installed")
    pytest.fail("headless Chromium is needed for the HTML check: apt-get install chromium "
                "(.ci/run does), or set FSAD_SKIP_BROWSER=1 to skip it")


def _browser(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


#: what the page reports after load (the report itself has no script): images that decoded, <img>
#: per protocol section, whether every results table comes before the collapsed settings
_PROBE = """<script>window.addEventListener('load', () => {
  const settings = document.querySelector('details#settings');
  const tables = [...document.querySelectorAll('section[data-protocol] table')];
  const figures = {};
  for (const s of document.querySelectorAll('section[data-protocol]')) {
    figures[s.dataset.protocol] = s.querySelectorAll('img').length;
  }
  document.body.dataset.probe = JSON.stringify({
    images: document.images.length,
    decoded: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
    figures: figures,
    sections: [...document.querySelectorAll('section[data-protocol]')].map(s => s.dataset.protocol),
    tables: tables.length,
    tablesBeforeSettings: tables.every(t => t.compareDocumentPosition(settings)
                                            & Node.DOCUMENT_POSITION_FOLLOWING),
    settingsOpen: settings.open,
    settingsRows: settings.querySelectorAll('table.settings tr').length,
    banner: document.querySelector('.banner').textContent,
    bannerFirst: document.querySelector('.banner').compareDocumentPosition(tables[0])
                 & Node.DOCUMENT_POSITION_FOLLOWING,
  });
});</script></body>"""


def test_html_report_renders_in_chromium(results, tmp_path):
    long_value = "x" * 400 + "-end-of-a-long-manifest-value"  # longer than the 300 characters once cut
    (results / "run_manifest.json").write_text(json.dumps({"command": ["fsad-bench", "run"],
                                                           "executor": {"note": long_value}}))
    assert main(["report", str(results), "--format", "html", "--compare-paper"]) == 0
    page = results / "report.html"
    html = page.read_text()
    assert "src=\"http" not in html and "<script" not in html  # self-contained, no external resources
    n_images = html.count("data:image/png;base64,")
    assert n_images == 3  # Q1: per-dataset bars and the critical-difference diagram; Q5: the curves
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _PROBE))
    dom = _browser(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = json.loads(unescape(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1)))
    assert found["images"] == found["decoded"] == n_images  # every <img> decodes
    # report first: protocols in order, each with its figures, every table before the run settings,
    # which are collapsed, at the end and uncut
    assert found["sections"] == ["q1", "q5"]
    assert found["figures"] == {"q1": 2, "q5": 1}
    assert found["tables"] >= 4 and found["tablesBeforeSettings"] and found["bannerFirst"]
    assert found["settingsOpen"] is False and found["settingsRows"] > 10
    assert "budget quick" in found["banner"]
    assert "quick numbers are not comparable with the paper" in found["banner"]
    assert "1 cell(s) did not finish" in found["banner"]
    body = dom.stdout
    assert long_value in body
    settings = body.index('<details id="settings"')
    assert settings > body.index("Failed cells") > body.index('data-protocol="q5"')
    for name in ("AITEX", "Hyper-Kvasir", "p-value (8)", "Holm p (8)", "Friedman over 8 datasets",
                 "CUDA out of memory", "budgets", "ours beside the paper"):
        assert name in body, name
    # the Q1 table: 8 dataset rows + 2 p-value rows, each with Data + 4 method cells; its caption
    # says the budget
    q1_table = re.search(r"<table><caption>Q1[^<]*AUC-ROC.*?</table>", body, re.S).group(0)
    assert "quick numbers are not comparable with the paper" in q1_table
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", q1_table, re.S)
    assert len(rows) == 1 + 8 + 2 and all(r.count("<td>") == 5 for r in rows[1:])
    shot = tmp_path / "shot.png"
    proc = _browser(["--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20  # not blank: text, rules and figures
    assert (pixels < 100).mean() > 0.005  # enough dark ink to be text and plots


def test_latex_report_is_well_formed(results, tmp_path):
    out = tmp_path / "report.tex"
    assert main(["report", str(results), "--format", "latex", "-o", str(out)]) == 0
    tex = out.read_text()
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") >= 3
    for block in re.findall(r"\\begin\{tabular\}\{(l c*)\}(.*?)\\end\{tabular\}", tex, re.S):
        spec, content = block
        assert content.strip().startswith("\\toprule") and content.strip().endswith("\\bottomrule")
        for line in content.strip().splitlines():
            if line.endswith("\\\\"):  # every row has as many cells as the column spec
                assert len(re.findall(r"(?<!\\)&", line)) == len(spec) - 1, line
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert "\\caption{" in tex and "\\label{tab:q1-auc-roc}" in tex and "$\\pm$" in tex
    captions = re.findall(r"\\caption\{([^\n]*)\}", tex)
    assert len(captions) >= 3
    assert all("quick numbers are not comparable with the paper" in c for c in captions)
    assert "\\textbf{" in tex  # best per row
    if shutil.which("pdflatex"):  # compile for real where TeX is installed
        doc = tmp_path / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\usepackage[utf8]{inputenc}"
                       "\\begin{document}\n" + tex + "\n\\end{document}\n")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:]
