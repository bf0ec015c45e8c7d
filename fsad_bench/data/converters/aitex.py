"""AITEX Fabric Image Database: 4096x256 strips cut into 256x256 crops.

Raw layout (the three archives of the AFID page extracted side by side; the extra inner folder that
the archives add, e.g. ``Defect_images/Defect_images/``, is found automatically)::

    <raw>/NODefect_images/<fabric folder>/NNNN_000_FF.png   (defect-free strips, any nesting)
    <raw>/Defect_images/NNNN_CCC_FF.png                     (CCC = defect code)
    <raw>/Mask_images/NNNN_CCC_FF_mask.png                  (also _mask1.png, _mask2.png ...: OR-ed)

Rules: every strip is cut into non-overlapping 256x256 tiles (16 per 4096x256 strip; a remainder
narrower than 256 px is dropped). Tiles of defect-free strips are normals (seeded 75/25 split). Tiles of
defect strips are kept as anomalies only where their mask tile has defect pixels; the defect-free
tiles of defect strips are dropped. The defect class comes from the file-name code.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fsad_bench.data.converters.common import (
    Conversion,
    CropLoader,
    find_dir,
    has_images,
    has_images_below,
    image_size,
    list_files,
    new_category,
    open_mask,
    open_rgb,
    rel_stem,
    safe_name,
    write_normals,
)

TILE = 256
DEFECT_CLASSES = {
    "002": "Broken_end", "006": "Broken_yarn", "010": "Broken_pick", "016": "Weft_curling",
    "019": "Fuzzyball", "022": "Cut_selvage", "023": "Crease", "025": "Warp_ball", "027": "Knots",
    "029": "Contamination", "030": "Nep", "036": "Weft_crack",
}
_MASK_NAME = re.compile(r"^(?P<stem>.+?)_mask\d*$", re.IGNORECASE)


def tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) boxes of the full 256x256 tiles, row-major."""
    return [(c * TILE, r * TILE, (c + 1) * TILE, (r + 1) * TILE)
            for r in range(height // TILE) for c in range(width // TILE)]


def convert(raw: Path, out: Path, conv: Conversion, seed: int) -> None:
    normal_dir = find_dir(raw, "NODefect_images", "the AITEX defect-free strips", has_images_below)
    defect_dir = find_dir(raw, "Defect_images", "the AITEX defect strips", has_images)
    mask_dir = find_dir(raw, "Mask_images", "the AITEX defect masks", has_images)
    w = new_category(out, conv, "aitex")

    # Normals: one lazy item per tile; each strip is decoded once.
    items, stems, crop = {}, {}, CropLoader()
    for p in list_files(normal_dir, recursive=True):
        width, height = image_size(p)
        boxes = tiles(width, height)
        if not boxes:
            conv.warn(f"{p} is {width}x{height}, smaller than one {TILE}x{TILE} tile: skipped")
        base = rel_stem(p, normal_dir)
        for i, box in enumerate(boxes):
            key = f"{p.relative_to(normal_dir).as_posix()}#{i:02d}"
            items[key], stems[key] = crop(p, box), f"{base}_{i:02d}"
    write_normals(w, items, seed, stems)

    masks: dict[str, list[Path]] = {}
    for m in list_files(mask_dir, recursive=True):
        match = _MASK_NAME.match(m.stem)
        if match:
            masks.setdefault(match["stem"].lower(), []).append(m)
    for p in list_files(defect_dir, recursive=True):
        parts = p.stem.split("_")
        code = parts[1] if len(parts) >= 3 else ""
        cls = DEFECT_CLASSES.get(code)
        if cls is None:
            conv.warn(f"{p}: unknown defect code {code!r} in the file name (expected NNNN_CCC_FF): skipped")
            continue
        mask_files = masks.get(p.stem.lower())
        if not mask_files:
            conv.warn(f"{p}: no mask {mask_dir / (p.stem + '_mask.png')}: skipped")
            continue
        img = open_rgb(p)
        mask = np.zeros((img.height, img.width), bool)
        bad = False
        for mf in mask_files:
            m = open_mask(mf)
            if m.shape != mask.shape:
                conv.warn(f"{mf} is {m.shape[1]}x{m.shape[0]}, its image {p} is {img.width}x{img.height}: "
                          "image skipped")
                bad = True
                break
            mask |= m
        if bad:
            continue
        for i, box in enumerate(tiles(img.width, img.height)):
            left, top, right, bottom = box
            tile_mask = mask[top:bottom, left:right]
            if tile_mask.any():
                w.add("test", cls, f"{safe_name(p.stem)}_{i:02d}", img.crop(box), tile_mask,
                      source_id=f"{p.relative_to(defect_dir).as_posix()}#{i:02d}")
