"""One cell: load the category, split it, fit the detector, score the test set, measure.

A cell's key covers what it computes: its resolved configuration, the package version, the data
(content fingerprint of the category's files and the manifest hash of its split) and the detector's
identity (target, distribution, version, source digest); :func:`attach_provenance` fills those in, in
the driver, before the grid. The worker recomputes them and fails the cell if they differ (the data or
the code changed after the grid was built, or a cluster worker has other code), so a row is always
stored under the key of what it was really computed from.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import resource
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fsad_bench import __version__
from fsad_bench.configuration import DETECTOR_COLUMNS, config_id, config_items
from fsad_bench.data.cache import data_fingerprint, load_category
from fsad_bench.data.layout import CategoryIndex, scan_category
from fsad_bench.data.registry import dataset_dir
from fsad_bench.detectors.base import Detector, TrainSet
from fsad_bench.detectors.registry import identify_detector, load_detector
from fsad_bench.errors import SkipCell, UserError
from fsad_bench.metrics import image_metrics, pixel_metrics
from fsad_bench.per_image import GALLERY_K, GALLERY_KEY, THUMB_PX, THUMB_QUALITY, ranks, worst
from fsad_bench.precision import use_true_float32
from fsad_bench.splits import SPLIT_RULES
from fsad_bench.store import CellResult


@dataclass
class Cell:
    """(protocol, dataset, category, method, seed, setting) with its fully resolved configuration."""

    protocol: str
    split: str
    dataset: str
    category: str
    method: str
    seed: int
    setting: dict[str, Any]
    budget: str
    img_size: int
    params: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    split_kwargs: dict[str, Any] = field(default_factory=dict)  # setting's split part + spec split_args
    pixel_metrics: bool = False
    data_version: str = ""  # the embedded dataset's generator version (real data: "")
    #: 'module:Class' of a detector class given to fsad_bench.run() directly (workers import it);
    #: "" for entry points and dotted-path methods, whose ``method`` says where to find them
    detector: str = ""
    # provenance (attach_provenance): what the data and the detector are, not only what they are called
    data_fingerprint: str = ""  # content of the category's files + decoder (cache.data_fingerprint)
    split_hash: str = ""        # manifest hash of the cell's split, or why the split cannot be made
    detector_identity: dict[str, str] = field(default_factory=dict)  # registry.identify_detector
    #: the id of the cell's configuration (:func:`attach_config_ids`); derived from the rest, so not
    #: part of the key
    config_id: str = ""
    #: why the cell's data cannot hold its setting, when the grid resolution found it not applicable
    #: (the runner stores it as 'skipped' without running it); derived from the split, not in the key
    not_applicable: str = ""

    @property
    def key(self) -> str:
        """Hash of the resolved config, the code version, the data and the detector's identity:
        same key = same computation."""
        d = asdict(self)
        d.pop("data_root")  # where the data lives does not change the result
        d.pop("config_id")
        d.pop("not_applicable")
        if not d["detector"]:
            d.pop("detector")  # keys of entry-point methods stay what they were
        blob = json.dumps({**d, "code_version": __version__}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @property
    def has_provenance(self) -> bool:
        return bool(self.data_fingerprint and self.split_hash and self.detector_identity)

    @property
    def label(self) -> str:
        setting = ",".join(f"{k}={v}" for k, v in sorted(self.setting.items()))
        return f"{self.dataset}/{self.category} {self.method} seed={self.seed} {setting}"


#: the keys of a detector identity (registry.identify_detector), in the order of DETECTOR_COLUMNS
IDENTITY_KEYS = ("target", "distribution", "version", "source_digest")
NO_SPLIT = "no split: "  # split_hash prefix of a cell whose split rule refuses the data


class ProvenanceChanged(RuntimeError):
    """The data or the detector code a worker sees differs from what the cell's key was made of."""


def _split_hash(index: CategoryIndex, cell: Cell) -> tuple[str, Exception | None]:
    """(the manifest hash of the cell's split, None), or (why there is none, the split rule's refusal)."""
    try:
        return SPLIT_RULES[cell.split](index, seed=cell.seed, **cell.split_kwargs).manifest_hash, None
    except (SkipCell, UserError) as exc:  # the worker records it (not applicable / bad input)
        return NO_SPLIT + str(exc).replace(str(index.root), "<category>"), exc  # not where the data lives


