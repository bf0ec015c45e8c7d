"""Decoded, resized images cached once per (dataset, category, size).

Training never decodes an image file twice: the first use of a category at a size decodes every
file (threads), resizes to size x size, and saves one uint8 array (N, size, size, 3) plus the masks
(N, size, size) as ``.npy`` under the cache folder. The cache key includes a fingerprint of the
file list (names, sizes, mtimes), so an edited dataset is decoded again.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsad_bench.data.layout import CategoryIndex
from fsad_bench.errors import DataError
from fsad_bench.paths import cache_dir

#: Counts decodes in this process; tests use it to prove the cache is hit.
DECODE_COUNTER = {"images": 0}


@dataclass
class DecodedCategory:
    index: CategoryIndex
    images: np.ndarray  # uint8 (N, S, S, 3), in index.files order
    masks: np.ndarray   # uint8 (N, S, S), 1 = defect pixel; zeros where no mask exists


def decode_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3); grayscale/RGBA/LA/16-bit inputs are converted consistently."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path)
            img = Image.fromarray(arr if arr.ndim == 2 or arr.shape[-1] != 1 else arr[..., 0])
        else:
            img = Image.open(path)
            img.load()
        if img.mode in ("I;16", "I;16B", "I", "F"):
            a = np.asarray(img, dtype=np.float64)
            span = a.max() - a.min()
            img = Image.fromarray(((a - a.min()) / (span if span else 1) * 255).astype(np.uint8))
        img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}; replace or delete the file") from None
    DECODE_COUNTER["images"] += 1
    return np.asarray(img, dtype=np.uint8)


def decode_mask(path: Path, size: int) -> np.ndarray:
    try:
        img = Image.open(path).convert("L").resize((size, size), Image.NEAREST)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read mask {path}: {exc}; replace or delete the file") from None
    return (np.asarray(img) > 0).astype(np.uint8)


def _fingerprint(index: CategoryIndex, size: int) -> str:
    h = hashlib.sha256(f"v1|{size}".encode())
    for rel in index.files + [m for m in index.masks if m]:
        st = (index.root / rel).stat()
        h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_category(index: CategoryIndex, size: int, dataset: str, category: str) -> DecodedCategory:
    """All images and masks of a category at ``size``, from the cache or decoded once into it."""
    folder = cache_dir() / "decoded" / dataset / category / str(size)
    key = _fingerprint(index, size)
    img_file, mask_file = folder / f"{key}-images.npy", folder / f"{key}-masks.npy"
    if img_file.exists() and mask_file.exists():
        return DecodedCategory(index, np.load(img_file), np.load(mask_file))
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        images = np.stack(list(pool.map(lambda rel: decode_image(index.root / rel, size), index.files)))
    masks = np.zeros(images.shape[:3], dtype=np.uint8)
    for i, rel in enumerate(index.masks):
        if rel is not None:
            masks[i] = decode_mask(index.root / rel, size)
    folder.mkdir(parents=True, exist_ok=True)
    for target, arr in ((img_file, images), (mask_file, masks)):
        tmp = target.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, arr)
        os.replace(tmp, target)  # atomic: concurrent workers never see half a file
    return DecodedCategory(index, images, masks)
