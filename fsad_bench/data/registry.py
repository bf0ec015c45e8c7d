"""Datasets: the built-in ones (embedded ``synthetic`` and the paper's nine), the user's own, plugins.

* **Built-in.** A real dataset ``NAME`` is present when ``DATA_ROOT/NAME`` holds at least one category
  folder in the canonical (MVTec AD) layout. ``synthetic`` is generated into the cache on first use.
* **User datasets** (``fsad-bench data add``) are listed in ``DATA_ROOT/fsad-datasets.json``: name,
  display name, folder (relative to the data root when it lies inside it) and optionally the
  categories to use. The file lives beside the data, so every process that sees the data root
  (worker processes, dask workers) sees the same registrations.
* **Plugins**: the entry-point group ``fsad_bench.datasets``; each entry point names a
  :class:`DatasetInfo` whose ``locate`` returns the dataset folder (docs/reference/datasets.md, "Your
  own data").

Names are unique across the three kinds (case-insensitively): a clash is an error, never a silent
choice of one of them.

Deleting a user dataset's files (``data remove NAME --delete``, ``data add NAME --replace``)
--------------------------------------------------------------------------------------------
fsad-bench deletes on its own only what it made: the copy ``data add --normal ...`` built in
``DATA_ROOT/NAME`` (its prepare manifest says so, :func:`built_copy`; the user's original folders are
never touched). A folder that ``data add --path`` only registered is the user's own data: it is
deleted only when the user names it again with ``--confirm PATH`` (the exact folder that was
registered), and never when it is, holds or lies in the data root, the home folder, the cache or the
folder of another dataset. The folder is first renamed beside itself (atomic: a failure leaves it
and its registration as they were), then unregistered, then removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from fsad_bench.errors import DataError, UserError
from fsad_bench.paths import cache_dir, data_root
from fsad_bench.registry import Registry

GROUP = "fsad_bench.datasets"
USER_REGISTRY = "fsad-datasets.json"
#: dataset names go into folder names, comma-separated CLI lists and cell keys
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset. ``kind`` is "builtin", "user" or "plugin".

    A plugin sets ``locate`` (a function returning the folder that holds the category folders); a
    user dataset sets ``path``. ``categories``, if given, restricts the category folders used.
    """

    name: str
    display: str          # name used in the paper's tables
    multi_category: bool  # categories are rows of their own plus an average row (MVTec AD)
    source: str = ""
    kind: str = "builtin"
    locate: Callable[[], str | os.PathLike] | None = field(default=None, compare=False, repr=False)
    path: str | None = None
    categories: tuple[str, ...] | None = None


MVTEC_CATEGORIES = ("carpet", "grid", "leather", "tile", "wood", "bottle", "capsule", "pill",
                    "transistor", "zipper", "cable", "hazelnut", "metal_nut", "screw", "toothbrush")

#: The built-in datasets (closed); :func:`all_datasets` adds plugins and the user's own.
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


# --- the user registry file -------------------------------------------------------------------------

class UserDatasetEntry(BaseModel):
    """One registration in ``DATA_ROOT/fsad-datasets.json``."""

    model_config = ConfigDict(extra="forbid")

    display: str
    path: str                            # relative to the data root, or absolute
    categories: list[str] | None = None  # None: every category folder with train/good
    source: str = ""
    added: str = ""


class UserRegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    datasets: dict[str, UserDatasetEntry] = {}


def registry_file(root: Path | None = None) -> Path:
    """``DATA_ROOT/fsad-datasets.json`` (``root`` as ``--data-root``: None = $FSAD_DATA or default)."""
    return data_root(root) / USER_REGISTRY


def _read_registry(root: Path | None) -> UserRegistryFile:
    path = registry_file(root)
    if not path.is_file():
        return UserRegistryFile()
    try:
        return UserRegistryFile.model_validate_json(path.read_text())
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"user dataset registry {path} is malformed ({first}); fix or delete the file "
                        "and register the datasets again with 'fsad-bench data add'") from None