def attach_provenance(cells: list[Cell], refusals: dict[str, Exception] | None = None) -> list[Cell]:
    """Fill in each cell's data fingerprint, split hash and detector identity (in place; cells that
    have them are left alone). Each category is fingerprinted, each method identified and each split
    made once. ``refusals``, if given, gets the key of every cell whose split rule refuses its data,
    with the rule's exception (:class:`SkipCell` or :class:`UserError`), for the grid resolution."""
    indexes: dict[tuple[str | None, str, str], CategoryIndex] = {}
    fingerprints: dict[tuple[str | None, str, str], str] = {}
    detectors: dict[str, dict[str, str]] = {}
    splits: dict[tuple[Any, ...], tuple[str, Exception | None]] = {}
    for cell in cells:
        if cell.has_provenance:
            continue
        where = (cell.data_root, cell.dataset, cell.category)
        if where not in indexes:
            root = Path(cell.data_root) if cell.data_root else None
            indexes[where] = scan_category(dataset_dir(cell.dataset, root) / cell.category)
            fingerprints[where] = data_fingerprint(indexes[where])
        name = cell.detector or cell.method
        if name not in detectors:
            detectors[name] = identify_detector(name)
        cell.data_fingerprint = fingerprints[where]
        split = (where, cell.split, cell.seed, json.dumps(cell.split_kwargs, sort_keys=True, default=str))
        if split not in splits:  # the same for every method of the grid
            splits[split] = _split_hash(indexes[where], cell)
        cell.split_hash, refusal = splits[split]
        cell.detector_identity = dict(detectors[name])
        if refusal is not None and refusals is not None:
            refusals[cell.key] = refusal
    return cells


def not_applicable_result(cell: Cell) -> CellResult:
    """The record of a cell the grid resolution found not applicable (its data cannot hold its
    setting): status 'skipped' with the reason, as a worker records a :class:`SkipCell`, without
    loading the data or running the detector."""
    result = failed_result(cell, device="")
    result.status, result.error = "skipped", cell.not_applicable
    result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return result


def attach_config_ids(cells: list[Cell], axis: tuple[str, ...]) -> list[Cell]:
    """Fill in each cell's configuration id (:mod:`fsad_bench.configuration`; ``axis``: the settings that
    vary within one table of the protocol's layout). Needs the detector identity (attach_provenance)."""
    for cell in cells:
        items = config_items(cell.dataset, cell.budget, __version__, cell.setting, cell.img_size, cell.params,
                             str(cell.params.get("weights", "")), axis)
        identity = tuple(cell.detector_identity.get(k, "") for k in IDENTITY_KEYS)
        cell.config_id = config_id(cell.method, items, identity)
    return cells


def _check_provenance(seen: str, expected: str, what: str) -> None:
    if expected and seen != expected:
        raise ProvenanceChanged(f"the {what} changed after the grid was built ({expected[:12]} -> "
                                f"{seen[:12]}); rerun the command to compute it under its new key")


