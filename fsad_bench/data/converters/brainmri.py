"""BrainMRI (Kaggle "Brain MRI Images for Brain Tumor Detection"): no/ normal, yes/ tumour.

Raw layout (the Kaggle archive extracted)::

    <raw>/no/*.jpg|*.JPG|*.jpeg|*.png      98 images without tumour
    <raw>/yes/*.jpg|...                    155 images with tumour
    <raw>/brain_tumor_dataset/{no,yes}/    the archive's byte-identical second copy

The shallowest ``no`` / ``yes`` folders holding images are used (so the duplicate copy is read once).
Rules: no/ -> normals (seeded 75/25 split), yes/ -> anomaly class ``tumor``.
"""

from __future__ import annotations

from pathlib import Path

from fsad_bench.data.converters.common import (
    Conversion,
    find_dir,
    has_images,
    list_files,
    new_category,
    rel_stem,
    write_normals,
)

ANOMALY_CLASS = "tumor"


def convert(raw: Path, out: Path, conv: Conversion, seed: int) -> None:
    no = find_dir(raw, "no", "BrainMRI images without tumour", has_images)
    yes = find_dir(raw, "yes", "BrainMRI images with tumour", has_images)
    if no.parent != yes.parent:
        conv.warn(f"no/ and yes/ found in different folders: {no} and {yes}")
    w = new_category(out, conv, "brainmri")
    normals = {p.relative_to(no).as_posix(): p for p in list_files(no)}
    write_normals(w, normals, seed, {k: rel_stem(p, no) for k, p in normals.items()})
    for p in list_files(yes):
        w.add_file("test", ANOMALY_CLASS, rel_stem(p, yes), p, source_id=p.relative_to(yes).as_posix())
