"""Per-image results: ranks and the worst false positives / negatives on hand-made scores, the
gallery a cell stores (thumbnails small, maps only from detectors with explain, one explain call),
the per-image export pinned row by row against a hand-made store, and the HTML gallery: labelled,
score and rank shown, map beside the image, old rows said to predate thumbnails, self-contained."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import blob_image
from own_data_toys import BrightMap
from PIL import Image
from toy_detectors import Brightness

from fsad_bench.cli import main
from fsad_bench.per_image import GALLERY_K, THUMB_PX, ranks, worst
from fsad_bench.runner.job import gallery, has_explain
from fsad_bench.store import CellResult, ResultStore

# ---------------------------------------------------------------------------------------------
# selection on hand-made scores

#            0     1     2     3     4     5     6     7
SCORES = [0.90, 0.20, 0.50, 0.50, 0.10, 0.70, 0.50, 0.30]
LABELS = [1, 0, 0, 1, 1, 0, 0, 1]
FILES = ["a/7.png", "g/1.png", "g/3.png", "a/2.png", "a/9.png", "g/0.png", "g/2.png", "a/5.png"]


def test_ranks_put_the_highest_score_first_and_break_ties_by_file_name():
    # by score: 0.90 (0), 0.70 (5), then the three 0.50 by file: a/2 (3), g/2 (6), g/3 (2), 0.30 (7),
    # 0.20 (1), 0.10 (4)
    assert ranks(SCORES, FILES).tolist() == [1, 7, 5, 3, 8, 2, 4, 6]
    # the order given does not matter: the same image gets the same rank
    perm = [7, 3, 0, 5, 1, 6, 2, 4]
    shuffled = ranks([SCORES[i] for i in perm], [FILES[i] for i in perm])
    expected = dict(zip(FILES, ranks(SCORES, FILES).tolist()))
    assert {FILES[i]: int(r) for i, r in zip(perm, shuffled)} == expected


def test_worst_false_positives_and_negatives():
    fps, fns = worst(SCORES, LABELS, FILES, k=2)
    assert fps == [5, 6]  # normals scored highest: 0.70, then g/2 before g/3 (tied 0.50, by name)
    assert fns == [4, 7]  # anomalies scored lowest, lowest first: 0.10, 0.30
    fps, fns = worst(SCORES, LABELS, FILES, k=10)  # k beyond the test set: every normal / anomaly once
    assert fps == [5, 6, 2, 1] and fns == [4, 7, 3, 0]
    assert worst([0.3, 0.4], [0, 0], ["x", "y"], k=4) == ([1, 0], [])  # no anomalies: no false negatives


# ---------------------------------------------------------------------------------------------
# the gallery a cell stores


class CountingMap(BrightMap):
    """BrightMap that records the images of each explain() call."""

    calls: list[int] = []

    def explain(self, images: np.ndarray) -> np.ndarray:
        CountingMap.calls.append(len(images))
        return super().explain(images)


class BrokenMap(BrightMap):
    def explain(self, images: np.ndarray) -> np.ndarray:
        raise RuntimeError("no gradients today")


def _test_set(size: int, n: int = 12) -> tuple[np.ndarray, list[float], np.ndarray, list[str]]:
    rng = np.random.default_rng(1)
    images = np.stack([blob_image(rng, size, i >= n // 2)[0] for i in range(n)])
    labels = np.array([0] * (n // 2) + [1] * (n // 2))
    scores = np.round(rng.random(n), 6).tolist()
    files = [f"test/{'good' if y == 0 else 'blob'}/{i:03d}.png" for i, y in enumerate(labels)]
    return images, scores, labels, files


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.mark.parametrize("size", [32, 200])
def test_gallery_keeps_the_worst_images_as_small_thumbnails(size):
    images, scores, labels, files = _test_set(size)
    g = gallery(Brightness(Brightness.Config()), images, scores, labels, files)
    fps, fns = worst(scores, labels, files)
    rank = ranks(scores, files)
    assert [e["file"] for e in g["false_positives"]] == [files[i] for i in fps]
    assert [e["file"] for e in g["false_negatives"]] == [files[i] for i in fns]
    assert len(g["false_positives"]) == len(g["false_negatives"]) == GALLERY_K
    for e, i in zip(g["false_positives"] + g["false_negatives"], fps + fns):
        assert (e["label"], e["score"], e["rank"]) == (int(labels[i]), scores[i], int(rank[i]))
        thumb = _decode(e["image"])
        assert thumb.format == "JPEG" and thumb.mode == "RGB"
        assert thumb.size == (min(size, THUMB_PX),) * 2  # shrunk to 64 px, never enlarged
        assert "map" not in e
    assert g["n_test"] == len(scores) and g["maps"].startswith("none: the method has no explain()")
    # small: the whole gallery of 8 thumbnails stays within a few tens of kB of JSON
    assert len(json.dumps(g)) < 30_000


def test_maps_only_from_detectors_with_explain_in_one_call_on_the_shown_images():
    images, scores, labels, files = _test_set(48)
    assert not has_explain(Brightness(Brightness.Config())) and has_explain(BrightMap(BrightMap.Config()))
    CountingMap.calls = []
    g = gallery(CountingMap(CountingMap.Config()), images, scores, labels, files)
    assert CountingMap.calls == [2 * GALLERY_K]  # one extra call, on the 2k images shown
    assert g["maps"] == f"explain() of these {2 * GALLERY_K} images, in one call"
    for e in g["false_positives"] + g["false_negatives"]:
        thumb = _decode(e["map"])
        assert thumb.mode == "L" and thumb.size == (48, 48)
    # a cell that already made every test image's map (a localisation protocol): reused, no call
    CountingMap.calls = []
    maps = np.stack([np.full((48, 48), i / 20) for i in range(len(scores))])
    g = gallery(CountingMap(CountingMap.Config()), images, scores, labels, files, maps)
    assert CountingMap.calls == [] and g["maps"] == "explain() of the whole test set, in one call"
    first = g["false_positives"][0]
    level = np.asarray(_decode(first["map"])).mean() / 255
    assert level == pytest.approx(files.index(first["file"]) / 20, abs=0.01)
    # explain() failing does not fail the cell: no maps, and why
    g = gallery(BrokenMap(BrokenMap.Config()), images, scores, labels, files)
    assert g["maps"] == "none: explain() failed (RuntimeError: no gradients today)"
    assert all("map" not in e and e["image"] for e in g["false_positives"])


def test_a_cell_run_stores_its_gallery(data_root, tmp_path):
    from fsad_bench.protocol import load_protocol
    from fsad_bench.runner.generator import build_cells
    from fsad_bench.runner.request import RunRequest
    from fsad_bench.runner.runner import run_grid

    req = RunRequest(methods=["toy_detectors:Brightness", "own_data_toys:BrightMap"], datasets=["brainmri"],
                     seeds=[0], budget="smoke", data_root=data_root)
    cells = build_cells(load_protocol("q1"), req)[0]
    with ResultStore(tmp_path / "out") as store:
        run_grid(cells, store, progress=False)
        rows = {r["method"]: r for r in (store.get(c.key) for c in cells)}
    for method, row in rows.items():
        g = row["scores"]["gallery"]
        scores, labels, files = row["scores"]["scores"], row["scores"]["labels"], row["manifest"]["test"]
        fps, fns = worst(scores, labels, files)
        assert [e["file"] for e in g["false_positives"]] == [files[i] for i in fps]
        assert [e["file"] for e in g["false_negatives"]] == [files[i] for i in fns]
        with_maps = [e for e in g["false_positives"] + g["false_negatives"] if "map" in e]
        assert len(with_maps) == (2 * GALLERY_K if method.endswith("BrightMap") else 0)


# ---------------------------------------------------------------------------------------------
# the per-image export


def _cell(key: str, method: str, seed: int, scores: list[float], labels: list[int], files: list[str] | None,
          **kw) -> CellResult:
    return CellResult(key=key, protocol=kw.pop("protocol", "q1"), dataset="brainmri", category="brainmri",
                      method=method, seed=seed, setting=kw.pop("setting", {"n_anomaly": 10}), budget="quick",
                      img_size=64, status=kw.pop("status", "ok"), auc_roc=0.75, auc_pr=0.7, device="cpu",
                      weights="none", code_version=kw.pop("code_version", "0.1.0"),
                      finished_at="2026-11-29T10:00:00+00:00",
                      scores={"scores": scores, "labels": labels},
                      manifest={"test": files} if files is not None else {}, **kw)


@pytest.fixture
def store_folder(tmp_path):
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        store.put(_cell("k1", "devnet", 0, [0.9, 0.2, 0.5, 0.5], [1, 0, 0, 1],
                        ["test/cut/0.png", "test/good/1.png", "test/good/0.png", "test/cut/1.png"]))
        store.put(_cell("k2", "minns", 1, [0.3, 0.8], [0, 1], ["test/good/0.png", "test/cut/0.png"],
                        setting={"n_anomaly": 5}))
        store.put(_cell("k3", "flos", 0, [0.4, 0.4, 0.1], [1, 0, 0], None))  # manifest without test files
        store.put(_cell("k4", "kdad", 0, [], [], None, status="failed", error="boom"))
    return folder


def test_per_image_csv_rows_pinned(store_folder, tmp_path, capsys):
    out = tmp_path / "images.csv"
    assert main(["report", str(store_folder), "--format", "csv", "--per-image", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "9 test images of 3 ok cells exported" in err
    assert "1 cell(s) whose split manifest lists no test files" in err
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ["key", "protocol", "dataset", "category", "method", "seed",
                                "setting.n_anomaly", "file", "label", "score", "rank"]
    pinned = ["key", "method", "seed", "setting.n_anomaly", "file", "label", "score", "rank"]
    rows = df[pinned].values.tolist()
    assert rows == [
        # cells by dataset, category, method, seed; images by rank; the tie 0.5 by file name
        ["k1", "devnet", 0, 10, "test/cut/0.png", 1, 0.9, 1],
        ["k1", "devnet", 0, 10, "test/cut/1.png", 1, 0.5, 2],
        ["k1", "devnet", 0, 10, "test/good/0.png", 0, 0.5, 3],
        ["k1", "devnet", 0, 10, "test/good/1.png", 0, 0.2, 4],
        # no file names: empty, the tie ranked in test-set order
        ["k3", "flos", 0, 10, "", 1, 0.4, 1],
        ["k3", "flos", 0, 10, "", 0, 0.4, 2],
        ["k3", "flos", 0, 10, "", 0, 0.1, 3],
        ["k2", "minns", 1, 5, "test/cut/0.png", 1, 0.8, 1],
        ["k2", "minns", 1, 5, "test/good/0.png", 0, 0.3, 2],
    ]
    assert set(df.protocol) == {"q1"} and set(df.dataset) == set(df.category) == {"brainmri"}


def test_per_image_parquet_has_the_same_rows(store_folder, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    csv = tmp_path / "images.csv"
    assert main(["report", str(store_folder), "--format", "csv", "--per-image", "-o", str(csv)]) == 0
    assert main(["report", str(store_folder), "--format", "parquet", "--per-image"]) == 0
    parquet = pd.read_parquet(store_folder / "images.parquet")
    assert "written to" in capsys.readouterr().err
    assert parquet["rank"].dtype == np.int64 and parquet["score"].dtype == np.float64
    from_csv = pd.read_csv(csv, keep_default_na=False)
    assert parquet.astype(str).values.tolist() == from_csv.astype(str).values.tolist()


@pytest.mark.parametrize("args", [["--per-image"], ["--per-image", "--format", "html"],
                                  ["--per-image", "--format", "csv", "--long"]])
def test_per_image_needs_csv_or_parquet(store_folder, capsys, args):
    assert main(["report", str(store_folder), *args]) == 2
    assert "--per-image" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the HTML gallery


def _gallery_folder(tmp_path):
    """brainmri: DevNet with maps, FLOS without explain (from gallery()); MINNS stored before thumbnails."""
    images, scores, labels, files = _test_set(64)
    folder = tmp_path / "res"
    with ResultStore(folder) as store:
        for key, method, det in (("g1", "devnet", BrightMap(BrightMap.Config())),
                                 ("g2", "flos", Brightness(Brightness.Config()))):
            cell = _cell(key, method, 0, scores, labels.tolist(), files)
            cell.scores["gallery"] = gallery(det, images, scores, labels, files)
            store.put(cell)
        store.put(_cell("g3", "minns", 0, scores, labels.tolist(), files, code_version="0.0.9"))
        store.put(_cell("g4", "devnet", 1, scores, labels.tolist(), files))  # a second seed: not shown
    return folder, scores, labels, files


def test_html_gallery_shows_labelled_thumbnails_with_maps_beside(tmp_path, capsys):
    folder, scores, labels, files = _gallery_folder(tmp_path)
    assert main(["report", str(folder), "--format", "html"]) == 0
    page = (folder / "report.html").read_text()
    # self-contained: no scripts, nothing fetched; every image a data URI
    assert "<script" not in page.lower() and not re.search(r"(src|href)=\"(https?:)?//", page)
    assert all(s.startswith("data:image/") for s in re.findall(r'src="([^"]*)"', page))
    gallery_html = page[page.index('<div class="gallery">'):]
    gallery_html = gallery_html[:gallery_html.index("</section>")]
    rank = ranks(scores, files)
    fps, fns = worst(scores, labels, files)
    def block(name: str) -> str:  # one method's part of the gallery
        start = gallery_html.index(f"<b>{name}</b>")
        end = gallery_html.find('<div class="gcell">', start)
        return gallery_html[start:end if end > 0 else None]

    devnet = block("DevNet")
    assert "seed 0" in devnet and "1 of its 2 cells here" in devnet  # which cell is shown
    tiles = re.findall(r'<figure class="tile (fp|fn)">(.*?)</figure>', devnet, re.S)
    assert [t[0] for t in tiles] == ["fp"] * GALLERY_K + ["fn"] * GALLERY_K
    for (kind, tile), i in zip(tiles, fps + fns):
        imgs = re.findall(r'<img alt="([^"]*)" src="data:image/(jpeg|png);base64,', tile)
        assert [a for a, _ in imgs] == [f"{'normal' if kind == 'fp' else 'anomaly'} {files[i]}",
                                        f"anomaly map of {files[i]}"]  # the map beside its image
        assert f"score {scores[i]:.4g} · rank {rank[i]} of {len(scores)}" in tile
    assert "false positives<small>normals scored highest" in devnet
    assert "false negatives<small>anomalies scored lowest" in devnet
    flos = block("FLOS")
    assert "maps: none: the method has no explain()" in flos and "anomaly map of" not in flos
    assert flos.count('<figure class="tile') == 2 * GALLERY_K
    minns = block("MINNS")
    assert "made before thumbnails were stored (by fsad-bench 0.0.9)" in minns and "<img" not in minns
    assert f"<td>{files[fps[0]]}</td><td>score {scores[fps[0]]:.4g}</td>" in minns  # still named, by score


def test_html_gallery_decodes_in_chromium(tmp_path):
    from test_html_report import _browser

    folder, *_ = _gallery_folder(tmp_path)
    assert main(["report", str(folder), "--format", "html"]) == 0
    probe = tmp_path / "probe.html"
    probe.write_text((folder / "report.html").read_text().replace("</body>", """<script>
window.addEventListener('load', () => { const t = [...document.querySelectorAll('.tile img')];
  document.body.dataset.probe = JSON.stringify({tiles: t.length,
    decoded: t.filter(i => i.complete && i.naturalWidth > 0).length,
    shown: t.filter(i => i.getBoundingClientRect().width >= 90).length}); });</script></body>"""))
    dom = _browser(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    from html import unescape

    found = json.loads(unescape(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1)))
    # DevNet: 8 images + 8 maps; FLOS: 8 images; every one decoded and drawn at the gallery's size
    assert found == {"tiles": 24, "decoded": 24, "shown": 24}
