"""Helpers shared by the raw-download converters.

* Listings are sorted (by relative POSIX path), case-insensitive on extensions and skip hidden files,
  ``Thumbs.db``, ``desktop.ini`` and ``__MACOSX`` folders, so results never depend on the file system.
* Every output image is an RGB PNG (grayscale / RGBA / LA / palette / 16-bit converted the same way
  as :func:`fsad_bench.data.cache.decode_image` does); every mask is a binary 8-bit PNG (0 / 255).
* A dataset is built into a temporary folder under ``DATA_ROOT`` and then swapped in, so a run that
  fails leaves the previous tree untouched and a second run gives the same bytes (nothing duplicated).
* Output names are derived from the relative source path and never collide (a collision gets a short
  hash of the source path appended).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsad_bench.data.layout import NORMAL
from fsad_bench.errors import DataError

#: Raw image extensions the converters accept (compared lower-case: .PNG, .JPG ... are fine).
RAW_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", ".ds_store"})
TEST_FRACTION = 0.25
#: Bumped when a conversion rule changes; written into the dataset's ``.fsad-prepare.json``.
CONVERTER_VERSION = 1
MANIFEST = ".fsad-prepare.json"


def is_junk(path: Path) -> bool:
    name = path.name
    return name.startswith(".") or name.lower() in JUNK_NAMES


def list_files(folder: Path, suffixes: Iterable[str] = RAW_IMAGE_SUFFIXES, recursive: bool = False
               ) -> list[Path]:
    """Image files in ``folder`` (optionally below it), sorted by relative path, junk skipped."""
    folder = Path(folder)
    wanted = {s.lower() for s in suffixes}
    out: list[Path] = []
    walker = folder.rglob("*") if recursive else folder.iterdir()
    for p in walker:
        rel = p.relative_to(folder)
        if any(is_junk(Path(part)) for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in wanted:
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def subdirs(folder: Path) -> list[Path]:
    return sorted((d for d in Path(folder).iterdir() if d.is_dir() and not is_junk(d)), key=lambda d: d.name)


def require_dir(path: Path, what: str = "") -> Path:
    if not Path(path).is_dir():
        raise DataError(f"expected folder {path} is missing{f' ({what})' if what else ''}; "
                        "the raw layout is in docs/reference/datasets.md")
    return Path(path)


def find_dirs(root: Path, match: Callable[[Path], bool], max_depth: int = 4) -> list[Path]:
    """Folders under ``root`` (root included, depth <= max_depth) for which ``match`` is true,
    shallowest first, then by path. Tolerates the extra nesting levels archives often add."""
    root = Path(root)
    found: list[tuple[int, str, Path]] = []
    level = [root]
    for depth in range(max_depth + 1):
        nxt: list[Path] = []
        for d in level:
            if match(d):
                found.append((depth, d.as_posix(), d))
            if depth < max_depth:
                try:
                    nxt.extend(subdirs(d))
                except OSError:
                    continue
        level = nxt
    return [p for _, _, p in sorted(found)]


def find_dir(root: Path, name: str | re.Pattern, what: str, has: Callable[[Path], bool] | None = None,
             max_depth: int = 4) -> Path:
    """The shallowest folder named ``name`` (case-insensitive; or matching a regex) under ``root`` for
    which ``has`` holds. DataError naming the expected path if none, or if two tie at that depth."""
    if isinstance(name, str):
        def name_ok(d: Path) -> bool:
            return d.name.lower() == name.lower()
        shown = name
    else:
        def name_ok(d: Path) -> bool:
            return bool(name.fullmatch(d.name))
        shown = name.pattern

    hits = find_dirs(root, lambda d: name_ok(d) and (has is None or has(d)), max_depth)
    if not hits:
        raise DataError(f"expected folder {Path(root) / shown} is missing ({what}; searched {max_depth} "
                        "levels down); the raw layout is in docs/reference/datasets.md")
    depth0 = len(hits[0].relative_to(root).parts)
    tied = [h for h in hits if len(h.relative_to(root).parts) == depth0]
    if len(tied) > 1:
        raise DataError(f"ambiguous raw layout: {tied[0]} and {tied[1]} both look like {what}; "
                        "pass --raw pointing at one of them")
    return hits[0]


def has_images(d: Path) -> bool:
    try:
        return any(p.is_file() and p.suffix.lower() in RAW_IMAGE_SUFFIXES and not is_junk(p)
                   for p in d.iterdir())
    except OSError:
        return False


def has_images_below(d: Path) -> bool:
    return bool(list_files(d, recursive=True))


# --- images ------------------------------------------------------------------------------------------

def _to_rgb(img: Image.Image) -> Image.Image:
    """Same conversion as ``cache.decode_image`` (16-bit / float: min-max to 8 bit), no resizing."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        span = a.max() - a.min()
        img = Image.fromarray(((a - a.min()) / (span if span else 1) * 255).astype(np.uint8))
    return img.convert("RGB") if img.mode != "RGB" else img


