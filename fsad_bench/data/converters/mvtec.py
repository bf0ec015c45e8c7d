"""MVTec AD: already in the canonical layout; the published split and masks are kept.

Raw layout (``mvtec_anomaly_detection.tar.xz`` extracted; one extra wrapping folder is fine)::

    <raw>/<category>/train/good/000.png
    <raw>/<category>/test/{good,<defect>}/000.png
    <raw>/<category>/ground_truth/<defect>/000_mask.png

Only the 15 known categories are converted (others are reported and skipped); a raw folder holding a
subset of them (e.g. one category's archive) gives a dataset with that subset.
"""

from __future__ import annotations

from pathlib import Path

from fsad_bench.data.converters.common import (
    Conversion,
    find_dirs,
    list_files,
    new_category,
    open_mask,
    require_dir,
    safe_name,
    subdirs,
)
from fsad_bench.data.layout import NORMAL
from fsad_bench.data.registry import MVTEC_CATEGORIES
from fsad_bench.errors import DataError


def _is_category(d: Path) -> bool:
    return (d / "train" / NORMAL).is_dir() and (d / "test").is_dir()


def _categories_root(raw: Path) -> Path:
    hits = find_dirs(raw, lambda d: any(_is_category(d / c) for c in MVTEC_CATEGORIES), max_depth=3)
    if not hits:
        raise DataError(f"expected folder {raw / 'bottle'} (or another MVTec AD category with train/good "
                        "and test) is missing; pass --raw pointing at the extracted mvtec_anomaly_detection")
    return hits[0]


def convert(raw: Path, out: Path, conv: Conversion, seed: int) -> None:
    del seed  # the published split is kept
    root = _categories_root(raw)
    present = [c for c in MVTEC_CATEGORIES if _is_category(root / c)]
    ignored = [d.name for d in subdirs(root) if d.name not in MVTEC_CATEGORIES and _is_category(d)]
    if ignored:
        conv.warn(f"ignored folders that are not MVTec AD categories: {', '.join(ignored)}")
    missing = [c for c in MVTEC_CATEGORIES if c not in present]
    if missing:
        conv.warn(f"MVTec AD categories not in the raw folder (not converted): {', '.join(missing)}")
    for cat in present:
        src = root / cat
        w = new_category(out, conv, cat)
        for p in list_files(require_dir(src / "train" / NORMAL)):
            w.add_file("train", NORMAL, safe_name(p.stem), p)
        for cls_dir in subdirs(src / "test"):
            cls = cls_dir.name
            for p in list_files(cls_dir):
                mask = None
                if cls != NORMAL:
                    mask_file = src / "ground_truth" / cls / f"{p.stem}_mask.png"
                    if mask_file.is_file():
                        mask = open_mask(mask_file)
                    else:
                        conv.warn(f"no mask for {p} (expected {mask_file}); the image is kept without one")
                w.add_file("test", cls, safe_name(p.stem), p, mask)
