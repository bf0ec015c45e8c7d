"""Hyper-Kvasir (labelled images): upper-GI anatomical landmarks normal, four pathological classes.

Raw layout (``hyper-kvasir-labeled-images.zip`` extracted)::

    <raw>/labeled-images/upper-gi-tract/anatomical-landmarks/{pylorus,retroflex-stomach,z-line}/*.jpg
    <raw>/labeled-images/upper-gi-tract/pathological-findings/{barretts,barretts-short-segment,
                                                               esophagitis-a,esophagitis-b-d}/*.jpg
    (lower-gi-tract/ and the other upper-GI groups are not read)

Rules: every anatomical-landmark class of the upper GI tract is pooled as normal (seeded 75/25
split); the four pathological classes are the anomaly classes, named as their folders.
"""

from __future__ import annotations

from pathlib import Path

from fsad_bench.data.converters.common import (
    Conversion,
    find_dir,
    list_files,
    new_category,
    rel_stem,
    require_dir,
    subdirs,
    write_normals,
)
from fsad_bench.errors import DataError

ANOMALY_CLASSES = ("barretts", "barretts-short-segment", "esophagitis-a", "esophagitis-b-d")


def _child(folder: Path, name: str) -> Path:
    for d in subdirs(folder):
        if d.name.lower() == name.lower():
            return d
    return require_dir(folder / name)


def convert(raw: Path, out: Path, conv: Conversion, seed: int) -> None:
    upper = find_dir(raw, "upper-gi-tract", "Hyper-Kvasir's upper GI tract",
                     lambda d: any(c.name.lower() == "anatomical-landmarks" for c in subdirs(d)))
    landmarks = _child(upper, "anatomical-landmarks")
    findings = _child(upper, "pathological-findings")
    w = new_category(out, conv, "hyperkvasir")
    normals, stems = {}, {}
    for cdir in subdirs(landmarks):
        for p in list_files(cdir, recursive=True):
            key = p.relative_to(landmarks).as_posix()
            normals[key], stems[key] = p, rel_stem(p, landmarks)
    if not normals:
        raise DataError(f"{landmarks} holds no images in class folders (pylorus, retroflex-stomach, z-line)")
    write_normals(w, normals, seed, stems)
    for cls in ANOMALY_CLASSES:
        cdir = _child(findings, cls)
        files = list_files(cdir, recursive=True)
        if not files:
            raise DataError(f"{cdir} holds no images")
        for p in files:
            w.add_file("test", cls, rel_stem(p, cdir), p, source_id=p.relative_to(findings).as_posix())
