"""Where each real dataset comes from, checksummed downloads where a stable source exists, and safe
archive extraction.

Only two datasets have a direct, stable URL with a published sha256 (both pinned by the anomalib
project, which verifies them on every download): MVTec AD and KolektorSDD. ELPV comes from PyPI
(``pip install "fsad-bench[elpv]"``). The other six need a manual download (a registration form,
a Kaggle account, or archives without a published checksum); ``fsad-bench data download NAME``
prints where to get them and exits with status 2, so a script does not continue as if it had data.

Downloads go to ``DATA_ROOT/.downloads/<name>/`` (pooch checks the sha256 and keeps a verified file
for the next run); archives are extracted there member by member, refusing absolute paths, ``..``
components and links, then converted with the dataset's converter.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from fsad_bench.errors import DataError, UserError


@dataclass(frozen=True)
class Source:
    name: str
    page: str                   # official page
    licence: str
    how: str                    # how to get the raw data by hand, in a sentence
    url: str | None = None      # stable direct URL (None: no checksummed download)
    sha256: str | None = None
    filename: str | None = None
    hash_from: str = ""         # where the pinned sha256 is published

    @property
    def downloadable(self) -> bool:
        return bool(self.url and self.sha256)


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("mvtec", "https://www.mvtec.com/company/research/datasets/mvtec-ad", "CC BY-NC-SA 4.0",
           "fsad-bench data download mvtec (or the form on the official page; extract "
           "mvtec_anomaly_detection.tar.xz and run 'fsad-bench data prepare mvtec --raw DIR')",
           url="https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/download/"
               "420938113-1629960298/mvtec_anomaly_detection.tar.xz",
           sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
           filename="mvtec_anomaly_detection.tar.xz",
           hash_from="anomalib, src/anomalib/data/datamodules/image/mvtecad.py (DOWNLOAD_INFO)"),
    Source("aitex", "https://www.aitex.es/afid/", "free for research per the AFID page (terms not verified)",
           "download the Defect_images, Mask_images and NODefect_images archives from the AFID page, "
           "extract them side by side into one folder, then 'fsad-bench data prepare aitex --raw DIR'"),
    Source("sdd", "https://www.vicos.si/resources/kolektorsdd/", "CC BY-NC-SA 4.0",
           "fsad-bench data download sdd (or KolektorSDD.zip from the official page; extract and run "
           "'fsad-bench data prepare sdd --raw DIR')",
           url="https://go.vicos.si/kolektorsdd",
           sha256="65dc621693418585de9c4467d1340ea7958a6181816f0dc2883a1e8b61f9d4dc",
           filename="KolektorSDD.zip",
           hash_from="anomalib, src/anomalib/data/datamodules/image/kolektor.py (DOWNLOAD_INFO)"),
    Source("elpv", "https://github.com/zae-bayern/elpv-dataset", "CC BY-NC-SA 4.0 (data), Apache-2.0 (code)",
           "pip install 'fsad-bench[elpv]' (the PyPI package elpv-dataset ships the images), then "
           "'fsad-bench data prepare elpv' with no --raw (or --raw a clone of the GitHub repository)"),
    Source("optical", "https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-"
           "optical-inspection", "research use per the DAGM/HCI page (terms not verified)",
           "download the Class1 .. Class10 archives of the DAGM 2007 competition data set from the page, "
           "extract them side by side, then 'fsad-bench data prepare optical --raw DIR'"),
    Source("mastcam", "https://zenodo.org/record/1486196", "as stated on the Zenodo record (not verified)",
           "download the archive of Zenodo record 1486196 (train_typical, test_typical, test_novel), "
           "extract it, then 'fsad-bench data prepare mastcam --raw DIR'"),
    Source("brainmri", "https://www.kaggle.com/navoneel/brain-mri-images-for-brain-tumor-detection",
           "as stated on the Kaggle page (not verified)",
           "download the archive from Kaggle (account needed; or 'kaggle datasets download -d "
           "navoneel/brain-mri-images-for-brain-tumor-detection'), unzip, then "
           "'fsad-bench data prepare brainmri --raw DIR'"),
    Source("headct", "https://www.kaggle.com/felipekitamura/head-ct-hemorrhage",
           "as stated on the Kaggle page (not verified)",
           "download the archive from Kaggle (account needed; or 'kaggle datasets download -d "
           "felipekitamura/head-ct-hemorrhage'), unzip, then 'fsad-bench data prepare headct --raw DIR'"),
    Source("hyperkvasir", "https://datasets.simula.no/hyper-kvasir/", "CC BY 4.0 (as stated by the authors)",
           "download hyper-kvasir-labeled-images.zip from the page, unzip, then "
           "'fsad-bench data prepare hyperkvasir --raw DIR'"),
]}


def source(name: str) -> Source:
    if name not in SOURCES:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]


# --- checksummed download ----------------------------------------------------------------------------

def fetch(url: str, sha256: str, folder: Path, filename: str | None = None, progress: bool = False) -> Path:
    """Download ``url`` into ``folder`` with pooch, checking ``sha256``; a verified file already there
    is reused. DataError on a checksum mismatch (the bad file is not kept) or a failed download."""
    try:
        import pooch
    except ImportError:
        raise UserError("downloads need pooch: pip install 'pooch>=1.7'") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fname = filename or Path(url.split("?")[0]).name or "download"
    try:
        path = pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=fname, path=folder,
                              progressbar=progress)
    except ValueError as exc:
        if "hash" in str(exc).lower():
            raise DataError(f"checksum mismatch for {url}: expected sha256 {sha256}; the file was not kept "
                            "(the source changed or the download was corrupted)") from None
        raise DataError(f"download of {url} failed: {exc}") from None
    except Exception as exc:  # requests / OS errors: one line naming the URL
        raise DataError(f"download of {url} failed: {type(exc).__name__}: {exc}") from None
    return Path(path)


# --- safe extraction ---------------------------------------------------------------------------------

def _check_member(name: str, archive: Path) -> PurePosixPath:
    win = PureWindowsPath(name)
    posix = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or win.drive or posix.is_absolute():
        raise DataError(f"unsafe archive {archive}: member {name!r} has an absolute path; not extracted")
    if ".." in posix.parts:
        raise DataError(f"unsafe archive {archive}: member {name!r} leaves the target folder ('..'); "
                        "not extracted")
    return posix


def _safe_target(dest: Path, rel: PurePosixPath) -> Path:
    target = (dest / Path(*rel.parts)).resolve() if rel.parts else dest.resolve()
    if target != dest.resolve() and dest.resolve() not in target.parents:
        raise DataError(f"unsafe archive member {rel} would be written outside {dest}; not extracted")
    return target


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a .zip or .tar(.gz/.xz/.bz2) into ``dest`` after checking every member: absolute paths,
    ``..`` components, links and device files are refused (DataError; nothing is extracted). The
    archive is extracted into a temporary sibling folder first and renamed into place."""
    archive, dest = Path(archive), Path(dest)
    tmp = dest.parent / f".{dest.name}.extract-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:  # check everything before writing anything
                    _check_member(info.filename, archive)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise DataError(f"unsafe archive {archive}: member {info.filename!r} is a link; "
                                        "not extracted")
                for info in infos:
                    target = _safe_target(tmp, _check_member(info.filename, archive))
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(m.name, archive)
                    if not (m.isfile() or m.isdir()):
                        raise DataError(f"unsafe archive {archive}: member {m.name!r} is a link or special "
                                        "file; not extracted")
                for m in members:
                    target = _safe_target(tmp, _check_member(m.name, archive))
                    if m.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(m)
                    with src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
        else:
            raise DataError(f"{archive} is neither a zip nor a tar archive")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --- the `data download` command ---------------------------------------------------------------------

