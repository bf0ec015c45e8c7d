"""One rule for a cell's input size: the budget's, except that Mastcam is never upsampled.

The authors' code resizes every image to ``img_size`` (448 by default; the paper itself never
states a size). For Mastcam the paper is explicit: Fig. 6 leaves it out "because the input
resolution (64 x 64) is too small to use large K" - a 64 px input gives ResNet-18 a 2 x 2 map, where
every K of 1-20 % is one patch; upsampled to 448 px it would have 196 patches and nothing to
exclude. So the network saw Mastcam's 64 x 64 frames at 64 px, and we do that everywhere (Tables 2
and 3, Fig. 7, every method): a budget size above a dataset's native size is capped at it. Budgets
below it (the smoke budget's 32 px, Deep SVDD's 32 px network) still downscale as usual.

An explicit ``--set img_size=N`` (or ``--set method.img_size=N``) is taken as asked, uncapped.
"""

from __future__ import annotations

#: Datasets fed at their native resolution (px of the square frames), never upsampled.
NATIVE_INPUT_SIZE: dict[str, int] = {"mastcam": 64}


def cell_input_size(dataset: str, img_size: int, explicit: bool = False) -> int:
    """The input size of a cell of ``dataset`` whose budget asks for ``img_size``; ``explicit``: the
    user set the size on the command line, which is used as given."""
    if explicit:
        return img_size
    return min(img_size, NATIVE_INPUT_SIZE.get(dataset, img_size))


def img_size_is_explicit(overrides: dict[str, str], method: str) -> bool:
    """Whether ``--set`` overrides (key -> value) set the image size of ``method``."""
    return any(key.rpartition(".")[2] == "img_size" and key.rpartition(".")[0] in ("", method)
               for key in overrides)
