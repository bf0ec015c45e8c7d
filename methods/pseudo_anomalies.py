"""Pseudo-anomalies for DRA's pseudo-abnormality head: CutMix of a normal image, or external images.

CutMix as DRA uses it (Ding et al., CVPR 2022, Eq. 4; the authors' ``datasets/cutmix.py``): a
rectangle of the image, 2-15 % of its area, aspect ratio (width / height) log-uniform in
[0.3, 1/0.3], is cut from a random place, colour-jittered (brightness, contrast, saturation and hue,
each 0.1, in a random order) and pasted at another random place of the *same* image. Positions are
drawn as the authors draw them, ``int(U(0, side - patch side))`` per axis. Everything here works on
uint8 CHW tensors (the training images sit on the device as uint8, see
:mod:`fsad_methods.training`); the authors cut and paste PIL images.

Differences from the authors' CutMix, and why:

* Integer patch sides: the authors round the drawn sides (``round(sqrt(area * aspect))``) and keep
  the result even where rounding takes it outside the bounds (at 64 px a drawn 2 % patch can
  become 1.6 %). We round the same way and redraw a patch whose rounded area fraction or aspect
  ratio falls outside [0.02, 0.15] / [0.3, 1/0.3], so every patch keeps the stated bounds. This
  only touches draws within half a pixel of a bound (rare at 448 px).
* Colour jitter: torchvision's tensor implementations of the four adjustments, on [0, 1] floats
  with one rounding back to uint8 at the end (the authors: ``ColorJitter`` on the PIL patch, which
  rounds after each adjustment). Pixel values can differ by rounding; the factors' distributions
  are the same (brightness, contrast, saturation ~ U(0.9, 1.1), hue shift ~ U(-0.1, 0.1), order a
  uniform permutation).
* Seeded: every draw comes from the caller's ``numpy.random.Generator`` (the authors use Python's
  unseeded ``random`` in DataLoader workers).

External pseudo-anomalies (the paper's medical datasets use images of the LAG dataset instead of
CutMix; the authors' ``--outlier_root``): :func:`external_image_files` lists every image under a
folder (recursively, sorted by relative path, so the list does not depend on the file system) and
:func:`read_external_image` decodes one with PIL as RGB and resizes it (bilinear, as the dataset
cache resizes training images) to the training image size. The authors read
``<outlier_root>/<class>/train/good/*`` of every class other than the current one; a folder in that
layout works here too, but no class is excluded: point the folder at the images you mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

from fsad_bench.errors import DataError, UserError

#: area of the pasted patch as a fraction of the image area (authors' ``area_ratio``)
AREA_FRACTION = (0.02, 0.15)
#: the patch's width / height is log-uniform in [ASPECT_RATIO, 1 / ASPECT_RATIO] (authors' ``aspect_ratio``)
ASPECT_RATIO = 0.3
#: brightness, contrast, saturation and hue jitter of the pasted patch (authors' ``colorJitter``)
COLOUR_JITTER = 0.1
#: redraws before a patch that keeps the bounds is given up on (only images of a few pixels get there)
MAX_DRAWS = 100
#: what counts as an image in a pseudo-anomaly folder (case-insensitive)
EXTERNAL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class CutMixPatch:
    """One CutMix draw: where the patch is cut and pasted (pixels) and how it is jittered.

    ``order`` lists the jitter operations in the order applied: 0 brightness, 1 contrast,
    2 saturation, 3 hue.
    """

    height: int
    width: int
    source_y: int
    source_x: int
    target_y: int
    target_x: int
    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, ...]

    @property
    def area(self) -> int:
        return self.height * self.width

    @property
    def aspect(self) -> float:
        """width / height"""
        return self.width / self.height


def _position(rng: np.random.Generator, free: int) -> int:
    # the authors' int(random.uniform(0, free)): truncation of a uniform draw
    return int(rng.uniform(0, free))


def draw_cutmix_patch(height: int, width: int, rng: np.random.Generator,
                      area_fraction: tuple[float, float] = AREA_FRACTION, aspect_ratio: float = ASPECT_RATIO,
                      jitter: float = COLOUR_JITTER) -> CutMixPatch:
    """A CutMix patch for a ``height`` x ``width`` image (module doc): area fraction in
    ``area_fraction``, width / height in [aspect_ratio, 1 / aspect_ratio], inside the image."""
    low, high = sorted((aspect_ratio, 1 / aspect_ratio))
    image_area = height * width
    for _ in range(MAX_DRAWS):
        area = rng.uniform(*area_fraction) * image_area
        aspect = math.exp(rng.uniform(math.log(low), math.log(high)))
        cut_w = int(round(math.sqrt(area * aspect)))
        cut_h = int(round(math.sqrt(area / aspect)))
        fraction = cut_w * cut_h / image_area
        if (1 <= cut_h <= height and 1 <= cut_w <= width and area_fraction[0] <= fraction <= area_fraction[1]
                and low <= cut_w / cut_h <= high):
            break
    else:
        raise UserError(f"no CutMix patch of {area_fraction[0]:g}-{area_fraction[1]:g} of the area with "
                        f"aspect ratio in [{low:g}, {high:g}] fits a {height}x{width} image; "
                        "use larger images")
    source_y, source_x = _position(rng, height - cut_h), _position(rng, width - cut_w)
    factors = [rng.uniform(max(0.0, 1 - jitter), 1 + jitter) for _ in range(3)]
    hue = rng.uniform(-jitter, jitter)
    order = tuple(int(i) for i in rng.permutation(4))
    target_y, target_x = _position(rng, height - cut_h), _position(rng, width - cut_w)
    return CutMixPatch(cut_h, cut_w, source_y, source_x, target_y, target_x, *factors, hue, order)


def colour_jitter(patch_u8: torch.Tensor, draw: CutMixPatch) -> torch.Tensor:
    """``patch_u8`` (3, h, w) uint8 with the draw's brightness, contrast, saturation and hue changes
    applied in the draw's order (on [0, 1] floats, rounded back to uint8 once)."""
    x = patch_u8.float() / 255.0
    for op in draw.order:
        if op == 0:
            x = TF.adjust_brightness(x, draw.brightness)
        elif op == 1:
            x = TF.adjust_contrast(x, draw.contrast)
        elif op == 2:
            x = TF.adjust_saturation(x, draw.saturation)
        else:
            x = TF.adjust_hue(x, draw.hue)
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8)


