"""HeadCT (Kaggle "Head CT - hemorrhage"): labels.csv plus head_ct/NNN.png.

Raw layout (the Kaggle archive extracted; the archive nests ``head_ct/head_ct/``)::

    <raw>/labels.csv                header "id, hemorrhage" (note the stray space), rows "0,1"
    <raw>/head_ct/head_ct/000.png   images named by the zero-padded id (000 .. 199), sizes vary

Rules: hemorrhage 0 -> normal (seeded 75/25 split), 1 -> anomaly class ``hemorrhage``. Header names
and values are stripped of spaces and matched case-insensitively; the image of id ``7`` is ``007.*``
(or ``7.*``) with any image extension.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fsad_bench.data.converters.common import (
    Conversion,
    find_dir,
    find_dirs,
    has_images,
    list_files,
    new_category,
    write_normals,
)
from fsad_bench.errors import DataError

ANOMALY_CLASS = "hemorrhage"


def read_labels(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [[c.strip() for c in row] for row in csv.reader(fh) if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"{path} is empty; expected a header 'id, hemorrhage' and one row per image")
    header = [h.lower() for h in rows[0]]
    if "id" not in header or "hemorrhage" not in header:
        raise DataError(f"{path}: header {rows[0]} lacks the columns 'id' and 'hemorrhage'")
    i_id, i_lab = header.index("id"), header.index("hemorrhage")
    out = []
    for lineno, row in enumerate(rows[1:], 2):
        try:
            out.append((row[i_id], int(float(row[i_lab]))))
        except (IndexError, ValueError):
            raise DataError(f"{path}:{lineno}: expected 'id, hemorrhage' values, got {row}") from None
        if out[-1][1] not in (0, 1):
            raise DataError(f"{path}:{lineno}: hemorrhage must be 0 or 1, got {row[i_lab]!r}")
    return out


def convert(raw: Path, out: Path, conv: Conversion, seed: int) -> None:
    hits = find_dirs(raw, lambda d: (d / "labels.csv").is_file(), max_depth=3)
    if not hits:
        raise DataError(f"expected file {Path(raw) / 'labels.csv'} is missing (HeadCT labels)")
    labels = hits[0] / "labels.csv"
    images_dir = find_dir(raw, "head_ct", "the HeadCT images", has_images)
    by_stem = {}
    for p in list_files(images_dir):
        by_stem.setdefault(p.stem.lower(), p)
    w = new_category(out, conv, "headct")
    normals, stems = {}, {}
    for ident, hemorrhage in read_labels(labels):
        candidates = [ident.lower()]
        if ident.isdigit():
            candidates += [f"{int(ident):03d}", str(int(ident))]
        src = next((by_stem[c] for c in candidates if c in by_stem), None)
        if src is None:
            shown = f"{int(ident):03d}" if ident.isdigit() else ident
            raise DataError(f"expected image {images_dir / shown}.png (id {ident} in {labels}) is missing")
        if hemorrhage:
            w.add_file("test", ANOMALY_CLASS, src.stem, src, source_id=src.name)
        else:
            normals[src.name], stems[src.name] = src, src.stem
    write_normals(w, normals, seed, stems)
