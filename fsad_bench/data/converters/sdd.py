"""SDD (KolektorSDD): each image cut along its height into three parts labelled by the label bitmap.

Raw layout (``KolektorSDD.zip`` extracted; any wrapping folder is fine)::

    <raw>/kos01/Part0.jpg
    <raw>/kos01/Part0_label.bmp
    ...
    <raw>/kos50/Part7.jpg

Rules: each image (about 500x1240) is cut along its height into three parts at rows ``k*H//3``; a
part is an anomaly (class ``defect``, with its mask) if the matching part of ``<stem>_label.*`` has
a non-zero pixel, otherwise a normal (seeded 75/25 split). An image without a label bitmap, or whose
label size differs from the image, is skipped with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

from fsad_bench.data.converters.common import (
    Conversion,
    CropLoader,
    find_dirs,
    has_images,
    list_files,
    new_category,
    open_mask,
    open_rgb,
    safe_name,
    write_normals,
)
from fsad_bench.errors import DataError

PARTS = 3
ANOMALY_CLASS = "defect"
_KOS = re.compile(r"kos\d+", re.IGNORECASE)


def part_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    cuts = [k * height // PARTS for k in range(PARTS + 1)]
    return [(0, cuts[k], width, cuts[k + 1]) for k in range(PARTS)]


def convert(raw: Path, out: Path, conv: Conversion, seed: int) -> None:
    folders = [d for d in find_dirs(raw, lambda d: bool(_KOS.fullmatch(d.name)) and has_images(d), 3)]
    if not folders:
        raise DataError(f"expected folders {raw / 'kos01'} ... {raw / 'kos50'} are missing (KolektorSDD "
                        "extracted); the raw layout is in "
                        "docs/reference/datasets.md")
    parents = {d.parent for d in folders}
    if len(parents) > 1:
        raise DataError(f"ambiguous raw layout: kosNN folders under both {sorted(parents)[0]} and "
                        f"{sorted(parents)[1]}; pass --raw pointing at one of them")
    w = new_category(out, conv, "sdd")
    normals, stems, crop = {}, {}, CropLoader()
    for kos in sorted(folders, key=lambda d: d.name.lower()):
        files = list_files(kos)
        labels = {p.stem.lower()[: -len("_label")]: p for p in files if p.stem.lower().endswith("_label")}
        for p in files:
            if p.stem.lower().endswith("_label"):
                continue
            label = labels.get(p.stem.lower())
            if label is None:
                conv.warn(f"{p}: no label bitmap {kos / (p.stem + '_label.bmp')}: skipped")
                continue
            img, mask = open_rgb(p), open_mask(label)
            if mask.shape != (img.height, img.width):
                conv.warn(f"{label} is {mask.shape[1]}x{mask.shape[0]}, its image {p} is "
                          f"{img.width}x{img.height}: skipped")
                continue
            base = safe_name(kos.name, p.stem)
            for k, box in enumerate(part_boxes(img.width, img.height)):
                part_mask = mask[box[1]:box[3], box[0]:box[2]]
                source = f"{kos.name}/{p.name}#{k}"
                if part_mask.any():
                    w.add("test", ANOMALY_CLASS, f"{base}_{k}", img.crop(box), part_mask, source_id=source)
                else:
                    normals[source] = crop(p, box)
                    stems[source] = f"{base}_{k}"
    write_normals(w, normals, seed, stems)
