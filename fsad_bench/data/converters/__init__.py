"""Converters from the raw downloads of the paper's nine real datasets into the canonical layout.

``CONVERTERS[name](raw, tmp_dataset_dir, conversion, seed)`` writes the category folder(s);
:func:`prepare` runs one inside :func:`~fsad_bench.data.converters.common.build_dataset`, which builds
under ``DATA_ROOT`` and swaps the finished tree in (idempotent, nothing written outside DATA_ROOT).
Raw layouts and rules: each module's docstring and docs/reference/datasets.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fsad_bench.data.converters import (
    aitex,
    brainmri,
    elpv,
    headct,
    hyperkvasir,
    mastcam,
    mvtec,
    optical,
    sdd,
)
from fsad_bench.data.converters.common import Conversion, build_dataset
from fsad_bench.data.registry import REAL_DATASETS
from fsad_bench.errors import UserError

Converter = Callable[[Path, Path, Conversion, int], None]

CONVERTERS: dict[str, Converter] = {
    "mvtec": mvtec.convert,
    "aitex": aitex.convert,
    "sdd": sdd.convert,
    "elpv": elpv.convert,
    "optical": optical.convert,
    "mastcam": mastcam.convert,
    "brainmri": brainmri.convert,
    "headct": headct.convert,
    "hyperkvasir": hyperkvasir.convert,
}
assert set(CONVERTERS) == set(REAL_DATASETS)

#: Datasets whose published train/test split is kept (no seeded normal split).
KEEPS_PUBLISHED_SPLIT = frozenset({"mvtec", "mastcam"})
#: Datasets whose conversion writes pixel masks for the anomalies.
HAS_MASKS = frozenset({"mvtec", "aitex", "sdd", "optical"})

#: Paper Table 1, per category: (train normal, test normal, test anomaly, anomaly classes).
PAPER_TABLE1: dict[str, dict[str, tuple[int, int, int, int]]] = {
    "mvtec": {
        "carpet": (280, 28, 89, 5), "grid": (264, 21, 57, 5), "leather": (245, 32, 92, 5),
        "tile": (230, 33, 84, 5), "wood": (247, 19, 60, 5), "bottle": (209, 20, 63, 3),
        "capsule": (219, 23, 109, 5), "pill": (267, 26, 141, 7), "transistor": (213, 60, 40, 4),
        "zipper": (240, 32, 119, 7), "cable": (224, 58, 92, 8), "hazelnut": (391, 40, 70, 4),
        "metal_nut": (220, 22, 93, 4), "screw": (320, 41, 119, 5), "toothbrush": (60, 12, 30, 1),
    },
    "aitex": {"aitex": (1692, 564, 183, 12)},
    "sdd": {"sdd": (594, 286, 54, 1)},
    "elpv": {"elpv": (1131, 377, 715, 2)},
    "optical": {"optical": (10500, 3500, 2100, 1)},
    "mastcam": {"mastcam": (9302, 426, 451, 11)},
    "brainmri": {"brainmri": (73, 25, 155, 1)},
    "headct": {"headct": (75, 25, 100, 1)},
    "hyperkvasir": {"hyperkvasir": (2021, 674, 757, 4)},
}


def prepare(name: str, raw: Path | None, data_root: Path, seed: int = 0) -> tuple[Path, Conversion]:
    """Convert the raw download of ``name`` into ``data_root/name``; returns (folder, conversion)."""
    if name not in CONVERTERS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(CONVERTERS)}")
    if raw is None and name != "elpv":
        raise UserError(f"'data prepare {name}' needs --raw PATH (the extracted download); "
                        "see 'fsad-bench data list' for where to get it")
    if raw is not None:
        raw = Path(raw).expanduser()
        if not raw.is_dir():
            raise UserError(f"--raw {raw} is not a folder; point it at the extracted download")
        root = Path(data_root).expanduser().resolve()
        if raw.resolve() == root / name or root / name in raw.resolve().parents:
            raise UserError(f"--raw {raw} lies inside the output {root / name}; extract the download "
                            "elsewhere (the output folder is replaced)")
    manifest = {"seed": None if name in KEEPS_PUBLISHED_SPLIT else seed,
                "source": "elpv-dataset package" if raw is None else "raw folder"}

    def fill(tmp: Path, conv: Conversion) -> None:
        CONVERTERS[name](raw, tmp, conv, seed)

    return build_dataset(name, Path(data_root).expanduser(), fill, manifest)