def _write_registry(reg: UserRegistryFile, root: Path | None) -> Path:
    path = registry_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(reg.model_dump(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def user_datasets(root: Path | None = None) -> dict[str, DatasetInfo]:
    """The datasets registered with ``fsad-bench data add`` under this data root."""
    out = {}
    for name, e in _read_registry(root).datasets.items():
        cats = tuple(e.categories) if e.categories else None
        out[name] = DatasetInfo(name, e.display, multi_category=bool(cats and len(cats) > 1),
                                source=e.source, kind="user", path=e.path, categories=cats)
    return out


def register_user_dataset(name: str, display: str, path: Path, root: Path | None = None,
                          categories: list[str] | None = None, source: str = "",
                          replacing: str | None = None) -> Path:
    """Add ``name`` to the user registry (after :func:`check_new_name`); returns the registry file.
    A ``path`` inside the data root is stored relative to it, so the data root may move.
    ``replacing``: the user dataset this registration replaces (``data add --replace``), dropped in the
    same write."""
    check_new_name(name, root, replacing)
    base = data_root(root).expanduser().resolve()
    target = Path(path).expanduser().resolve()
    stored = target.relative_to(base).as_posix() if base in target.parents else str(target)
    reg = _read_registry(root)
    if replacing is not None:
        reg.datasets.pop(replacing, None)
    reg.datasets[name] = UserDatasetEntry(display=display, path=stored, categories=categories, source=source,
                                          added=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return _write_registry(reg, root)


def user_dataset_named(name: str, root: Path | None = None) -> str | None:
    """The user dataset whose name is ``name`` up to case (the one ``data add --replace`` replaces)."""
    return next((n for n in user_datasets(root) if n.lower() == name.lower()), None)


def remove_user_dataset(name: str, root: Path | None = None) -> DatasetInfo:
    """Drop ``name`` from the user registry (its files are left alone); returns what it was."""
    known = user_datasets(root)
    if name not in known:
        raise UserError(f"{name!r} is not a user dataset under {data_root(root)}; user datasets: "
                        f"{', '.join(known) or '(none)'}")
    reg = _read_registry(root)
    del reg.datasets[name]
    _write_registry(reg, root)
    return known[name]


def registered_folder(name: str, root: Path | None = None) -> Path:
    """The folder the user registered for user dataset ``name``: its dataset folder, or its one category
    folder when ``data add --path`` was given a category folder."""
    d = user_datasets(root)[name]
    folder = dataset_dir(name, root)
    return folder / d.categories[0] if d.categories and len(d.categories) == 1 else folder


def built_copy(name: str, root: Path | None = None) -> Path | None:
    """The folder of user dataset ``name`` when ``data add`` built it from plain folders (a copy in
    ``DATA_ROOT/NAME`` whose prepare manifest names this dataset), else None."""
    from fsad_bench.data.converters.common import MANIFEST
    from fsad_bench.data.folder import BUILT_BY

    d = user_datasets(root).get(name)
    if d is None or d.categories:
        return None
    folder = dataset_dir(name, root)
    if folder.is_symlink() or not folder.is_dir():
        return None
    if folder.resolve() != (data_root(root).expanduser() / name).resolve():
        return None
    try:
        made = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ours = isinstance(made, dict) and made.get("source") == BUILT_BY and made.get("dataset") == name
    return folder if ours else None


def _check_deletable(target: Path, name: str, root: Path | None) -> None:
    """UserError unless deleting ``target`` deletes user dataset ``name``'s files and nothing else that
    fsad-bench or another dataset knows of."""
    if target.is_symlink():
        raise UserError(f"{target} is a symbolic link: fsad-bench does not delete through links; delete it "
                        f"yourself, then 'fsad-bench data remove {name}'")
    if not target.is_dir():
        raise UserError(f"{target} is not a folder; nothing deleted")
    resolved = target.resolve()
    guarded = {"the data root": data_root(root).expanduser().resolve(),
               "your home folder": Path.home().resolve(),
               "the cache": cache_dir().expanduser().resolve()}
    for what, folder in guarded.items():
        if resolved == folder or resolved in folder.parents:
            raise UserError(f"{target} is or holds {what} ({folder}): fsad-bench does not delete it; nothing "
                            "deleted")
    others = {other: registered_folder(other, root) for other in user_datasets(root) if other != name}
    others.update({b: data_root(root).expanduser() / b for b in REAL_DATASETS})
    for other, folder in others.items():
        if not folder.exists():
            continue
        folder = folder.resolve()
        if resolved == folder or resolved in folder.parents or folder in resolved.parents:
            raise UserError(f"{target} shares files with dataset {other!r} ({folder}): fsad-bench does not "
                            "delete it; nothing deleted")


def deletion_target(name: str, root: Path | None = None, confirm: Path | None = None) -> Path:
    """The folder ``data remove NAME --delete`` deletes (see the module docstring), or a one-line
    UserError saying why it does not."""
    if name not in user_datasets(root):
        remove_user_dataset(name, root)  # the error that lists the user datasets
    copy = built_copy(name, root)
    if copy is not None:
        target = copy
    else:
        d = user_datasets(root)[name]
        target = registered_folder(name, root)
        if d.categories and len(d.categories) > 1:
            raise UserError(f"{name} uses {len(d.categories)} category folders of {target}: delete the ones "
                            "you "
                            f"mean to yourself, then 'fsad-bench data remove {name}'; nothing deleted")
        if confirm is None:
            raise UserError(f"{target} is your own folder, which 'data add --path' registered without "
                            "copying: "
                            f"--delete deletes it only with --confirm {target}; 'fsad-bench data remove "
                            f"{name}' "
                            "unregisters it and keeps the files")
        if Path(confirm).expanduser().resolve() != target.resolve():
            raise UserError(f"--confirm {confirm} is not the folder of {name} ({target}); nothing deleted")
    if target.exists() or target.is_symlink():
        _check_deletable(target, name, root)
    return target


def delete_folder(target: Path) -> None:
    """Delete ``target`` (checked by the caller): renamed beside itself first, so a folder that cannot
    be deleted is left whole."""
    trash = target.with_name(f".{target.name}.deleting-{os.getpid()}")
    try:
        os.replace(target, trash)
    except OSError as exc:
        raise UserError(f"cannot delete {target}: {exc.strerror or exc}; nothing deleted") from None
    try:
        shutil.rmtree(trash)
    except OSError as exc:
        raise UserError(f"deleting {target} stopped at {exc.filename}: {exc.strerror or exc}; what is left "
                        "is in "
                        f"{trash}: delete it by hand") from None


def delete_user_dataset(name: str, root: Path | None = None, confirm: Path | None = None) -> Path | None:
    """Unregister user dataset ``name`` and delete its folder (see :func:`deletion_target`); returns the
    folder deleted (None when it was gone already). Nothing changes when it cannot be deleted."""
    target = deletion_target(name, root, confirm)
    if not target.exists():
        remove_user_dataset(name, root)
        return None
    trash = target.with_name(f".{target.name}.deleting-{os.getpid()}")
    try:
        os.replace(target, trash)
    except OSError as exc:
        raise UserError(f"cannot delete {target}: {exc.strerror or exc}; nothing changed ({name} is still "
                        "registered)") from None
    try:
        remove_user_dataset(name, root)
    except BaseException:
        os.replace(trash, target)
        raise
    try:
        shutil.rmtree(trash)
    except OSError as exc:
        raise UserError(f"{name} is unregistered, but deleting {target} stopped at {exc.filename}: "
                        f"{exc.strerror or exc}; what is left is in {trash}: delete it by hand") from None
    return target


def check_new_name(name: str, root: Path | None = None, replacing: str | None = None) -> None:
    """UserError unless ``name`` is a valid dataset name that no built-in, plugin or user dataset
    has (compared case-insensitively: the folders may live on a case-insensitive file system);
    ``replacing``: a user dataset that may have it (``data add --replace``)."""
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"bad dataset name {name!r}: use letters, digits, '_' and '-' (at most 64, "
                        "starting with a letter or digit)")
    for kind, names in (("built-in", DATASETS), ("plugin", plugin_datasets(warn=False)),
                        ("user", user_datasets(root))):
        for other in names:
            if other.lower() == name.lower() and not (kind == "user" and other == replacing):
                raise UserError(f"dataset name {name!r} is taken by the {kind} dataset {other!r}; "
                                "choose another name" + (
                                    f", replace it ('fsad-bench data add {other} --replace ...') or "
                                    "remove it "
                                    f"first ('fsad-bench data remove {other}', with --delete to delete the "
                                    "copy data add built)" if kind == "user" else ""))


# --- plugins ----------------------------------------------------------------------------------------

def _as_info(obj: object, ep_name: str) -> DatasetInfo:
    """A plugin's object as a DatasetInfo: a DatasetInfo, or anything with ``name`` and ``locate``."""
    name = getattr(obj, "name", None)
    locate = getattr(obj, "locate", None)
    if name != ep_name or not callable(locate):
        raise UserError(f"dataset plugin {ep_name!r} must name an object with name={ep_name!r} and a "
                        "callable locate() returning the dataset folder")
    cats = getattr(obj, "categories", None)
    return DatasetInfo(ep_name, str(getattr(obj, "display", "") or ep_name),
                       bool(getattr(obj, "multi_category", False)), str(getattr(obj, "source", "")),
                       kind="plugin", locate=locate, categories=tuple(cats) if cats else None)


#: datasets that other distributions declare (entry-point group ``fsad_bench.datasets``)
DATASET_PLUGINS: Registry[DatasetInfo] = Registry("dataset", GROUP, _as_info)


def plugin_datasets(warn: bool = True) -> dict[str, DatasetInfo]:
    """Datasets of the ``fsad_bench.datasets`` entry-point group that load; a broken plugin is
    skipped with a warning naming it (as detectors are). One named like a built-in is an error."""
    for name, reg in DATASET_PLUGINS.registrations()[0].items():
        if any(name.lower() == b.lower() for b in DATASETS):
            raise UserError(f"dataset plugin {name!r} ({reg.target}) has the name of a built-in dataset; "
                            "rename its entry point (group fsad_bench.datasets) or uninstall it")
    for clash in DATASET_PLUGINS.clashes():
        raise UserError(clash.message)
    return DATASET_PLUGINS.plugins(warn)


# --- lookup -----------------------------------------------------------------------------------------

def all_datasets(root: Path | None = None, warn: bool = True) -> dict[str, DatasetInfo]:
    """Built-in, then plugin, then user datasets. A user dataset that shares its name with a plugin
    installed after it was registered is an error (which of the two a run used would be a guess)."""
    out = dict(DATASETS)
    plugins = plugin_datasets(warn)
    users = user_datasets(root)
    for name in users:
        clash = [p for p in plugins if p.lower() == name.lower()]
        if clash:
            raise UserError(f"dataset {name!r} is both a user dataset ({registry_file(root)}) and the plugin "
                            f"{clash[0]!r}; 'fsad-bench data remove {name}' or uninstall the plugin")
    out.update(plugins)
    out.update(users)
    return out


def info(name: str, root: Path | None = None) -> DatasetInfo:
    known = all_datasets(root, warn=False)  # a broken plugin is named below if it is the one asked for
    if name not in known:
        why = ""
        reg = DATASET_PLUGINS.registrations()[0].get(name)
        if reg is not None:
            try:
                DATASET_PLUGINS.load(reg)
            except UserError as exc:
                why = f"; its plugin ({reg.target}) failed to load: {str(exc).partition(': ')[2]}"
        raise UserError(f"unknown dataset {name!r}{why}; known: {', '.join(known)} (register your own "
                        "with 'fsad-bench data add')")
    return known[name]


def dataset_dir(name: str, root: Path | None = None) -> Path:
    """Folder holding the dataset's category folders (generating ``synthetic`` if needed)."""
    d = info(name, root)
    if name == "synthetic":
        from fsad_bench.data import synthetic
        return synthetic.ensure(cache_dir() / f"synthetic-v{synthetic.SYNTHETIC_VERSION}")
    if d.kind == "plugin":
        try:
            return Path(d.locate()).expanduser()
        except UserError:
            raise
        except Exception as exc:
            raise DataError(f"dataset plugin {name!r}: locate() failed: {type(exc).__name__}: {exc}"
                            ) from None
    if d.kind == "user":
        path = Path(d.path).expanduser()
        return path if path.is_absolute() else data_root(root) / path
    return data_root(root) / name


def _category_folders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if (d / "train" / "good").is_dir())


def categories(name: str, root: Path | None = None) -> list[str]:
    """Sorted category folders of a dataset (those with train/good; a user or plugin dataset may
    restrict them)."""
    d = info(name, root)
    folder = dataset_dir(name, root)
    if not folder.is_dir():
        how = (f"prepare it with 'fsad-bench data prepare {name}' or point --data-root / FSAD_DATA at the "
               "folder holding it") if d.kind == "builtin" else (
               f"restore the folder, or 'fsad-bench data remove {name}' and add it again"
               if d.kind == "user" else "check the plugin that provides it")
        raise DataError(f"dataset {name!r} not found at {folder}; {how}")
    cats = _category_folders(folder)
    if d.categories:
        absent = [c for c in d.categories if c not in cats]
        if absent:
            raise DataError(f"dataset {name!r}: category folder {folder / absent[0]} with train/good is "
                            "missing (the MVTec AD layout)")
        cats = sorted(d.categories)
    if not cats:
        raise DataError(f"{folder} holds no category folder with train/good (the MVTec AD layout)")
    return cats


def is_present(name: str, root: Path | None = None) -> bool:
    if name == "synthetic":
        return True
    d = info(name, root)
    try:
        folder = dataset_dir(name, root)
    except DataError:
        return False
    if not folder.is_dir():
        return False
    cats = _category_folders(folder)
    return all(c in cats for c in d.categories) if d.categories else bool(cats)


def data_version(name: str) -> str:
    """The generator version of ``synthetic`` for its cells' keys ("" for every other dataset).

    What a category's files hold is in every cell's key through the content fingerprint of the runner
    (``Cell.data_fingerprint``), for user and plugin datasets as for the paper's, so an edited dataset
    is recomputed; a copied or touched one with the same bytes keeps its keys.
    """
    if name == "synthetic":
        from fsad_bench.data import synthetic
        return synthetic.SYNTHETIC_VERSION
    return ""
