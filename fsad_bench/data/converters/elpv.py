"""ELPV: solar-cell electroluminescence images labelled by defect probability and module type.

Raw layout (a clone of github.com/zae-bayern/elpv-dataset, or the installed PyPI package
``elpv-dataset`` -- used automatically when ``prepare elpv`` gets no ``--raw``)::

    <raw>/labels.csv            whitespace-separated: images/cell0001.png  1.0  mono
    <raw>/images/cell0001.png   300x300 8-bit grayscale

``labels.csv`` may sit deeper (e.g. ``src/elpv_dataset/data/``); the shallowest one is used. Commas
as separators and a header line are tolerated.

Rules: probability 0 -> normal (seeded 75/25 split); probability 1 -> anomaly of class ``mono`` or
``poly`` (the module type); probabilities 1/3 and 2/3 are dropped.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from fsad_bench.data.converters.common import (
    Conversion,
    find_dirs,
    new_category,
    safe_name,
    write_normals,
)
from fsad_bench.errors import DataError, UserError

TYPES = ("mono", "poly")
_SPLIT = re.compile(r"[,;\s]+")


def package_data_dir() -> Path:
    """The data folder of the installed ``elpv-dataset`` package (UserError if not installed)."""
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("ELPV needs --raw PATH (a clone of github.com/zae-bayern/elpv-dataset) or the "
                        "package: pip install 'fsad-bench[elpv]'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "labels.csv").is_file():
        raise DataError(f"expected file {folder / 'labels.csv'} is missing from the elpv-dataset package")
    return folder


def read_labels(path: Path) -> list[tuple[str, float, str]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = [f for f in _SPLIT.split(line.strip()) if f]
        if not fields:
            continue
        try:
            prob = float(fields[1]) if len(fields) >= 2 else None
        except ValueError:
            prob = None
        if prob is None or len(fields) < 3:
            if not rows and lineno == 1:  # a header line
                continue
            raise DataError(f"{path}:{lineno}: expected 'path probability type', got {line.strip()!r}")
        rows.append((fields[0], prob, fields[2].strip().lower()))
    if not rows:
        raise DataError(f"{path} holds no labelled rows")
    return rows


def convert(raw: Path | None, out: Path, conv: Conversion, seed: int) -> None:
    if raw is None:
        data_dir = package_data_dir()
    else:
        hits = find_dirs(raw, lambda d: (d / "labels.csv").is_file(), max_depth=4)
        if not hits:
            raise DataError(f"expected file {Path(raw) / 'labels.csv'} is missing (the ELPV label list); "
                            "the raw layout is in docs/reference/datasets.md")
        data_dir = hits[0]
    labels = data_dir / "labels.csv"
    w = new_category(out, conv, "elpv")
    normals: dict[str, Path] = {}
    stems: dict[str, str] = {}
    dropped = 0
    for rel, prob, kind in read_labels(labels):
        src = data_dir / rel
        if not src.is_file():
            raise DataError(f"expected image {src} (listed in {labels}) is missing")
        stem = safe_name(*Path(rel).with_suffix("").parts[-1:])
        if abs(prob) < 1e-6:
            normals[rel] = src
            stems[rel] = stem
        elif abs(prob - 1) < 1e-6:
            if kind not in TYPES:
                raise DataError(f"{labels}: {rel} has type {kind!r}; expected mono or poly")
            w.add_file("test", kind, stem, src, source_id=rel)
        else:
            dropped += 1
    write_normals(w, normals, seed, stems)
    if dropped:
        conv.warn(f"{dropped} cells with defect probability 1/3 or 2/3 dropped (the paper's rule)")
