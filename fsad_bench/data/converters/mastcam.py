"""Mastcam (Kerner et al., novelty detection in Mars rover multispectral images): published split kept.

Raw layout (the Zenodo record 1486196 archive extracted; one wrapping folder is fine)::

    <raw>/train_typical/*.npy            64x64x6 frames (8-bit DN values stored as floats)
    <raw>/test_typical/*.npy
    <raw>/test_novel/<class>/*.npy       11 classes (bedrock, broken-rock, drill-hole, drt, dump-pile,
                                         float, meteorite, scuff, veins, ...)
    <raw>/test_novel/all/*.npy           byte copies of the class folders: NOT read
    <raw>/validation_typical/*.npy       not used (the paper's Table 1 has no validation set)

Rules: train_typical -> train/good, test_typical -> test/good, test_novel/<class> -> test/<class>
(a frame filed under two classes appears once in each, as in the paper's 451 anomalies). Frames are
written as RGB PNGs from their first three channels (values in [0, 1] are scaled by 255, others
clipped to [0, 255]); ordinary image files (.png, .jpg ...) in these folders are converted as usual.
"""

from __future__ import annotations

from pathlib import Path

from fsad_bench.data.converters.common import (
    RAW_IMAGE_SUFFIXES,
    Conversion,
    find_dir,
    list_files,
    load_npy_rgb,
    new_category,
    rel_stem,
    subdirs,
)
from fsad_bench.data.layout import NORMAL

SUFFIXES = RAW_IMAGE_SUFFIXES | {".npy"}
SKIP_NOVEL = {"all"}


def _has_frames(d: Path) -> bool:
    return bool(list_files(d, SUFFIXES, recursive=True))


def _write(w, split: str, cls: str, folder: Path) -> None:
    for p in list_files(folder, SUFFIXES, recursive=True):
        stem = rel_stem(p, folder)
        if p.suffix.lower() == ".npy":
            w.add(split, cls, stem, load_npy_rgb(p), source_id=str(p.relative_to(folder)))
        else:
            w.add_file(split, cls, stem, p, source_id=str(p.relative_to(folder)))


def convert(raw: Path, out: Path, conv: Conversion, seed: int) -> None:
    del seed  # the published split is kept
    train = find_dir(raw, "train_typical", "Mastcam typical training frames", _has_frames)
    test = find_dir(raw, "test_typical", "Mastcam typical test frames", _has_frames)
    novel = find_dir(raw, "test_novel", "Mastcam novel test frames by class", _has_frames)
    w = new_category(out, conv, "mastcam")
    _write(w, "train", NORMAL, train)
    _write(w, "test", NORMAL, test)
    for cdir in subdirs(novel):
        if cdir.name.lower() in SKIP_NOVEL or cdir.name == NORMAL:
            continue
        _write(w, "test", cdir.name, cdir)
