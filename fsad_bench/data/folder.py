"""``fsad-bench data add``: the user's own images as a dataset in the canonical (MVTec AD) layout.

Two ways in:

* :func:`check_layout` validates a folder that already is in the layout (a dataset folder of category
  folders, or one category folder) with the loader's own scanner, so registering it changes nothing
  on disk.
* :func:`build_from_folders` builds ``DATA_ROOT/NAME/NAME/`` from anomalib ``Folder``-style
  directories: normal images (split 75/25 into train/test with a seed, the same rule as ``data
  prepare``, unless separate test normals are given), abnormal images (sub-folders = defect classes;
  a flat folder = one class ``anomaly``) and optional masks matched by file stem. Images are read
  recursively below each folder (a nested file is named by its relative path); every image is fully
  decoded once, so a corrupt file stops the build with its name before anything is registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fsad_bench.data.converters.common import (
    Conversion,
    build_dataset,
    list_files,
    new_category,
    open_mask,
    rel_stem,
    subdirs,
    write_normals,
)
from fsad_bench.data.layout import NORMAL, scan_category
from fsad_bench.errors import DataError, UserError

FLAT_CLASS = "anomaly"  # the class of a flat --abnormal folder
#: the ``source`` of the prepare manifest of a dataset :func:`build_from_folders` built: what marks a
#: folder as a copy fsad-bench made (``data remove --delete`` deletes it without confirmation)
BUILT_BY = "fsad-bench data add"
MASK_SUFFIX = "_mask"   # a mask named <stem>_mask.* matches the image <stem>.* (MVTec AD's naming)


@dataclass
class FolderSources:
    """The ``data add`` folders (anomalib ``Folder`` style)."""

    normal: Path
    abnormal: Path | None = None
    masks: Path | None = None
    test_normal: Path | None = None
    seed: int = 0

    def check(self) -> None:
        for flag, folder in (("--normal", self.normal), ("--abnormal", self.abnormal),
                             ("--masks", self.masks), ("--test-normal", self.test_normal)):
            if folder is not None and not Path(folder).is_dir():
                raise UserError(f"{flag} {folder} is not a folder")
        if self.masks is not None and self.abnormal is None:
            raise UserError("--masks needs --abnormal (masks belong to abnormal images)")


@dataclass
class Layout:
    """What :func:`check_layout` found: the dataset folder and the categories to use."""

    folder: Path
    categories: list[str] | None  # None: every category folder with train/good
    warnings: list[str] = field(default_factory=list)


def check_layout(path: Path) -> Layout:
    """Validate an MVTec-layout folder: ``path/<category>/{train/good,test/...}`` or a single category
    ``path/{train/good,test/...}`` (then ``path``'s parent is the dataset folder and ``path``'s name
    its one category). Every category is scanned by the loader; DataError names what is wrong."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"--path {path} is not a folder")
    if (path / "train").is_dir() or (path / "test").is_dir():
        scan_category(path)  # raises with the missing part named
        layout = Layout(path.parent, [path.name])
        cats = [path.name]
    else:
        cats = sorted(d.name for d in path.iterdir() if d.is_dir() and (d / "train").is_dir())
        if not cats:
            raise DataError(f"{path} holds no category folder with train/good and test/good (the MVTec AD "
                            "layout: <dataset>/<category>/train/good, test/good, test/<defect>); "
                            "build one from plain folders with --normal/--abnormal instead")
        for cat in cats:
            scan_category(path / cat)
        layout = Layout(path, None)
    for cat in cats:
        index = scan_category(layout.folder / cat)
        if not index.defect_classes:
            layout.warnings.append(f"{cat}: no test anomalies (test/<defect>); protocols need them")
    return layout


def _classes(abnormal: Path) -> dict[str, tuple[Path, list[Path]]]:
    """Abnormal images by class, each with its class folder: sub-folders are classes; a flat folder
    is the one class 'anomaly'."""
    flat = list_files(abnormal)
    folders = [d for d in subdirs(abnormal) if list_files(d, recursive=True)]
    if flat and folders:
        raise DataError(f"--abnormal {abnormal} mixes images ({flat[0].name}) and class sub-folders "
                        f"({folders[0].name}); put every image in a class folder, or use a flat folder")
    if folders:
        for d in folders:
            if d.name == NORMAL:
                raise DataError(f"--abnormal class folder {d} is named {NORMAL!r}, the layout's name for "
                                "normal images; rename it")
        return {d.name: (d, list_files(d, recursive=True)) for d in folders}
    if not flat:
        raise DataError(f"--abnormal {abnormal} holds no images (.png .jpg .jpeg .bmp .tif)")
    return {FLAT_CLASS: (abnormal, flat)}


