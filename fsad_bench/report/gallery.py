"""The HTML report's per-image gallery: per dataset (and category), each method's worst false positives
(the normal test images it scored highest) and worst false negatives (the anomalies it scored lowest),
as thumbnails with file, label, score and rank, and the method's anomaly map beside each image where
the method has ``explain``.

Everything comes from the results store (:mod:`fsad_bench.per_image`: the runner keeps, per cell, the
images the gallery shows as small thumbnails); the report never opens a dataset file. A method's
images come from one of its cells per category, its first seed (then its first setting), named
above the images. Rows stored before thumbnails were kept say so and list their worst images from
their stored scores, without pictures. The fragment is self-contained: images are data URIs, the
map's colour scale is a CSS gradient, nothing is fetched and nothing runs.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np
import pandas as pd

from fsad_bench.data.registry import DATASETS
from fsad_bench.per_image import GALLERY_K, GALLERY_KEY, ranks, worst
from fsad_bench.report.presentation import Presentation
from fsad_bench.report.render import Part

#: the CSS of the gallery (added to the report's style sheet)
GALLERY_CSS = """
.gallery h4 { margin: 1.2em 0 0.3em; font-size: 1em; }
.gcell { margin: 0.4em 0 1em; padding: 0.4em 0.6em; border-left: 3px solid #ddd; }
.gtitle { margin: 0.1em 0 0.3em; font-size: 0.9em; } .gtitle .how { color: #555; }
.grow { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 0.5em; margin: 0.3em 0; }
.gkind { width: 8.5em; font-size: 0.8em; font-weight: 600; padding-top: 0.3em; }
.gkind small { font-weight: normal; color: #555; display: block; }
.tile { margin: 0; padding: 3px; border: 2px solid #ccc; border-radius: 3px; width: min-content; }
.tile.fp { border-color: #e08a00; } .tile.fn { border-color: #7b3fb5; }
.tile .pair { display: flex; gap: 2px; } .tile img { width: 96px; height: 96px; object-fit: contain;
  border: none; background: #f4f4f4; }
.tile figcaption { font-size: 0.72em; color: #333; line-height: 1.25; white-space: nowrap; }
.tile .file { font-family: ui-monospace, monospace; display: inline-block; max-width: 194px;
  overflow: hidden; text-overflow: ellipsis; vertical-align: bottom; }
.gold { font-size: 0.8em; } .gold td { text-align: left; font-family: ui-monospace, monospace; }
.scale { display: inline-block; width: 8em; height: 0.8em; vertical-align: middle; border: 1px solid #999;
  background: linear-gradient(to right, #00007f, #0000ff, #007fff, #00ffff, #7fff7f, #ffff00, #ff7f00,
  #ff0000, #7f0000); }
"""
KINDS = (("false_positives", "fp", "false positives", "normals scored highest"),
         ("false_negatives", "fn", "false negatives", "anomalies scored lowest"))


def _dataset_label(dataset: str, category: str) -> str:
    info = DATASETS.get(dataset)
    name = info.display if info else dataset
    multi = info.multi_category if info else category != dataset
    return f"{name} / {category}" if multi and category and category != dataset else name


def _coloured_map(b64: str) -> str:
    """A stored grey map (0-255 = explain value 0-1; JPEG, or PNG) in the jet colours of the report's
    heat maps, as PNG base64."""
    from matplotlib import colormaps
    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L"), dtype=np.float64) / 255
    rgb = (colormaps["jet"](grey)[..., :3] * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def _score(value: float) -> str:
    return f"{value:.4g}"


def _tile(entry: dict[str, Any], css: str, n_test: int, image_mime: str) -> str:
    file = str(entry.get("file", ""))
    label = "anomaly" if entry.get("label") == 1 else "normal"
    imgs = [f'<img alt="{html.escape(label)} {html.escape(file)}" src="data:{image_mime};base64,'
            f'{entry["image"]}">']
    if entry.get("map"):
        imgs.append(f'<img alt="anomaly map of {html.escape(file)}" src="data:image/png;base64,'
                    f'{_coloured_map(entry["map"])}">')
    return (f'<figure class="tile {css}"><div class="pair">{"".join(imgs)}</div><figcaption>'
            f'<span class="file" title="{html.escape(file)}">{html.escape(file)}</span><br>{label} · score '
            f'{_score(float(entry["score"]))} · rank {int(entry["rank"])} of {n_test}</figcaption></figure>')


def _which(row: Any, n_cells: int) -> str:
    setting = row.setting if isinstance(row.setting, dict) else {}
    parts = [f"seed {row.seed}"] + [f"{k}={v}" for k, v in sorted(setting.items())]
    if n_cells > 1:
        parts.append(f"1 of its {n_cells} cells here")
    return ", ".join(parts)


def _from_scores(row: Any) -> dict[str, Any] | None:
    """The gallery's choice of images from a row's stored scores (a row made before thumbnails were
    stored), without pictures; None without scores."""
    blob = row.scores if isinstance(row.scores, dict) else {}
    scores, labels = blob.get("scores") or [], blob.get("labels") or []
    if not scores or len(scores) != len(labels):
        return None
    files = row.manifest.get("test") if isinstance(row.manifest, dict) else None
    files = files if isinstance(files, list) and len(files) == len(scores) else [""] * len(scores)
    rank = ranks(scores, files)
    out: dict[str, Any] = {"n_test": len(scores)}
    for (kind, *_), which in zip(KINDS, worst(scores, labels, files, GALLERY_K)):
        out[kind] = [{"file": files[i], "label": int(labels[i]), "score": float(scores[i]),
                      "rank": int(rank[i])} for i in which]
    return out


def _cell_html(row: Any, name: str, n_cells: int) -> str:
    blob = row.scores if isinstance(row.scores, dict) else {}
    stored = blob.get(GALLERY_KEY)
    which = html.escape(_which(row, n_cells))

    def title(more: str = "") -> str:
        return f'<p class="gtitle"><b>{html.escape(name)}</b> <span class="how">({which}{more})</span></p>'

    if isinstance(stored, dict):
        n_test = int(stored.get("n_test", 0))
        mime = f"image/{stored.get('image_format', 'png')}"
        more = f"; {n_test} test images; maps: {html.escape(str(stored.get('maps', '')))}"
        fps, fns = stored.get("false_positives") or [], stored.get("false_negatives") or []
        if fps and fns and fps[0]["rank"] > fns[0]["rank"]:
            more += "; no normal image outranks an anomaly here: these are its closest calls"
        out = [title(more)]
        for kind, css, heading, what in KINDS:
            tiles = "".join(_tile(e, css, n_test, mime) for e in stored.get(kind, []) if e.get("image"))
            out.append(f'<div class="grow"><div class="gkind">{heading}<small>{what}</small></div>'
                       f"{tiles or '<p class=note>none in the test set</p>'}</div>")
        return f'<div class="gcell">{"".join(out)}</div>'
    version = getattr(row, "code_version", "")
    made_by = f"fsad-bench {version}" if isinstance(version, str) and version else "an older fsad-bench"
    text = (f"made before thumbnails were stored (by {made_by}): rerun this cell into a fresh folder to see "
            "its images")
    picked = _from_scores(row)
    if picked is None:
        return f'<div class="gcell">{title()}<p class="note">{html.escape(text)}</p></div>'
    lines = [f"<tr><td>{heading}</td><td>{html.escape(e['file'] or '-')}</td><td>score {_score(e['score'])}"
             f"</td><td>rank {e['rank']} of {picked['n_test']}</td></tr>"
             for kind, _, heading, _ in KINDS for e in picked[kind]]
    return (f'<div class="gcell">{title()}<p class="note">{html.escape(text)}; its worst '
            f'images by stored score:</p><table class="gold"><tbody>{"".join(lines)}</tbody></table></div>')


def gallery_part(rows: pd.DataFrame, pres: Presentation) -> Part | None:
    """The gallery of one protocol (``rows``: its ok rows with their stored blobs) as an HTML part, or
    None when it has no ok rows."""
    if rows.empty:
        return None
    rows = rows.assign(_setting=rows.setting.map(lambda s: json.dumps(s, sort_keys=True, default=str)))
    rows = rows.sort_values(["seed", "_setting", "key"], kind="stable")
    out = ['<div class="gallery"><p class="note">Per dataset, each method\'s worst false positives (the '
           "normal test images it scored highest) and worst false negatives (the anomalies it scored "
           "lowest), from one cell each; rank 1 = the most anomalous test image of the cell. Beside each "
           "image, the "
           'method\'s anomaly map where it has explain() (<span class="scale"></span> 0 to 1; maps may be '
           "scaled together within the explain() call that made them, named per method). Every test image's "
           "score and rank: fsad-bench report DIR --format csv --per-image.</p>"]
    groups = rows.groupby(["dataset", "category"], sort=False)
    order = sorted(groups.groups, key=lambda dc: (list(DATASETS).index(dc[0]) if dc[0] in DATASETS
                                                  else len(DATASETS), dc[0], dc[1]))
    for dataset, category in order:
        g = groups.get_group((dataset, category))
        out.append(f"<h4>{html.escape(_dataset_label(dataset, category))}</h4>")
        for method in pres.order(g.method.unique()):
            cells = g[g.method == method]
            out.append(_cell_html(next(cells.itertuples()), pres.name(method), len(cells)))
    out.append("</div>")
    return Part(f"{pres.title}: per-image results (worst false positives and false negatives)",
                "\n".join(out))