def _peak_mem_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _thumbnail(array: np.ndarray, px: int = THUMB_PX) -> str:
    """A small copy of an image (uint8 (H, W, 3)) or of an anomaly map (float (H, W) in [0, 1], as 8-bit
    grey), its longer side at most ``px``, as JPEG, base64 (JPEG: a quarter of a PNG's bytes for
    photographs and textures, half for maps)."""
    if array.ndim == 2:
        array = (np.clip(np.nan_to_num(array), 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    image.thumbnail((px, px), Image.Resampling.BILINEAR)  # only ever shrinks
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def has_explain(detector: Any) -> bool:
    """Whether the detector's class implements ``explain`` (the base class's returns None)."""
    return getattr(type(detector), "explain", Detector.explain) is not Detector.explain


def gallery(detector: Any, images: np.ndarray, scores: list[float], labels: np.ndarray, files: list[str],
            maps: np.ndarray | None = None, k: int = GALLERY_K) -> dict[str, Any]:
    """What the HTML report's gallery shows of a cell (a report reads only the store): the ``k`` worst
    false positives and false negatives (:func:`fsad_bench.per_image.worst`) with file, label, score,
    rank and a thumbnail, and, where the detector has ``explain``, its map of each. ``images``: the
    test images as the detector saw them; ``maps``: explain maps of all of them when the cell already
    made them (a localisation protocol), else one ``explain`` call on the <= 2k images shown. A
    detector may scale its maps jointly over one call (PatchCore's are scaled to the call's maximum):
    such maps compare only within the call that made them, which the gallery's ``maps`` names. A
    failing ``explain`` leaves the maps out and says why; it never fails the cell."""
    fps, fns = worst(scores, labels, files, k)
    rank = ranks(scores, files)
    shown = fps + fns
    out: dict[str, Any] = {"k": k, "px": THUMB_PX, "image_format": "jpeg", "map_format": "jpeg",
                           "n_test": len(scores), "maps": ""}
    picked = None
    if not has_explain(detector):
        out["maps"] = "none: the method has no explain()"
    elif maps is not None:
        picked, out["maps"] = maps[shown], "explain() of the whole test set, in one call"
    elif shown:
        try:
            made = detector.explain(images[shown])
            if made is None:
                out["maps"] = "none: explain() returned none"
            else:
                picked = np.asarray(made, dtype=np.float64)
                if picked.shape[0] != len(shown) or picked.ndim != 3:
                    raise ValueError(f"maps of shape {picked.shape} for {len(shown)} images")
                out["maps"] = f"explain() of these {len(shown)} images, in one call"
        except Exception as exc:  # the gallery is a view of the cell, not part of its result
            picked, out["maps"] = None, f"none: explain() failed ({type(exc).__name__}: {str(exc)[:300]})"
    for kind, which in (("false_positives", fps), ("false_negatives", fns)):
        out[kind] = []
        for i in which:
            entry = {"file": files[i], "label": int(labels[i]), "score": float(scores[i]),
                     "rank": int(rank[i]), "image": _thumbnail(images[i])}
            if picked is not None:
                entry["map"] = _thumbnail(picked[shown.index(i)])
            out[kind].append(entry)
    return out


def _pixel_metrics(detector: Any, images: np.ndarray, masks: np.ndarray, test_idx: np.ndarray,
                   test_labels: np.ndarray, classes: list[str]
                   ) -> tuple[dict[str, Any], list[dict], np.ndarray]:
    """Localisation metrics from ``explain`` maps of every test image (see metrics.pixel_metrics),
    one example per defect class (image, mask, map as PNG) for the heat-map panels (Fig. 5), and the
    maps."""
    if not masks[test_idx[test_labels == 1]].any():
        raise SkipCell("no pixel masks for the test anomalies of this category")
    maps = detector.explain(images[test_idx])
    if maps is None:
        raise UserError(f"method {type(detector).__name__} has no explain(): it cannot run a localisation "
                        "protocol; choose methods that implement explain")
    maps = np.asarray(maps, dtype=np.float64)
    examples, seen = [], set()
    for pos, i in enumerate(test_idx):
        if test_labels[pos] == 1 and classes[i] not in seen and masks[i].any():
            seen.add(classes[i])
            examples.append({"class": classes[i], "image": _png_b64(images[i]),
                             "mask": _png_b64(masks[i] * 255),
                             "map": _png_b64((np.clip(maps[pos], 0, 1) * 255).astype(np.uint8))})
    return pixel_metrics(maps, masks[test_idx], test_labels), examples, maps


def _flags(raw: Any) -> list[dict[str, str]]:
    """A detector's ``flags`` as ``[{"flag": name, "reason": text}]`` (a plugin may give plain names)."""
    return [{"flag": str(f.get("flag", "flag")), "reason": str(f.get("reason", ""))} if isinstance(f, dict)
            else {"flag": str(f), "reason": ""} for f in raw or []]


def failed_result(cell: Cell, device: str, error: str = "") -> CellResult:
    """The record of ``cell`` as failed; ``run_cell`` starts from it and fills it in when the cell
    succeeds, an executor stores it as is when the cell's worker vanished."""
    same = {f.name: getattr(cell, f.name) for f in fields(CellResult) if hasattr(cell, f.name)}
    identity = dict(zip(DETECTOR_COLUMNS, (cell.detector_identity.get(k, "") for k in IDENTITY_KEYS)))
    return CellResult(**same, **identity, status="failed", error=error, device=device,
                      weights=str(cell.params.get("weights", "")), code_version=__version__)


def run_cell(cell: Cell, device: str = "cpu", threads: int | None = None) -> CellResult:
    """Run one cell; any exception is recorded as a failed result (the grid goes on).

    ``threads`` caps torch's CPU threads in this process: parallel workers that each use every
    core slow each other down many times over.
    """
    if threads:
        torch.set_num_threads(threads)
    precision = use_true_float32()  # TF32 off on every budget and device; recorded in the row's info
    start = time.perf_counter()
    result = failed_result(cell, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    try:
        root = Path(cell.data_root) if cell.data_root else None
        index = scan_category(dataset_dir(cell.dataset, root) / cell.category)
        data = load_category(index, cell.img_size, cell.dataset, cell.category)
        result.data_fingerprint = data.fingerprint
        _check_provenance(data.fingerprint, cell.data_fingerprint, f"data of {cell.dataset}/{cell.category}")
        identity = identify_detector(cell.detector or cell.method)
        for column, part in zip(DETECTOR_COLUMNS, IDENTITY_KEYS):
            setattr(result, column, identity[part])
        for part, seen in identity.items():
            _check_provenance(seen, cell.detector_identity.get(part, ""),
                              f"{part.replace('_', ' ')} of detector {cell.method}")
        split = SPLIT_RULES[cell.split](index, seed=cell.seed, **cell.split_kwargs)
        if not cell.split_hash.startswith(NO_SPLIT):
            _check_provenance(split.manifest_hash, cell.split_hash, "split")
        cls = load_detector(cell.detector or cell.method)
        detector = cls(cls.config_from_params(cell.params))
        train = TrainSet(data.images[split.train_idx], split.train_labels, seed=cell.seed, device=device)
        detector.fit(train)
        scores = np.asarray(detector.score(data.images[split.test_idx]), dtype=np.float64)
        if scores.shape != (len(split.test_idx),):
            raise RuntimeError(f"detector returned scores of shape {scores.shape} for "
                               f"{len(split.test_idx)} test images (expected shape ({len(split.test_idx)},))")
        if not np.all(np.isfinite(scores)):
            raise RuntimeError(f"detector returned {int((~np.isfinite(scores)).sum())} non-finite scores "
                               f"(NaN or inf) of {len(scores)}")
        metrics = image_metrics(split.test_labels, scores)
        maps = None
        if cell.pixel_metrics:
            pixel, examples, maps = _pixel_metrics(detector, data.images, data.masks, split.test_idx,
                                                   split.test_labels, index.cls)
            metrics.update(pixel)
        result.auc_roc, result.auc_pr = metrics["auc_roc"], metrics["auc_pr"]
        result.metrics = metrics
        result.manifest, result.manifest_hash = split.manifest, split.manifest_hash
        result.scores = {"scores": scores.round(6).tolist(), "labels": split.test_labels.tolist()}
        if cell.pixel_metrics:
            result.scores["examples"] = examples
        # last: its explain() call comes after everything the cell's numbers are made of
        test_files = [index.files[i] for i in split.test_idx]
        result.scores[GALLERY_KEY] = gallery(detector, data.images[split.test_idx], result.scores["scores"],
                                             split.test_labels, test_files, maps)
        result.info = {**detector.info, **precision}
        result.flags = _flags(getattr(detector, "flags", []))
        result.status = "ok"
    except SkipCell as exc:
        result.status, result.error = "skipped", str(exc)
    except UserError as exc:
        result.error, result.user_error = str(exc), True
    except Exception as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        result.error = f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"
    result.wall_s = time.perf_counter() - start
    result.peak_mem_mb = _peak_mem_mb(device)
    result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return result