def _mask_index(masks: Path) -> dict[str, Path]:
    """Masks by relative stem ('cls/sub/x' for cls/sub/x_mask.png or cls/sub/x.png)."""
    out: dict[str, Path] = {}
    for p in list_files(masks, recursive=True):
        rel = p.relative_to(masks)
        stem = rel.stem[:-len(MASK_SUFFIX)] if rel.stem.endswith(MASK_SUFFIX) else rel.stem
        key = (rel.parent / stem).as_posix()
        if key in out:
            raise DataError(f"masks {out[key]} and {p} both match the image stem {key!r}; keep one")
        out[key] = p
    return out


def _match_masks(classes: dict[str, tuple[Path, list[Path]]], abnormal: Path, masks: Path,
                 conv: Conversion) -> dict[Path, Path]:
    """Image -> mask. A mask sits at the image's path relative to --abnormal (``cls/x.png`` for
    ``--abnormal/cls/x.jpg``), or, in a flat --masks folder, at its path relative to its class folder.
    A flat mask whose stem occurs in two classes would be given to both: that is an error."""
    index = _mask_index(masks)
    matched: dict[Path, Path] = {}
    flat_users: dict[str, Path] = {}
    for base, files in classes.values():
        for img in files:
            own = (img.relative_to(abnormal).parent / img.stem).as_posix()
            in_class = (img.relative_to(base).parent / img.stem).as_posix()
            key = own if own in index else in_class if in_class in index else None
            if key is None:
                continue
            if key == in_class and key != own:
                if key in flat_users:
                    raise DataError(f"mask {index[key]} matches {flat_users[key]} and {img} (two classes); "
                                    "put the masks in per-class sub-folders of --masks")
                flat_users[key] = img
            matched[img] = index[key]
    unused = sorted(set(index.values()) - set(matched.values()))
    if unused:
        conv.warn(f"{len(unused)} mask(s) match no abnormal image, e.g. {unused[0]}")
    n_images = sum(len(files) for _, files in classes.values())
    if len(matched) < n_images:
        conv.warn(f"{n_images - len(matched)} of {n_images} abnormal images have no mask (pixel metrics "
                  "use only those with one)")
    return matched


def build_from_folders(name: str, data_root: Path, src: FolderSources) -> tuple[Path, Conversion]:
    """Build ``data_root/name`` with one category ``name`` from plain folders; returns (dataset folder,
    conversion). Built in a temporary folder and swapped in, so a failure leaves nothing behind."""
    src.check()
    normals = list_files(src.normal, recursive=True)
    if len(normals) < 2:
        raise DataError(f"--normal {src.normal} holds {len(normals)} image(s); at least 2 are needed "
                        "(training and test normals)")
    test_normals = list_files(src.test_normal, recursive=True) if src.test_normal else []
    if src.test_normal and not test_normals:
        raise DataError(f"--test-normal {src.test_normal} holds no images")
    classes = _classes(src.abnormal) if src.abnormal else {}

    def fill(tmp: Path, conv: Conversion) -> None:
        writer = new_category(tmp, conv, name)
        items = {p.relative_to(src.normal).as_posix(): p for p in normals}
        stems = {k: rel_stem(p, src.normal) for k, p in items.items()}
        if src.test_normal:
            for key in sorted(items):
                writer.add_file("train", NORMAL, stems[key], items[key], source_id=key)
            for p in test_normals:
                writer.add_file("test", NORMAL, rel_stem(p, src.test_normal), p, source_id=str(p))
        else:
            write_normals(writer, items, src.seed, stems)
        masks = _match_masks(classes, src.abnormal, src.masks, conv) if src.masks else {}
        for cls, (base, files) in sorted(classes.items()):
            for p in files:
                mask = open_mask(masks[p]) if p in masks else None
                writer.add_file("test", cls, rel_stem(p, base), p, mask=mask, source_id=str(p))
        if not classes:
            conv.warn("no --abnormal images: the test set has no anomalies, so no protocol can score it")

    manifest = {"seed": None if src.test_normal else src.seed, "source": BUILT_BY,
                "folders": {k: str(v) for k, v in (("normal", src.normal), ("abnormal", src.abnormal),
                                                    ("masks", src.masks), ("test_normal", src.test_normal))
                            if v is not None}}
    return build_dataset(name, Path(data_root).expanduser(), fill, manifest)