def paste_cutmix(image_u8: torch.Tensor, draw: CutMixPatch) -> torch.Tensor:
    """A copy of ``image_u8`` (3, H, W) uint8 with the draw's jittered patch pasted in; every pixel
    outside the target rectangle is unchanged."""
    h, w = draw.height, draw.width
    patch = image_u8[:, draw.source_y:draw.source_y + h, draw.source_x:draw.source_x + w]
    out = image_u8.clone()
    out[:, draw.target_y:draw.target_y + h, draw.target_x:draw.target_x + w] = colour_jitter(patch, draw)
    return out


def cutmix(image_u8: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A CutMix pseudo-anomaly of ``image_u8`` (3, H, W) uint8 (module doc)."""
    return paste_cutmix(image_u8, draw_cutmix_patch(image_u8.shape[1], image_u8.shape[2], rng))


def external_image_files(folder: str | Path) -> list[Path]:
    """Every image under ``folder`` (recursively; suffixes :data:`EXTERNAL_SUFFIXES`, hidden files
    skipped), sorted by relative path. A missing or empty folder is a :class:`UserError`."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UserError(f"pseudo_anomaly_dir {root} {what}; point dra.pseudo_anomaly_dir at a folder of "
                        "images, or leave it empty for CutMix pseudo-anomalies")
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTERNAL_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise UserError(f"pseudo_anomaly_dir {root} holds no images ({' '.join(EXTERNAL_SUFFIXES)}); add "
                        "images to it, or leave dra.pseudo_anomaly_dir empty for CutMix pseudo-anomalies")
    return files


def read_external_image(path: Path, height: int, width: int) -> np.ndarray:
    """The image at ``path`` as RGB uint8 (height, width, 3), resized bilinearly."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((width, height), Image.BILINEAR)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read pseudo-anomaly image {path}: {exc}; "
                        "replace or delete the file") from None
    return np.array(rgb, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only arrays)


class PseudoAnomalies:
    """Makes DRA's pseudo-anomalies (uint8 (3, H, W) on the images' device), one per call.

    Without external files: CutMix of a training normal chosen uniformly at random (the authors'
    ``random.choice(normal_idx)``). With them: one external image chosen uniformly at random, decoded
    when it is drawn (a folder of thousands of 448 px images need not sit in memory), no CutMix (the
    authors' ``--outlier_root`` path). Both are rotated and normalised with the batch afterwards.
    """

    def __init__(self, images: torch.Tensor, normal_idx: np.ndarray, rng: np.random.Generator,
                 external_files: list[Path] | None = None) -> None:
        self.images = images
        self.normal_idx = np.asarray(normal_idx)
        self.rng = rng
        self.external_files = external_files or []

    @property
    def kind(self) -> str:
        return "external" if self.external_files else "cutmix"

    def make(self) -> torch.Tensor:
        if self.external_files:
            path = self.external_files[int(self.rng.integers(len(self.external_files)))]
            h, w = self.images.shape[2:]
            img = read_external_image(path, h, w)
            return torch.from_numpy(img).permute(2, 0, 1).contiguous().to(self.images.device)
        source = self.images[int(self.rng.choice(self.normal_idx))]
        return cutmix(source, self.rng)
