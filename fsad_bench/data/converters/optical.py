"""Optical (DAGM 2007 "Weakly Supervised Learning for Industrial Optical Inspection"), Class1..Class10.

Raw layout (the ten class archives extracted side by side; an inner ``ClassN/ClassN/`` is fine)::

    <raw>/Class1/Train/0001.PNG
    <raw>/Class1/Train/Label/Labels.txt      first line a count/header, then tab-separated rows:
                                             index  defective(0|1)  image  0  label-image
    <raw>/Class1/Train/Label/0002_label.PNG  weak (ellipse) defect label of a defective image
    <raw>/Class1/Test/...                    the same

Rules: only the ``Train`` half of every class is used (:data:`SPLITS`): its 14,000 normals and 2,100
defective images are exactly Table 1's Optical counts (10,500 + 3,500 normals, 2,100 anomalies). The
normals of all ten classes are pooled and split 75/25 with the seed; the defective images become
anomaly classes ``Class1`` .. ``Class10`` with their label images as masks. Folders such as
``Class1_def`` (the older development release) are not read.
"""

from __future__ import annotations

import re
from pathlib import Path

from fsad_bench.data.converters.common import (
    Conversion,
    find_dirs,
    new_category,
    open_mask,
    safe_name,
    subdirs,
    write_normals,
)
from fsad_bench.errors import DataError

SPLITS = ("Train",)
_CLASS = re.compile(r"class(\d+)", re.IGNORECASE)


def _child(folder: Path, name: str) -> Path | None:
    for d in subdirs(folder):
        if d.name.lower() == name.lower():
            return d
    return None


def _files_by_name(folder: Path) -> dict[str, Path]:
    """Files of ``folder`` by lower-case name (DAGM lists ``0001.PNG``; extracted copies vary in case)."""
    return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_file()}


def _child_file(folder: Path, name: str) -> Path | None:
    return _files_by_name(folder).get(name.lower())


def read_labels(path: Path) -> list[tuple[str, bool, str | None]]:
    """(image file, defective, label file or None) rows of a DAGM ``Labels.txt``."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        fields = line.strip().split()
        if not fields:
            continue
        if len(fields) < 3:
            if lineno == 1:  # the header (a single number)
                continue
            raise DataError(f"{path}:{lineno}: expected 'index defective image 0 label', "
                            f"got {line.strip()!r}")
        if fields[1] not in ("0", "1"):
            raise DataError(f"{path}:{lineno}: defective flag must be 0 or 1, got {fields[1]!r}")
        defective = fields[1] == "1"
        label = fields[4] if defective and len(fields) >= 5 else None
        rows.append((fields[2], defective, label))
    return rows


def convert(raw: Path, out: Path, conv: Conversion, seed: int) -> None:
    def is_class_dir(d: Path) -> bool:
        return bool(_CLASS.fullmatch(d.name)) and any(_child(d, s) is not None for s in SPLITS)

    found = find_dirs(raw, is_class_dir, max_depth=3)
    classes: dict[int, Path] = {}
    for d in found:  # shallowest first; an inner ClassN/ClassN wins only if the outer one lacks Train
        classes.setdefault(int(_CLASS.fullmatch(d.name).group(1)), d)
    if not classes:
        raise DataError(f"expected folders {raw / 'Class1' / SPLITS[0]} ... are missing (DAGM 2007 class "
                        "archives extracted); the raw layout is in "
                        "docs/reference/datasets.md")
    missing = [f"Class{i}" for i in range(1, 11) if i not in classes]
    if missing:
        conv.warn(f"DAGM classes not in the raw folder: {', '.join(missing)}")
    w = new_category(out, conv, "optical")
    normals: dict[str, Path] = {}
    stems: dict[str, str] = {}
    for n in sorted(classes):
        cdir, cls = classes[n], f"Class{n}"
        for split in SPLITS:
            sdir = _child(cdir, split)
            if sdir is None:
                raise DataError(f"expected folder {cdir / split} is missing")
            label_dir = _child(sdir, "Label")
            labels = _child_file(label_dir, "Labels.txt") if label_dir else None
            if labels is None:
                raise DataError(f"expected file {sdir / 'Label' / 'Labels.txt'} is missing")
            images, label_files = _files_by_name(sdir), _files_by_name(label_dir)
            for image, defective, label in read_labels(labels):
                src = images.get(image.lower())
                if src is None:
                    raise DataError(f"expected image {sdir / image} (listed in {labels}) is missing")
                key = f"{cls}/{split}/{image}"
                stem = safe_name(cls, split, Path(image).stem)
                if not defective:
                    normals[key], stems[key] = src, stem
                    continue
                mask = None
                if label:
                    mask_file = label_files.get(label.lower())
                    if mask_file is None:
                        conv.warn(f"{src}: label image {label_dir / label} is missing; kept without mask")
                    else:
                        mask = open_mask(mask_file)
                w.add_file("test", cls, stem, src, mask, source_id=key)
    write_normals(w, normals, seed, stems)
