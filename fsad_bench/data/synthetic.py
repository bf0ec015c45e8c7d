"""Embedded ``synthetic`` dataset: deterministic textures with pasted defects.

The benchmark needs a dataset that works offline, out of the box, and exercises
exactly the same code path as real data.  This module therefore *generates* a
small dataset on first use and writes it in the MVTec AD on-disk layout::

    ROOT/<category>/train/good/000.png ...
    ROOT/<category>/test/good/000.png ...
    ROOT/<category>/test/<defect>/000.png ...
    ROOT/<category>/ground_truth/<defect>/000_mask.png ...

Images are 8-bit RGB PNGs of ``image_size`` x ``image_size`` pixels.  Masks are
single-channel 8-bit PNGs of the same size holding only 0 and 255.  File names
are zero-padded indices so that sorted order is stable.

How normal images are made
--------------------------
Each category starts from one real grayscale photo bundled with scikit-image
(512x512 px): ``brick`` uses ``skimage.data.brick()``, ``grass`` uses
``skimage.data.grass()`` and ``gravel`` uses ``skimage.data.gravel()``.  The
photo is normalised to mean 0.5 and standard deviation 0.14 (so the three
categories have comparable contrast).  For every image:

1. a random square crop of 160..256 px is taken at a random position;
2. a random 90-degree rotation (0..3 quarter turns) and a random horizontal
   flip are applied;
3. the crop is resized to ``image_size`` with bicubic resampling (PIL);
4. per-image contrast (x0.85..1.15 around mid-grey) and brightness
   (+-0.05) jitter is applied;
5. the gray value is tinted to RGB by multiplying with a category colour
   (brick reddish, grass green, gravel grey-brown), itself jittered by ~3 %
   per channel;
6. Gaussian pixel noise with a per-image sigma of 0.005..0.02 is added and the
   result is clipped and quantised to uint8.

How anomalous images are made
-----------------------------
An anomalous test image is a normal image (generated as above from its own
seed) with exactly one defect pasted in.  Every defect is described by a soft
alpha map in [0, 1], rendered with PIL at 4x supersampling and box-downsampled
for anti-aliasing; the ground-truth mask is ``alpha > 0.25`` (-> 255).  Each
defect draws a severity ``s ~ U(0, 1)``: its contrast/opacity grows linearly
with ``s`` and its size is drawn from ``0.6 * s + 0.4 * U(0, 1)`` of the size
range, so about a third of the defects (``s < 1/3``) are subtle -- low
contrast and usually small.  Sizes are relative to ``image_size`` (at least a
few percent of it), so defects stay visible at 64 px.  Defect classes:

``scratch``
    One (sometimes two) thin quadratic-Bezier curves of length 20..60 % of the
    image side, width about 1..2.5 px at 128 px, blended towards near-white
    (bright scratch) or near-black (dark scratch) with opacity 0.25..0.85.
``stain``
    An irregular blob (union of 3..5 random ellipses, radius 6..16 % of the
    side) with a Gaussian-blurred soft edge, blended with opacity 0.3..0.85
    towards a colour whose hue is 0.3..0.7 of the hue circle away from the
    category tint; the texture luminance is kept under the stain.
``hole``
    A roughly circular dark blob (polygon with radial noise, radius 4..11 %
    of the side, soft edge) with a darker, smaller core; the image is
    multiplicatively darkened by up to 35..90 %.
``crack``
    A jagged random-walk polyline (steps of ~3 % of the side, heading noise
    0.55 rad per step, total length 30..70 % of the side, sometimes with one
    branch), 1..3 px wide at 128 px, darkened by 35..85 %.

Determinism
-----------
Every image uses its own ``numpy.random.default_rng`` seeded from
``(seed, category index, split code, image index)`` (split code 0 = train/good,
1 = test/good, 2 + k = defect class k); the defect itself uses the same tuple
with an extra trailing ``1``.  No network access is needed.

Atomic, idempotent writes
-------------------------
:func:`generate` builds the tree in a sibling temporary directory
``<root>.tmp-<pid>``, writes the marker ``.complete`` (JSON with the generator
version and all parameters) last, and then renames the whole directory into
place.  A half-written tree is therefore never visible under ``root``, and a
later call with identical parameters returns immediately.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CATEGORIES",
    "COMPLETE_MARKER",
    "DEFECTS",
    "SYNTHETIC_VERSION",
    "ensure",
    "generate",
]

#: Bumped whenever the generated pixels change, so stale trees are rebuilt.
SYNTHETIC_VERSION: str = "2"

#: Category names; each maps to a bundled scikit-image texture photo.
CATEGORIES: tuple[str, ...] = ("brick", "grass", "gravel")

#: Defect classes (the ``test/<defect>`` folder names), each with a pixel mask.
DEFECTS: tuple[str, ...] = ("scratch", "stain", "hole", "crack")

#: Marker file written last; its presence means the tree is complete.
COMPLETE_MARKER: str = ".complete"

_GENERATOR_ID = "fsad_bench.data.synthetic"

# Category tints (RGB multipliers on a mid-grey-centred texture).
_TINTS: dict[str, tuple[float, float, float]] = {
    "brick": (1.25, 0.78, 0.62),
    "grass": (0.62, 1.10, 0.50),
    "gravel": (1.00, 0.90, 0.75),
}

_SUPERSAMPLE = 4
_MASK_THRESHOLD = 0.25
_CROP_MIN, _CROP_MAX = 160, 256
_PHOTO_STD = 0.14

_Array = np.ndarray
_DrawFn = Callable[[ImageDraw.ImageDraw, float], None]


# --------------------------------------------------------------------------- #
# Normal images
# --------------------------------------------------------------------------- #
def _load_photo(category: str) -> _Array:
    """Load and normalise the bundled photo, so categories share one contrast."""
    import skimage.data  # local import: only needed when actually generating

    loader = {
        "brick": skimage.data.brick,
        "grass": skimage.data.grass,
        "gravel": skimage.data.gravel,
    }[category]
    photo = np.asarray(loader(), dtype=np.float32) / 255.0
    if photo.ndim == 3:  # defensive: future versions might ship RGB
        photo = photo.mean(axis=-1)
    std = float(photo.std()) or 1.0
    return ((photo - float(photo.mean())) / std * _PHOTO_STD + 0.5).astype(np.float32)


def _normal_image(photo: _Array, tint: tuple[float, float, float], size: int,
                  rng: np.random.Generator) -> _Array:
    """Render one defect-free RGB float image in [0, 1] from a texture photo."""
    height, width = photo.shape
    crop = int(rng.integers(_CROP_MIN, min(_CROP_MAX, height, width) + 1))
    y = int(rng.integers(0, height - crop + 1))
    x = int(rng.integers(0, width - crop + 1))
    patch = photo[y:y + crop, x:x + crop]
    patch = np.rot90(patch, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    resized = Image.fromarray(np.ascontiguousarray(patch, dtype=np.float32)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    gray = np.asarray(resized, dtype=np.float32)
    contrast = rng.uniform(0.85, 1.15)
    brightness = rng.uniform(-0.05, 0.05)
    gray = (gray - 0.5) * contrast + 0.5 + brightness
    colour = np.asarray(tint, dtype=np.float32) * (1.0 + rng.normal(0.0, 0.03, 3))
    rgb = gray[..., None] * colour[None, None, :].astype(np.float32)
    sigma = rng.uniform(0.005, 0.02)
    rgb = rgb + rng.normal(0.0, sigma, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- #
# Defects
# --------------------------------------------------------------------------- #
def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _render_alpha(size: int, draw_fn: _DrawFn, blur: float = 0.0) -> _Array:
    """Draw a shape at 4x resolution and box-downsample it to an anti-aliased alpha."""
    big = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    draw_fn(ImageDraw.Draw(big), float(_SUPERSAMPLE))
    small = big.resize((size, size), Image.Resampling.BOX)
    if blur > 0:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(small, dtype=np.float32) / 255.0


def _blend(img: _Array, alpha: _Array, target: _Array) -> _Array:
    a = alpha[..., None]
    return img * (1.0 - a) + target * a


def _bezier(p0: _Array, p1: _Array, p2: _Array, n: int = 32) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    return [(float(px), float(py)) for px, py in pts]


def _scratch(img: _Array, size: int, s: float, u: float,
             rng: np.random.Generator) -> tuple[_Array, _Array]:
    n_lines = 2 if rng.random() < 0.25 + 0.2 * s else 1
    curves: list[tuple[list[tuple[float, float]], float]] = []
    for _ in range(n_lines):
        length = size * _lerp(0.2, 0.6, u) * rng.uniform(0.85, 1.0)
        centre = rng.uniform(0.2 * size, 0.8 * size, 2)
        theta = rng.uniform(0.0, math.pi)
        direction = np.array([math.cos(theta), math.sin(theta)])
        normal = np.array([-direction[1], direction[0]])
        p0 = centre - direction * length / 2
        p2 = centre + direction * length / 2
        p1 = centre + normal * length * rng.uniform(-0.3, 0.3)
        width = max(1.0, _lerp(1.0, 2.5, rng.random()) * size / 128.0)
        curves.append((_bezier(p0, p1, p2), width))

    def draw(d: ImageDraw.ImageDraw, f: float) -> None:
        for pts, width in curves:
            d.line([(x * f, y * f) for x, y in pts], fill=255,
                   width=max(1, round(width * f)), joint="curve")

    alpha = _render_alpha(size, draw)
    bright = rng.random() < 0.5
    level = rng.uniform(0.9, 1.0) if bright else rng.uniform(0.0, 0.1)
    target = np.full(3, level, dtype=np.float32)
    opacity = _lerp(0.25, 0.85, s)
    return _blend(img, alpha * opacity, target), alpha


def _stain(img: _Array, size: int, s: float, u: float, rng: np.random.Generator,
           category: str) -> tuple[_Array, _Array]:
    radius = size * _lerp(0.06, 0.16, u)
    centre = rng.uniform(radius, size - radius, 2)
    ellipses = []
    for _ in range(int(rng.integers(3, 6))):
        offset = rng.normal(0.0, 0.35 * radius, 2)
        rx, ry = radius * rng.uniform(0.5, 0.9, 2)
        ellipses.append((centre + offset, rx, ry))

    def draw(d: ImageDraw.ImageDraw, f: float) -> None:
        for (cx, cy), rx, ry in ellipses:
            d.ellipse([(cx - rx) * f, (cy - ry) * f, (cx + rx) * f, (cy + ry) * f], fill=255)

    alpha = _render_alpha(size, draw, blur=0.2 * radius)
    tint_hue = colorsys.rgb_to_hsv(*(c / max(_TINTS[category]) for c in _TINTS[category]))[0]
    hue = (tint_hue + rng.uniform(0.3, 0.7)) % 1.0
    colour = np.asarray(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 0.9), 1.0), dtype=np.float32)
    lum = img.mean(axis=-1, keepdims=True)
    target = np.clip(colour[None, None, :] * (0.35 + 0.9 * lum), 0.0, 1.0)
    opacity = _lerp(0.3, 0.85, s)
    return _blend(img, alpha * opacity, target), alpha


def _blob_polygon(centre: _Array, radius: float, rng: np.random.Generator,
                  n: int = 24) -> list[tuple[float, float]]:
    angles = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    # Smooth radial noise from a few low-frequency harmonics.
    r = np.ones(n)
    for k in (2, 3, 5):
        r += rng.normal(0.0, 0.08) * np.cos(k * angles + rng.uniform(0, 2 * math.pi))
    r = radius * np.clip(r, 0.6, 1.4)
    return [(float(centre[0] + ri * math.cos(a)), float(centre[1] + ri * math.sin(a)))
            for ri, a in zip(r, angles, strict=True)]


def _hole(img: _Array, size: int, s: float, u: float,
          rng: np.random.Generator) -> tuple[_Array, _Array]:
    radius = size * _lerp(0.04, 0.11, u)
    centre = rng.uniform(1.5 * radius, size - 1.5 * radius, 2)
    outer = _blob_polygon(centre, radius, rng)
    core = _blob_polygon(centre + rng.normal(0.0, 0.1 * radius, 2), 0.5 * radius, rng)

    def poly(points: list[tuple[float, float]]) -> _DrawFn:
        def draw(d: ImageDraw.ImageDraw, f: float) -> None:
            d.polygon([(x * f, y * f) for x, y in points], fill=255)
        return draw

    alpha = _render_alpha(size, poly(outer), blur=0.12 * radius)
    alpha_core = _render_alpha(size, poly(core), blur=0.2 * radius)
    darkness = _lerp(0.35, 0.9, s)
    shade = darkness * (0.6 * alpha + 0.4 * alpha_core)
    return img * (1.0 - shade[..., None]), alpha


def _crack(img: _Array, size: int, s: float, u: float,
           rng: np.random.Generator) -> tuple[_Array, _Array]:
    step = 0.03 * size
    n_steps = max(4, round(_lerp(0.3, 0.7, u) * size / step))
    pos = rng.uniform(0.25 * size, 0.75 * size, 2)
    heading = rng.uniform(0.0, 2 * math.pi)
    main = [tuple(pos)]
    for _ in range(n_steps):
        heading += rng.normal(0.0, 0.55)
        pos = pos + step * rng.uniform(0.6, 1.4) * np.array([math.cos(heading), math.sin(heading)])
        main.append(tuple(pos))
    paths = [main]
    if rng.random() < 0.4 + 0.3 * s:
        start = main[int(rng.integers(1, len(main) - 1))]
        bpos = np.array(start)
        bheading = heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.2)
        branch = [start]
        for _ in range(max(2, n_steps // 3)):
            bheading += rng.normal(0.0, 0.55)
            bpos = bpos + step * np.array([math.cos(bheading), math.sin(bheading)])
            branch.append(tuple(bpos))
        paths.append(branch)
    width = max(1.0, _lerp(1.0, 3.0, rng.random()) * size / 128.0)

    def draw(d: ImageDraw.ImageDraw, f: float) -> None:
        for path in paths:
            d.line([(float(x) * f, float(y) * f) for x, y in path], fill=255,
                   width=max(1, round(width * f)), joint="curve")

    alpha = _render_alpha(size, draw)
    darkness = _lerp(0.35, 0.85, s)
    return img * (1.0 - darkness * alpha[..., None]), alpha


def _add_defect(img: _Array, defect: str, category: str,
                rng: np.random.Generator) -> tuple[_Array, _Array]:
    """Paste one defect; return (image, uint8 0/255 mask). Retries tiny masks."""
    size = img.shape[0]
    s = float(rng.random())  # severity; s < 1/3 -> subtle
    min_pixels = max(4, round(0.002 * size * size))
    for _ in range(32):
        u = float(np.clip(0.6 * s + 0.4 * rng.random(), 0.0, 1.0))  # size factor
        if defect == "scratch":
            out, alpha = _scratch(img, size, s, u, rng)
        elif defect == "stain":
            out, alpha = _stain(img, size, s, u, rng, category)
        elif defect == "hole":
            out, alpha = _hole(img, size, s, u, rng)
        elif defect == "crack":
            out, alpha = _crack(img, size, s, u, rng)
        else:  # pragma: no cover - guarded by DEFECTS
            raise ValueError(f"unknown defect {defect!r}")
        mask = alpha > _MASK_THRESHOLD
        if int(mask.sum()) >= min_pixels:
            return np.clip(out, 0.0, 1.0), mask.astype(np.uint8) * 255
    raise RuntimeError(f"could not place a visible {defect!r} defect")  # pragma: no cover


# --------------------------------------------------------------------------- #
# Per-sample rendering (also used by tests)
# --------------------------------------------------------------------------- #
def _to_uint8(img: _Array) -> _Array:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _split_code(split: str) -> int:
    if split == "train":
        return 0
    if split == "good":
        return 1
    return 2 + DEFECTS.index(split)


def _render_sample(photo: _Array, cat_idx: int, split: str, index: int, image_size: int,
                   seed: int) -> tuple[_Array, _Array, _Array | None]:
    """Return ``(base, image, mask)`` as uint8 arrays; ``mask`` is None for normals.

    ``split`` is ``"train"``, ``"good"`` (test/good) or a defect name.  ``base``
    is the defect-free image the anomalous one was made from (equal to
    ``image`` for normals), exposed so tests can check where pixels changed.
    """
    category = CATEGORIES[cat_idx]
    key = [seed, cat_idx, _split_code(split), index]
    base = _normal_image(photo, _TINTS[category], image_size, np.random.default_rng(key))
    base_u8 = _to_uint8(base)
    if split in ("train", "good"):
        return base_u8, base_u8, None
    image, mask = _add_defect(base, split, category, np.random.default_rng([*key, 1]))
    return base_u8, _to_uint8(image), mask


# --------------------------------------------------------------------------- #
# Tree writing
# --------------------------------------------------------------------------- #
def _params(image_size: int, n_train: int, n_test_good: int, n_per_defect: int,
            seed: int) -> dict[str, int]:
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    for name, value in (("n_train", n_train), ("n_test_good", n_test_good),
                        ("n_per_defect", n_per_defect)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return {"image_size": int(image_size), "n_train": int(n_train),
            "n_test_good": int(n_test_good), "n_per_defect": int(n_per_defect),
            "seed": int(seed)}


def _marker_payload(params: dict[str, int]) -> dict[str, object]:
    return {"generator": _GENERATOR_ID, "version": SYNTHETIC_VERSION,
            "categories": list(CATEGORIES), "defects": list(DEFECTS), "params": params}


def _read_marker(root: Path) -> dict[str, object] | None:
    try:
        data = json.loads((root / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _save_png(array: _Array, path: Path) -> None:
    # compress_level=1: noisy textures barely compress further, and this is the
    # dominant cost of generation.
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _build_tree(out: Path, params: dict[str, int]) -> None:
    size, seed = params["image_size"], params["seed"]
    photos = [_load_photo(category) for category in CATEGORIES]
    jobs: list[tuple[int, str, int, Path, Path | None]] = []
    for cat_idx, category in enumerate(CATEGORIES):
        cat_dir = out / category
        splits = [("train", cat_dir / "train" / "good", params["n_train"]),
                  ("good", cat_dir / "test" / "good", params["n_test_good"])]
        splits += [(d, cat_dir / "test" / d, params["n_per_defect"]) for d in DEFECTS]
        for split, folder, count in splits:
            folder.mkdir(parents=True, exist_ok=True)
            mask_dir = None if split in ("train", "good") else cat_dir / "ground_truth" / split
            if mask_dir is not None:
                mask_dir.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                stem = f"{index:03d}"
                mask_path = None if mask_dir is None else mask_dir / f"{stem}_mask.png"
                jobs.append((cat_idx, split, index, folder / f"{stem}.png", mask_path))

    def work(job: tuple[int, str, int, Path, Path | None]) -> None:
        cat_idx, split, index, image_path, mask_path = job
        _, image, mask = _render_sample(photos[cat_idx], cat_idx, split, index, size, seed)
        _save_png(image, image_path)
        if mask is not None and mask_path is not None:
            _save_png(mask, mask_path)

    # Every sample has its own RNG, so threading (PNG encoding and most numpy
    # work release the GIL) cannot change the output.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, jobs):
            pass


def _replaceable(root: Path) -> bool:
    """True if ``root`` may be overwritten: missing, empty, or an older synthetic tree."""
    if not root.exists():
        return True
    if not root.is_dir():
        return False
    marker = _read_marker(root)
    if marker is not None and marker.get("generator") == _GENERATOR_ID:
        return True
    return not any(root.iterdir())


def generate(root: Path, *, image_size: int = 128, n_train: int = 200, n_test_good: int = 30,
             n_per_defect: int = 20, seed: int = 0) -> Path:
    """Write the synthetic dataset into ``root`` (the folder holding category folders).

    Idempotent: if ``root/.complete`` records the same version and parameters,
    nothing is written.  Otherwise the tree is built in ``<root>.tmp-<pid>``
    and renamed into place, so readers never observe a partial dataset.  An
    existing synthetic tree with other parameters is replaced; a non-empty
    directory that is not a synthetic tree is never touched
    (:class:`FileExistsError`).
    """
    root = Path(root)
    params = _params(image_size, n_train, n_test_good, n_per_defect, seed)
    expected = _marker_payload(params)
    if _read_marker(root) == expected:
        return root
    if not _replaceable(root):
        raise FileExistsError(
            f"{root} exists and is not a synthetic dataset; refusing to overwrite"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    tmp = root.parent / f"{root.name}.tmp-{pid}"
    old = root.parent / f"{root.name}.old-{pid}"
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    try:
        tmp.mkdir()
        _build_tree(tmp, params)
        (tmp / COMPLETE_MARKER).write_text(
            json.dumps(expected, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if root.exists() and any(root.iterdir()):
            os.replace(root, old)  # move the outdated tree aside, then swap in
        try:
            os.replace(tmp, root)
        except OSError:
            # Another process finished first; accept its tree if it matches.
            if _read_marker(root) != expected:
                raise
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return root


def ensure(root: Path, **kwargs: int) -> Path:
    """Return ``root`` with the synthetic dataset present, generating it if needed.

    Thin alias of :func:`generate` (which is already idempotent), named for
    call sites that only want to make sure the data exists.
    """
    return generate(root, **kwargs)