class ManualDownload(UserError):
    """The dataset has no checksummed download: the message says where to get it (exit status 2)."""


def manual_instructions(name: str) -> str:
    s = source(name)
    return (f"{name}: no checksummed download; get it by hand.\n  official page: {s.page}\n"
            f"  licence: {s.licence}\n  how: {s.how}")


def fetch_raw(name: str, data_root: Path, progress: bool = True) -> Path | None:
    """Fetch (sha256-checked) and extract ``name``'s raw download under ``DATA_ROOT/.downloads/``;
    returns the extracted folder to convert (None for ELPV: the installed package is the raw data).
    ManualDownload if there is no stable checksummed source."""
    s = source(name)
    data_root = Path(data_root).expanduser()
    if name == "elpv":
        from fsad_bench.data.converters.elpv import package_data_dir

        package_data_dir()  # UserError with the pip command if the package is missing
        return None
    if not s.downloadable:
        raise ManualDownload(f"{name} has no checksummed download: get it by hand from {s.page}, then "
                             f"'fsad-bench data prepare {name} --raw DIR' ('fsad-bench data list' says how)")
    folder = data_root / ".downloads" / name
    archive = fetch(s.url, s.sha256, folder, s.filename, progress=progress)
    raw = folder / "raw"
    stamp = folder / f".extracted-{s.sha256[:16]}"
    if not (stamp.is_file() and raw.is_dir()):
        print(f"extracting {archive} -> {raw}", file=sys.stderr)
        safe_extract(archive, raw)
        stamp.write_text(s.sha256 + "\n")
    return raw
