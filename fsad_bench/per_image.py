"""Per-image results of a cell: each test image's rank among the cell's scores, and the worst false
positives and false negatives that the HTML report's gallery shows.

Rank 1 is the most anomalous test image of a cell (the highest score); tied scores are ordered by file
name, so the ranks are one order that does not depend on the order of the test set. The worst false
positives are the normal images of lowest rank (scored highest), in rank order; the worst false
negatives the anomalies of highest rank (scored lowest), from the lowest-scored up. No threshold is
involved: whatever threshold one picks, these are the images a detector gets wrong first.

The runner stores, per cell, the gallery's ``GALLERY_K`` + ``GALLERY_K`` images as small thumbnails
(:data:`GALLERY_KEY` of the row's ``scores``), since a report reads only the store; the per-image
export (``fsad-bench report DIR --format csv --per-image``) ranks every test image from the stored
scores and the split manifest's test files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: images of each kind (false positives, false negatives) a cell's gallery keeps
GALLERY_K = 4
#: the longer side of a stored thumbnail, in pixels (smaller images are kept at their size)
THUMB_PX = 64
#: JPEG quality of the thumbnails (images in colour, maps as 8-bit grey)
THUMB_QUALITY = 85
#: where a row's ``scores`` JSON keeps the gallery
GALLERY_KEY = "gallery"


def rank_order(scores: Sequence[float], files: Sequence[str]) -> np.ndarray:
    """Indices of the test images from rank 1 (highest score) down; ties by file name."""
    scores = [float(s) for s in scores]
    files = [str(f) for f in files]
    return np.array(sorted(range(len(scores)), key=lambda i: (-scores[i], files[i])), dtype=np.int64)


def ranks(scores: Sequence[float], files: Sequence[str]) -> np.ndarray:
    """The rank (1 = most anomalous) of each test image, in the order given."""
    order = rank_order(scores, files)
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(1, len(order) + 1)
    return out


def worst(scores: Sequence[float], labels: Sequence[int], files: Sequence[str], k: int = GALLERY_K
          ) -> tuple[list[int], list[int]]:
    """(indices of the ``k`` worst false positives, of the ``k`` worst false negatives): the normals
    ranked highest, in rank order, and the anomalies ranked lowest, lowest first."""
    order = rank_order(scores, files)
    labels = np.asarray(labels)
    normals = [int(i) for i in order if labels[i] == 0]
    anomalies = [int(i) for i in order[::-1] if labels[i] == 1]
    return normals[:k], anomalies[:k]
