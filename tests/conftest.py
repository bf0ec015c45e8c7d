"""Shared fixtures: an isolated cache folder and a tiny dataset in the canonical layout; and the
suite's isolation from plugins installed where it runs (:func:`pytest_configure`)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from importlib.metadata import distributions
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))  # so 'toy_detectors:Class' dotted paths import in-process

#: the entry-point groups fsad-bench finds plugins in (fsad_bench.registry.Registry users)
PLUGIN_GROUPS = ("fsad_bench.detectors", "fsad_bench.datasets", "fsad_bench.layouts")
OWN_DISTRIBUTION = "fsad-bench"
_hidden: dict[str, object] = {}


def _normalized(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


def hide_installed_plugins(folder: Path) -> list[str]:
    """Write into ``folder`` one metadata folder per installed distribution (other than fsad-bench)
    that declares entry points in :data:`PLUGIN_GROUPS`: same folder name, name and version, and its
    entry points of every other group. With ``folder`` first on the path, importlib.metadata (which
    reads each distribution once, the first on the path: the registry relies on this too) sees these
    copies instead, so an installed plugin changes no test; a plugin a test registers itself, in a
    folder it puts on the path later (and so before this one), is seen as usual. Returns what is hidden.
    """
    hidden = []
    for dist in distributions():
        eps = list(dist.entry_points)
        name = dist.metadata["Name"] or ""
        path = getattr(dist, "_path", None)  # a PathDistribution's .dist-info / .egg-info
        if path is None or _normalized(name) == OWN_DISTRIBUTION or not any(
                ep.group in PLUGIN_GROUPS for ep in eps):
            continue
        copy = folder / Path(path).name
        if copy.exists():  # a second copy of one distribution: hidden by the first's
            continue
        copy.mkdir()
        (copy / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {dist.version}\n")
        groups: dict[str, list[str]] = {}
        for ep in eps:
            if ep.group not in PLUGIN_GROUPS:
                groups.setdefault(ep.group, []).append(f"{ep.name} = {ep.value}")
        (copy / "entry_points.txt").write_text(
            "".join(f"[{g}]\n" + "\n".join(lines) + "\n\n" for g, lines in groups.items()))
        hidden.append(f"{name} {dist.version} ({path})")
    return hidden


def pytest_configure(config: pytest.Config) -> None:
    """Isolate the suite from plugins installed where it runs: a detector, dataset or layout that an
    installed distribution registers must change no test (a plugin named 'brightness' would clash with
    the README's example, one named 'devnet' with ours). Done before collection, for the whole session
    and for the processes it starts (the hiding folder leads sys.path and PYTHONPATH); the package's
    own entry points and those a test registers stay visible."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the suite runs in 2 worker processes (pyproject's addopts): one torch thread each, so that
        # they share 2 cores instead of 4 threads fighting over them
        import torch

        torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="fsad-tests-hidden-plugins-"))
    hidden = hide_installed_plugins(folder)
    if not hidden:
        shutil.rmtree(folder)
        return
    _hidden.update(folder=folder, names=hidden, pythonpath=os.environ.get("PYTHONPATH"))
    sys.path.insert(0, str(folder))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = _hidden.pop("folder", None)
    if folder is None:
        return
    if str(folder) in sys.path:
        sys.path.remove(str(folder))
    old = _hidden.pop("pythonpath")
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old
    shutil.rmtree(folder, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    names = _hidden.get("names") or []
    return [f"installed plugins hidden from the tests: {', '.join(names)}"] if names else []


def blob_image(rng: np.random.Generator, size: int, anomalous: bool) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noise texture; anomalies carry a bright square. Returns (image, mask)."""
    base = rng.normal(110, 12, (size // 4, size // 4, 3))
    img = np.kron(base, np.ones((4, 4, 1))) + rng.normal(0, 4, (size, size, 3))
    mask = np.zeros((size, size), np.uint8)
    if anomalous:
        s = size // 4
        y, x = rng.integers(0, size - s, 2)
        img[y:y + s, x:x + s] += 100
        mask[y:y + s, x:x + s] = 255
    return np.clip(img, 0, 255).astype(np.uint8), mask


def separable_set(rng: np.random.Generator, n_normal: int, n_anomaly: int, size: int = 32
                  ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size, 3) images of :func:`blob_image` (normals first) and their labels."""
    images = [blob_image(rng, size, i >= n_normal)[0] for i in range(n_normal + n_anomaly)]
    return np.stack(images), np.array([0] * n_normal + [1] * n_anomaly)


def smooth_blob_split(seed: int = 0, n_normal: int = 40, n_anom: int = 6, n_test: int = 20, size: int = 32
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train, train labels, test, test labels): Gaussian-smoothed noise textures as normals; anomalies
    are the same with a bright 8x8 square pasted in."""
    rng = np.random.default_rng(seed)

    def normal(n: int) -> np.ndarray:
        smooth = gaussian_filter(rng.normal(size=(n, size, size, 3)), sigma=(0, 2, 2, 0))
        return np.clip(110 + 25 * smooth / smooth.std(axis=(1, 2, 3), keepdims=True), 0, 255)

    def anomalous(n: int) -> np.ndarray:
        x = normal(n)
        for img in x:
            r, q = rng.integers(2, size - 10, 2)
            img[r:r + 8, q:q + 8] = 250
        return x

    train = np.concatenate([normal(n_normal), anomalous(n_anom)]).round().astype(np.uint8)
    labels = np.r_[np.zeros(n_normal), np.ones(n_anom)].astype(np.int64)
    test = np.concatenate([normal(n_test), anomalous(n_test)]).round().astype(np.uint8)
    test_labels = np.r_[np.zeros(n_test), np.ones(n_test)]
    return train, labels, test, test_labels


def make_tiny_dataset(root: Path, category: str = "tiny", n_train: int = 30, n_test_good: int = 12,
                      classes: tuple[str, ...] = ("blob", "spot"), n_per_class: int = 10, size: int = 32,
                      seed: int = 0) -> Path:
    """A canonical-layout category with masks, written as PNGs (goes through the real loader)."""
    rng = np.random.default_rng(seed)
    cat = root / category
    for sub in ["train/good", "test/good"] + [f"test/{c}" for c in classes] + \
               [f"ground_truth/{c}" for c in classes]:
        (cat / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        Image.fromarray(blob_image(rng, size, False)[0]).save(cat / "train/good" / f"{i:03d}.png")
    for i in range(n_test_good):
        Image.fromarray(blob_image(rng, size, False)[0]).save(cat / "test/good" / f"{i:03d}.png")
    for c in classes:
        for i in range(n_per_class):
            img, mask = blob_image(rng, size, True)
            Image.fromarray(img).save(cat / "test" / c / f"{i:03d}.png")
            Image.fromarray(mask).save(cat / "ground_truth" / c / f"{i:03d}_mask.png")
    return cat


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One cache folder per test session (the synthetic dataset is generated once), no user dirs."""
    cache = tmp_path_factory.getbasetemp() / "fsad-cache"
    monkeypatch.setenv("FSAD_CACHE", str(cache))
    monkeypatch.setenv("FSAD_DATA", str(tmp_path_factory.getbasetemp() / "no-real-data"))
    # tests that rely on the synthetic fallback must not prepare ELPV where elpv-dataset is installed
    monkeypatch.setenv("FSAD_AUTO_ELPV", "0")
    return cache


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root with one real-looking single-category dataset 'brainmri' (tiny)."""
    root = tmp_path / "data"
    make_tiny_dataset(root / "brainmri", category="brainmri")
    return root


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return env