def open_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully and return it as RGB; DataError naming the path if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}; replace or delete the file") from None


def open_mask(path: Path) -> np.ndarray:
    """Boolean mask (H, W): True where the label is non-zero; DataError naming the path if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read mask {path}: {exc}; replace or delete the file") from None
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr > 0


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}; replace or delete the file") from None


def array_to_rgb(arr: np.ndarray, path: Path) -> Image.Image:
    """An ``.npy`` frame (H, W) or (H, W, C>=1) as RGB: the first three channels (C >= 3) or gray.
    Values in [0, 1] are scaled by 255; anything else is clipped to [0, 255]."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 2:
        a = a[..., 0]
    if a.ndim == 3:
        a = a[..., :3]
    if a.ndim not in (2, 3) or a.size == 0:
        raise DataError(f"cannot read image {path}: array of shape {arr.shape} is not an image")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"cannot read image {path}: array holds NaN or inf values")
    if a.max() <= 1.0:
        a = a * 255.0
    img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    return img.convert("RGB")


def load_npy_rgb(path: Path) -> Image.Image:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}; replace or delete the file") from None
    return array_to_rgb(arr, path)


# --- names and the normal split ----------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(*parts: str) -> str:
    """File-name stem from path parts: joined with '_', characters outside [A-Za-z0-9._-] replaced."""
    text = "_".join(p for p in parts if p)
    text = _SAFE.sub("_", text).strip("._") or "img"
    return text


def rel_stem(path: Path, base: Path) -> str:
    """Stem naming ``path`` by its path relative to ``base`` (folders joined with '_')."""
    rel = Path(path).relative_to(base)
    return safe_name(*rel.parent.parts, rel.stem)


def split_normals(keys: Iterable[str], seed: int, test_fraction: float = TEST_FRACTION) -> dict[str, str]:
    """Seeded 75/25 split of normal items: key -> 'train' | 'test'.

    Keys are sorted first (file-system order never matters) then permuted with
    ``np.random.default_rng(seed)``; ``ceil(n * test_fraction)`` go to test (as scikit-learn's
    ``train_test_split(test_size=0.25)``, which reproduces Table 1's train/test normal counts).
    """
    ordered = sorted(set(keys))
    n = len(ordered)
    n_test = math.ceil(n * test_fraction) if n > 1 else 0
    perm = np.random.default_rng(seed).permutation(n)
    test = {ordered[i] for i in perm[:n_test]}
    return {k: ("test" if k in test else "train") for k in ordered}


# --- writing -----------------------------------------------------------------------------------------

@dataclass
class CategoryWriter:
    """Writes one category folder in the canonical layout (inside the temporary dataset folder)."""

    root: Path
    counts: Counter = field(default_factory=Counter)
    _names: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def _unique(self, split: str, cls: str, stem: str, source_id: str) -> str:
        stem = safe_name(stem)
        key = (split, cls, stem.lower())  # case-insensitive file systems must not merge two names
        if key in self._names and self._names[key] != source_id:
            stem = f"{stem}-{hashlib.sha1(source_id.encode()).hexdigest()[:8]}"
            key = (split, cls, stem.lower())
        if key in self._names:
            raise DataError(f"two raw files map to the same output {split}/{cls}/{stem}.png "
                            f"({self._names[key]} and {source_id}); report this layout")
        self._names[key] = source_id
        return stem

    def _folder(self, split: str, cls: str) -> Path:
        if split not in ("train", "test") or (split == "train" and cls != NORMAL):
            raise ValueError(f"bad split/class {split}/{cls}")
        folder = self.root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _write_mask(self, cls: str, stem: str, mask: np.ndarray | None, size: tuple[int, int],
                    source_id: str) -> None:
        if mask is None or cls == NORMAL:
            return
        m = np.asarray(mask).astype(bool)
        if m.shape != (size[1], size[0]):
            raise DataError(f"mask of {source_id} is {m.shape[1]}x{m.shape[0]}, the image is "
                            f"{size[0]}x{size[1]}")
        mdir = self.root / "ground_truth" / cls
        mdir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(m.astype(np.uint8) * 255, mode="L").save(mdir / f"{stem}_mask.png", format="PNG")

    def add(self, split: str, cls: str, stem: str, image: Image.Image, mask: np.ndarray | None = None,
            source_id: str | None = None) -> Path:
        """Write ``image`` as ``<split>/<cls>/<stem>.png`` (+ ``ground_truth/<cls>/<stem>_mask.png``)."""
        source_id = source_id or stem
        folder = self._folder(split, cls)
        stem = self._unique(split, cls, stem, source_id)
        dest = folder / f"{stem}.png"
        _to_rgb(image).save(dest, format="PNG")
        self._write_mask(cls, stem, mask, image.size, source_id)
        self.counts[(split, cls)] += 1
        return dest

    def add_file(self, split: str, cls: str, stem: str, src: Path, mask: np.ndarray | None = None,
                 source_id: str | None = None) -> Path:
        """Like :meth:`add` for a whole file. An RGB PNG is copied byte for byte once a full decode has
        proved it readable; anything else is converted to an RGB PNG."""
        source_id = source_id or str(src)
        img = open_rgb(src)
        with Image.open(src) as probe:
            plain = src.suffix.lower() == ".png" and probe.format == "PNG" and probe.mode == "RGB"
        if not plain:
            return self.add(split, cls, stem, img, mask, source_id)
        folder = self._folder(split, cls)
        stem = self._unique(split, cls, stem, source_id)
        dest = folder / f"{stem}.png"
        shutil.copyfile(src, dest)
        self._write_mask(cls, stem, mask, img.size, source_id)
        self.counts[(split, cls)] += 1
        return dest


