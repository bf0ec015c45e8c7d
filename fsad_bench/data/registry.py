"""Known datasets: the embedded ``synthetic`` one and the paper's nine real ones.

A real dataset ``NAME`` is present when ``DATA_ROOT/NAME`` holds at least one category folder in
the canonical layout. ``synthetic`` is generated into the cache folder on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fsad_bench.errors import DataError, UserError
from fsad_bench.paths import cache_dir, data_root


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    display: str          # name used in the paper's tables
    multi_category: bool  # categories are rows of their own plus an average row (MVTec AD)
    source: str = ""


MVTEC_CATEGORIES = ("carpet", "grid", "leather", "tile", "wood", "bottle", "capsule", "pill",
                    "transistor", "zipper", "cable", "hazelnut", "metal_nut", "screw", "toothbrush")

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    DatasetInfo("synthetic", "SYNTHETIC", True, "generated from scikit-image's texture photos"),
    DatasetInfo("mvtec", "MVTEC AD", True, "https://www.mvtec.com/company/research/datasets/mvtec-ad"),
    DatasetInfo("aitex", "AITEX", False, "https://www.aitex.es/afid/"),
    DatasetInfo("sdd", "SDD", False, "https://www.vicos.si/resources/kolektorsdd/"),
    DatasetInfo("elpv", "ELPV", False, "https://github.com/zae-bayern/elpv-dataset"),
    DatasetInfo("optical", "Optical", False, "https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-"
                "learning-industrial-optical-inspection"),
    DatasetInfo("mastcam", "Mastcam", False, "https://zenodo.org/record/1486196"),
    DatasetInfo("brainmri", "BrainMRI", False, "https://www.kaggle.com/navoneel/brain-mri-images-for-brain-"
                "tumor-detection"),
    DatasetInfo("headct", "HeadCT", False, "https://www.kaggle.com/felipekitamura/head-ct-hemorrhage"),
    DatasetInfo("hyperkvasir", "Hyper-Kvasir", False, "https://datasets.simula.no/hyper-kvasir/"),
]}
REAL_DATASETS = tuple(n for n in DATASETS if n != "synthetic")


def info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_dir(name: str, root: Path | None = None) -> Path:
    """Folder holding the dataset's category folders (generating ``synthetic`` if needed)."""
    info(name)
    if name == "synthetic":
        from fsad_bench.data import synthetic
        return synthetic.ensure(cache_dir() / f"synthetic-v{synthetic.SYNTHETIC_VERSION}")
    return (root or data_root()) / name


def categories(name: str, root: Path | None = None) -> list[str]:
    """Sorted category folders of a dataset (those with train/good)."""
    folder = dataset_dir(name, root)
    if not folder.is_dir():
        raise DataError(f"dataset {name!r} not found at {folder}; prepare it with 'fsad-bench data "
                        f"prepare {name}' or point --data-root / FSAD_DATA at the folder holding it")
    cats = sorted(d.name for d in folder.iterdir() if (d / "train" / "good").is_dir())
    if not cats:
        raise DataError(f"{folder} holds no category folder with train/good (the MVTec AD layout)")
    return cats


def is_present(name: str, root: Path | None = None) -> bool:
    if name == "synthetic":
        return True
    folder = dataset_dir(name, root)
    return folder.is_dir() and any((d / "train" / "good").is_dir() for d in folder.iterdir())
