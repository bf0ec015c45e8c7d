"""The one canonical dataset layout (MVTec AD's) and its loader.

``<dataset>/<category>/train/good/*``, ``test/good/*``, ``test/<defect>/*`` and, where the data set
has pixel masks, ``ground_truth/<defect>/<stem>_mask.png``. Every real dataset is converted into it;
the loader knows nothing else. File lists are sorted so splits do not depend on the file system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fsad_bench.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"}
NORMAL = "good"


def shown(path: Path | str) -> str:
    """``path`` as text that can always be printed: itself, or the repr of its bytes when a name in it
    is not valid UTF-8 (such names reach Python as lone surrogates, which no output stream encodes)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return repr(os.fsencode(text))
    return text


def check_utf8_name(path: Path) -> Path:
    """``path`` if its name is valid UTF-8; else a DataError naming it (the store, the cache key and
    every report hold file names as UTF-8 text)."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"file name {os.fsencode(path.name)!r} in {shown(path.parent)} is not valid UTF-8; "
                        "rename it (e.g. with convmv)") from None
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(check_utf8_name(p) for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


@dataclass
class CategoryIndex:
    """Sorted file list of one category. ``files[i]`` is relative to the category folder.

    ``split[i]`` is "train" or "test"; ``cls[i]`` is "good" or the defect class; ``masks[i]`` is the
    mask path relative to the category folder, or None.
    """

    root: Path
    files: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    cls: list[str] = field(default_factory=list)
    masks: list[str | None] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """1 for anomalies (any defect class), 0 for good."""
        return np.array([c != NORMAL for c in self.cls], dtype=np.int64)

    def where(self, split: str, anomalous: bool | None = None, cls: str | None = None) -> np.ndarray:
        """Indices (sorted) of files in ``split``, optionally filtered by anomaly or class."""
        return np.array([i for i, (s, c) in enumerate(zip(self.split, self.cls))
                         if s == split and (anomalous is None or (c != NORMAL) == anomalous)
                         and (cls is None or c == cls)], dtype=np.int64)

    @property
    def defect_classes(self) -> list[str]:
        return sorted({c for c in self.cls if c != NORMAL})


def scan_category(root: Path) -> CategoryIndex:
    """Index ``root`` (one category folder) in the canonical layout; DataError if malformed."""
    root = check_utf8_name(Path(root))
    train_good = root / "train" / NORMAL
    test_dir = root / "test"
    for required in (train_good, test_dir):
        if not required.is_dir():
            raise DataError(f"{required} is missing: a category folder needs train/good and test/<class> "
                            "(the MVTec AD layout); run 'fsad-bench data prepare' or fix the folder")
    index = CategoryIndex(root=root)

    def add(path: Path, split: str, cls: str, mask: Path | None) -> None:
        index.files.append(path.relative_to(root).as_posix())
        index.split.append(split)
        index.cls.append(cls)
        index.masks.append(mask.relative_to(root).as_posix() if mask is not None else None)

    for p in _images_in(train_good):
        add(p, "train", NORMAL, None)
    classes = sorted(check_utf8_name(d).name for d in test_dir.iterdir()
                     if d.is_dir() and not d.name.startswith("."))
    if NORMAL not in classes:
        raise DataError(f"{test_dir / NORMAL} is missing: the test set needs normal images")
    for cls in classes:
        for p in _images_in(test_dir / cls):
            mask = root / "ground_truth" / cls / f"{p.stem}_mask.png"
            add(p, "test", cls, mask if cls != NORMAL and mask.is_file() else None)
    if not index.where("train").size:
        raise DataError(f"{train_good} holds no images")
    return index