@dataclass
class Conversion:
    """What one converter run produced: categories written and warnings worth showing the user."""

    categories: dict[str, CategoryWriter] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def build_dataset(name: str, data_root: Path, fill: Callable[[Path, Conversion], None],
                  manifest: dict | None = None) -> tuple[Path, Conversion]:
    """Build ``DATA_ROOT/<name>`` atomically: ``fill(tmp_dataset_dir, conv)`` writes category folders
    into a temporary folder under DATA_ROOT, which then replaces the previous tree. Nothing is written
    outside DATA_ROOT; on failure the temporary folder is removed and the old tree is untouched."""
    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    final = data_root / name
    tmp = data_root / f".{name}.tmp-{os.getpid()}"
    old = data_root / f".{name}.old-{os.getpid()}"
    for stale in list(data_root.glob(f".{name}.tmp-*")) + list(data_root.glob(f".{name}.old-*")):
        if stale in (tmp, old) or not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)  # left by this pid or by a killed run
    tmp.mkdir()
    conv = Conversion()
    try:
        fill(tmp, conv)
        if not conv.categories:
            raise DataError(f"nothing was converted for {name!r}: no category found in the raw folder")
        for cat, w in conv.categories.items():
            if not w.counts.get(("train", NORMAL)):
                raise DataError(f"{name}/{cat}: the raw data gave no training normals")
            if not w.counts.get(("test", NORMAL)):
                raise DataError(f"{name}/{cat}: the raw data gave no test normals")
        info = dict(manifest or {})
        info.update({"dataset": name, "converter_version": CONVERTER_VERSION, "counts": {
            cat: {f"{s}/{c}": n for (s, c), n in sorted(w.counts.items())}
            for cat, w in sorted(conv.categories.items())}})
        (tmp / MANIFEST).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return final, conv


def new_category(out: Path, conv: Conversion, category: str) -> CategoryWriter:
    writer = CategoryWriter(Path(out) / category)
    conv.categories[category] = writer
    return writer


def write_normals(writer: CategoryWriter, items: dict[str, Path | Callable[[], Image.Image]], seed: int,
                  stems: dict[str, str] | None = None) -> None:
    """Split normal items (key -> source file or image loader) 75/25 with ``seed``; write in key order.
    Keys identify the source (relative path, plus crop index where images are cut)."""
    assignment = split_normals(items, seed)
    for key in sorted(items):
        stem = (stems or {}).get(key, key)
        src = items[key]
        if isinstance(src, Path):
            writer.add_file(assignment[key], NORMAL, stem, src, source_id=key)
        else:
            writer.add(assignment[key], NORMAL, stem, src(), source_id=key)


class CropLoader:
    """Lazy crops of source images, decoding each source once when crops are asked for in order
    (keys sorted by source path keep a source's crops consecutive)."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._img: Image.Image | None = None

    def __call__(self, path: Path, box: tuple[int, int, int, int]) -> Callable[[], Image.Image]:
        def load() -> Image.Image:
            if self._path != path:
                self._path, self._img = path, open_rgb(path)
            return self._img.crop(box)
        return load
