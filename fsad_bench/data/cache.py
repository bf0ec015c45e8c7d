"""Decoded, resized images cached once per (dataset, category, size).

Training never decodes an image file twice: the first use of a category at a size decodes every
file (threads), resizes to size x size, and saves one uint8 array (N, size, size, 3) plus the masks
(N, size, size) as ``.npy`` under the cache folder. The cache key is the category's
:func:`data_fingerprint`: the content of every file (not its size or mtime) and the decoder, so a
rewritten file is decoded again even when its size and modification time are unchanged.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, UnidentifiedImageError

from fsad_bench.data.layout import CategoryIndex
from fsad_bench.errors import DataError
from fsad_bench.metrics import resize_mask
from fsad_bench.paths import cache_dir
from fsad_bench.provenance import content_digest

#: Counts decodes in this process; tests use it to prove the cache is hit.
DECODE_COUNTER = {"images": 0}


@dataclass
class DecodedCategory:
    index: CategoryIndex
    images: np.ndarray  # uint8 (N, S, S, 3), in index.files order
    masks: np.ndarray   # uint8 (N, S, S), 1 = defect pixel; zeros where no mask exists
    fingerprint: str = ""  # data_fingerprint(index) of the files these arrays were decoded from


_OPEN_LOCK = threading.Lock()


def open_image(path: Path) -> Image.Image:
    """``Image.open`` that refuses decompression bombs with a :class:`DataError` naming the file.

    PIL raises for more than twice ``Image.MAX_IMAGE_PIXELS`` (89 Mpx) and only warns above it, in a
    message that does not name the file; both are refused here (no dataset of the benchmark comes
    close). The warning is made an error only while the header is read, under a lock because the
    warnings filters are process-wide and images are decoded in threads.
    """
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"image {path} fails PIL's decompression-bomb check ({str(exc).rstrip('.')}); "
                        "replace or delete the file") from None


def decode_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3); grayscale/RGBA/LA/16-bit inputs are converted consistently."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path)
            img = Image.fromarray(arr if arr.ndim == 2 or arr.shape[-1] != 1 else arr[..., 0])
        else:
            img = open_image(path)
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
    """Binary uint8 (size, size) mask, resized as the authors' localisation does (bilinear, > 0)."""
    try:
        grey = np.asarray(open_image(path).convert("L"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read mask {path}: {exc}; replace or delete the file") from None
    return resize_mask(grey, size)


def decoder_identity() -> str:
    """What turns file bytes into pixels: Pillow's version and the source of ``decode_image``,
    ``decode_mask`` and ``resize_mask``, so pixels decoded otherwise are never served from the cache."""
    source = "".join(inspect.getsource(f) for f in (decode_image, decode_mask, resize_mask))
    return f"pillow={PIL.__version__};decode={hashlib.sha256(source.encode()).hexdigest()[:16]}"


def data_fingerprint(index: CategoryIndex) -> str:
    """Content fingerprint of a category: every image and mask file's bytes (with its relative path and
    its image/mask pairing) and the decoder. Same fingerprint = same decoded inputs."""
    digest = content_digest(index.root, index.files, index.masks)
    return hashlib.sha256(f"{digest}|{decoder_identity()}".encode()).hexdigest()[:24]


def load_category(index: CategoryIndex, size: int, dataset: str, category: str) -> DecodedCategory:
    """All images and masks of a category at ``size``, from the cache or decoded once into it."""
    folder = cache_dir() / "decoded" / dataset / category / str(size)
    fingerprint = data_fingerprint(index)
    key = hashlib.sha256(f"v3|{size}|{fingerprint}".encode()).hexdigest()[:20]
    img_file, mask_file = folder / f"{key}-images.npy", folder / f"{key}-masks.npy"
    if img_file.exists() and mask_file.exists():
        return DecodedCategory(index, np.load(img_file), np.load(mask_file), fingerprint)
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        images = np.stack(list(pool.map(lambda rel: decode_image(index.root / rel, size), index.files)))
    masks = np.zeros(images.shape[:3], dtype=np.uint8)
    for i, rel in enumerate(index.masks):
        if rel is not None:
            masks[i] = decode_mask(index.root / rel, size)
    _save_cached(folder, ((img_file, images), (mask_file, masks)))
    return DecodedCategory(index, images, masks, fingerprint)


def _save_cached(folder: Path, arrays: tuple[tuple[Path, np.ndarray], ...]) -> None:
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, arr in arrays:
            tmp = target.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, arr)
            os.replace(tmp, target)  # atomic: concurrent workers never see half a file
            tmp = None
    except OSError:
        # A full or read-only cache folder only costs decoding again next time; the arrays in hand
        # are complete, so the cell goes on (the results store reports a full disk itself).
        if tmp is not None:
            tmp.unlink(missing_ok=True)
