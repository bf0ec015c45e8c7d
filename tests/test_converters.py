"""Raw-download converters: for each of the nine datasets a tiny fake raw tree in its raw layout (with
the mess real downloads have) goes through ``fsad-bench data prepare``; counts, classes, labels and
masks are exactly right, a second prepare changes nothing, and ``verify`` catches a corrupt image."""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsad_bench.data.cli_data import add_data_parser, cmd_data
from fsad_bench.data.converters import CONVERTERS, prepare
from fsad_bench.data.converters.common import split_normals
from fsad_bench.data.layout import scan_category
from fsad_bench.errors import DataError, UserError

RNG = np.random.default_rng(0)


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: a second prepare must change nothing."""
    h = hashlib.sha256()
    folder = Path(folder)
    for p in sorted(folder.rglob("*"), key=lambda q: q.relative_to(folder).as_posix()):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def data_cli(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="fsad-bench")
    add_data_parser(p.add_subparsers(dest="command", required=True))
    return cmd_data(p.parse_args(["data", *argv]))


def img(path: Path, w: int = 16, h: int = 16, mode: str = "RGB", fmt: str | None = None,
        pixels: np.ndarray | None = None) -> np.ndarray:
    """Write a random image (mode RGB / L / RGBA / LA / I;16) and return its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}.get(mode, 1)
    if pixels is None:
        pixels = RNG.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if mode == "I;16":
        Image.fromarray(pixels[..., 0].astype(np.uint16) * 200).save(path, format=fmt or "PNG")
        return pixels
    arr = pixels[..., 0] if channels == 1 else pixels
    Image.fromarray(arr, mode=mode).save(path, format=fmt or path.suffix.lstrip(".").upper().replace(
        "JPG", "JPEG").replace("TIF", "TIFF"))
    return pixels


def mask(path: Path, w: int, h: int, box: tuple[int, int, int, int] | None, value: int = 255) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    if box:
        x0, y0, x1, y1 = box
        m[y0:y1, x0:x1] = value
    Image.fromarray(m).save(path, format="BMP" if path.suffix.lower() == ".bmp" else "PNG")
    return m > 0


def junk(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Thumbs.db").write_bytes(b"\x00junk")
    (folder / ".DS_Store").write_bytes(b"\x00junk")


# --- fake raw trees: each returns (raw, expected counts per category, classes expected to have masks) ---

def raw_mvtec(raw: Path):
    base = raw / "mvtec_anomaly_detection"  # extra nesting level
    (base / "license.txt").parent.mkdir(parents=True)
    (base / "license.txt").write_text("CC BY-NC-SA 4.0")
    b = base / "bottle"
    img(b / "train/good/000.png")
    img(b / "train/good/001.png", mode="L")
    img(b / "train/good/002.png", mode="RGBA")
    junk(b / "train/good")
    img(b / "test/good/000.png")
    img(b / "test/good/001.png")
    for i in range(2):
        img(b / f"test/broken_large/{i:03d}.png")
        mask(b / f"ground_truth/broken_large/{i:03d}_mask.png", 16, 16, (2, 2, 6, 6))
    img(b / "test/contamination/000.png")
    mask(b / "ground_truth/contamination/000_mask.png", 16, 16, (0, 0, 3, 3))
    c = base / "carpet"
    img(c / "train/good/000.png")
    img(c / "train/good/001.png")
    img(c / "test/good/000.png")
    img(c / "test/hole/000.png")
    mask(c / "ground_truth/hole/000_mask.png", 16, 16, (4, 4, 8, 8))
    (base / "not_a_category" / "stuff").mkdir(parents=True)
    return {
        "bottle": {("train", "good"): 3, ("test", "good"): 2, ("test", "broken_large"): 2,
                   ("test", "contamination"): 1},
        "carpet": {("train", "good"): 2, ("test", "good"): 1, ("test", "hole"): 1},
    }, {"broken_large", "contamination", "hole"}


def raw_aitex(raw: Path):
    img(raw / "NODefect_images/2306881-210020u/0001_000_01.png", 768, 256, "L")   # 3 tiles
    img(raw / "NODefect_images/2311694-2040n7u/0002_000_02.PNG", 512, 256, "L")  # 2 tiles
    junk(raw / "NODefect_images/2306881-210020u")
    d, m = raw / "Defect_images/Defect_images", raw / "Mask_images/Mask_images"  # the archives' nesting
    img(d / "0003_002_01.png", 768, 256, "L")
    mask(m / "0003_002_01_mask.png", 768, 256, (300, 10, 320, 40))                # tile 1 only
    img(d / "0004_019_02.png", 768, 256, "L")
    mask(m / "0004_019_02_mask1.png", 768, 256, (0, 0, 10, 10))                   # tile 0
    mask(m / "0004_019_02_mask2.png", 768, 256, (600, 100, 610, 110))             # tile 2
    img(d / "0005_099_01.png", 768, 256, "L")                                     # unknown code
    mask(m / "0005_099_01_mask.png", 768, 256, (0, 0, 10, 10))
    img(d / "0006_030_01.png", 768, 256, "L")                                     # no mask at all
    junk(d)
    return {"aitex": {("train", "good"): 3, ("test", "good"): 2, ("test", "Broken_end"): 1,
                      ("test", "Fuzzyball"): 2}}, {"Broken_end", "Fuzzyball"}


def raw_sdd(raw: Path):
    k1, k2 = raw / "KolektorSDD/kos01", raw / "KolektorSDD/kos02"
    img(k1 / "Part0.jpg", 24, 60, "L")
    mask(k1 / "Part0_label.bmp", 24, 60, (2, 45, 10, 50))          # part 2
    img(k1 / "Part1.jpg", 24, 60, "L")
    mask(k1 / "Part1_label.bmp", 24, 60, None)                     # all normal
    img(k2 / "Part0.JPG", 24, 60, "L")
    mask(k2 / "Part0_label.bmp", 24, 60, (2, 15, 10, 25), value=1)  # parts 0 and 1; label values 0/1
    img(k2 / "Part1.jpg", 24, 60, "L")                             # no label: skipped
    junk(k2)
    return {"sdd": {("train", "good"): 4, ("test", "good"): 2, ("test", "defect"): 3}}, {"defect"}


def raw_elpv(raw: Path):
    data = raw / "elpv-dataset/src/elpv_dataset/data"
    rows = [("cell0001", "1.0", "mono"), ("cell0002", "0.0", "mono"), ("cell0003", "0.0", "poly"),
            ("cell0004", "0.3333333333333333", "poly"), ("cell0005", "1.0", "poly"),
            ("cell0006", "0.0", "poly"), ("cell0007", "0.6666666666666666", "mono"),
            ("cell0008", "0.0", "mono"), ("cell0009", "1.0", "mono"), ("cell0010", "0.0", "poly")]
    for name, _, _ in rows:
        img(data / "images" / f"{name}.png", 12, 12, "L")
    (data / "labels.csv").write_text("".join(f"images/{n}.png  {p:<20s} {t}\n" for n, p, t in rows))
    junk(data / "images")
    return {"elpv": {("train", "good"): 3, ("test", "good"): 2, ("test", "mono"): 2,
                     ("test", "poly"): 1}}, set()


def _dagm_class(folder: Path, n_images: int, defective: dict[int, tuple[int, int, int, int]]) -> None:
    train = folder / "Train"
    rows = ["1"]
    for i in range(1, n_images + 1):
        name = f"{i:04d}.PNG"
        img(train / name, 16, 16, "L")
        if i in defective:
            mask(train / "Label" / f"{i:04d}_label.PNG", 16, 16, defective[i])
            rows.append(f"{i}\t1\t{name}\t0\t{i:04d}_label.PNG")
        else:
            rows.append(f"{i}\t0\t{name}\t0\t")
    (train / "Label" / "Labels.txt").write_text("\n".join(rows) + "\n")
    img(folder / "Test" / "0001.PNG", 16, 16, "L")  # the Test half is not read


def raw_optical(raw: Path):
    _dagm_class(raw / "Class1" / "Class1", 4, {3: (2, 2, 8, 8)})  # the archive's inner folder
    _dagm_class(raw / "Class2", 3, {2: (0, 0, 4, 4)})
    img(raw / "Class1_def" / "1.png", 16, 16, "L")                  # older release: ignored
    junk(raw / "Class2" / "Train")
    return {"optical": {("train", "good"): 3, ("test", "good"): 2, ("test", "Class1"): 1,
                        ("test", "Class2"): 1}}, {"Class1", "Class2"}


def _npy(path: Path, scale01: bool = False) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = RNG.integers(0, 256, (8, 8, 6)).astype(np.float64)
    np.save(path, a / 255.0 if scale01 else a)
    return a


def raw_mastcam(raw: Path):
    base = raw / "mastcam-dataset"
    for i in range(4):
        _npy(base / f"train_typical/t{i}.npy")
    _npy(base / "validation_typical/v0.npy")  # not used
    for i in range(2):
        _npy(base / f"test_typical/s{i}.npy", scale01=True)
    _npy(base / "test_novel/bedrock/b0.npy")
    _npy(base / "test_novel/bedrock/b1.npy")
    _npy(base / "test_novel/drill-hole/d0.npy")
    img(base / "test_novel/drill-hole/d1.PNG", 8, 8)
    for name in ("b0", "b1", "d0"):  # all/ duplicates the class folders
        _npy(base / f"test_novel/all/{name}.npy")
    junk(base / "train_typical")
    return {"mastcam": {("train", "good"): 4, ("test", "good"): 2, ("test", "bedrock"): 2,
                        ("test", "drill-hole"): 2}}, set()


def raw_brainmri(raw: Path):
    for top in (raw, raw / "brain_tumor_dataset"):  # Kaggle ships the same images twice
        img(top / "no/1 no.jpeg")
        img(top / "no/No12.jpg")
        img(top / "no/no 3.JPG", mode="L")
        img(top / "no/N5.png", mode="LA")
        img(top / "yes/Y1.jpg")
        img(top / "yes/Y2.JPG")
        img(top / "yes/Y3.png", mode="RGBA")
        img(top / "yes/Y4.tif")
        img(top / "no/N6.bmp")
    junk(raw / "no")
    return {"brainmri": {("train", "good"): 3, ("test", "good"): 2, ("test", "tumor"): 4}}, set()


def raw_headct(raw: Path):
    (raw / "labels.csv").parent.mkdir(parents=True, exist_ok=True)
    labels = {0: 1, 1: 1, 2: 0, 3: 0, 4: 0, 5: 0}
    (raw / "labels.csv").write_text("id, hemorrhage\n" + "".join(f"{i}, {v}\n" for i, v in labels.items()))
    imgs = raw / "head_ct/head_ct"
    img(imgs / "000.png", 20, 18, "L")
    img(imgs / "001.png", 16, 16, "LA")
    img(imgs / "002.png", 12, 14, "L")
    img(imgs / "003.PNG", 16, 16, "I;16")
    img(imgs / "004.png", 16, 16, "RGBA")
    img(imgs / "005.jpg", 16, 16)
    junk(imgs)
    return {"headct": {("train", "good"): 3, ("test", "good"): 1, ("test", "hemorrhage"): 2}}, set()


def raw_hyperkvasir(raw: Path):
    up = raw / "hyper-kvasir/labeled-images/upper-gi-tract"
    for cls, n in {"pylorus": 2, "retroflex-stomach": 1, "z-line": 2}.items():
        for i in range(n):
            img(up / "anatomical-landmarks" / cls / f"{cls}-{i}.jpg")
    findings = {"barretts": 1, "barretts-short-segment": 1, "esophagitis-a": 2, "esophagitis-b-d": 1}
    for cls, n in findings.items():
        for i in range(n):
            img(up / "pathological-findings" / cls / f"{cls}-{i}.jpg")
    img(up / "quality-of-mucosal-views/bbps-0-1/q.jpg")                       # not read
    img(raw / "hyper-kvasir/labeled-images/lower-gi-tract/anatomical-landmarks/cecum/c.jpg")  # not read
    junk(up / "anatomical-landmarks/pylorus")
    return {"hyperkvasir": {("train", "good"): 3, ("test", "good"): 2, ("test", "barretts"): 1,
                            ("test", "barretts-short-segment"): 1, ("test", "esophagitis-a"): 2,
                            ("test", "esophagitis-b-d"): 1}}, set()


BUILDERS = {"mvtec": raw_mvtec, "aitex": raw_aitex, "sdd": raw_sdd, "elpv": raw_elpv, "optical": raw_optical,
            "mastcam": raw_mastcam, "brainmri": raw_brainmri, "headct": raw_headct,
            "hyperkvasir": raw_hyperkvasir}


def counts(cat_dir: Path) -> dict[tuple[str, str], int]:
    idx = scan_category(cat_dir)
    out: dict[tuple[str, str], int] = {}
    for s, c in zip(idx.split, idx.cls):
        out[(s, c)] = out.get((s, c), 0) + 1
    return out


def test_every_dataset_has_a_builder():
    assert set(BUILDERS) == set(CONVERTERS)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_prepare_counts_masks_idempotent_and_verify(name, tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    expected, mask_classes = BUILDERS[name](raw)
    raw_digest = tree_digest(raw)

    assert data_cli("prepare", name, "--raw", str(raw), "--root", str(root), "--seed", "0") == 0
    folder = root / name
    assert sorted(d.name for d in folder.iterdir() if d.is_dir()) == sorted(expected)
    for cat, want in expected.items():
        assert counts(folder / cat) == want, cat
        idx = scan_category(folder / cat)
        for f, c, m in zip(idx.files, idx.cls, idx.masks):
            assert f.endswith(".png")
            with Image.open(folder / cat / f) as im:
                assert im.mode == "RGB"
            assert (m is not None) == (c in mask_classes), (f, c, m)
            if m is not None:
                with Image.open(folder / cat / m) as mk, Image.open(folder / cat / f) as im:
                    assert mk.mode == "L" and mk.size == im.size
                    assert set(np.unique(np.asarray(mk))) <= {0, 255} and np.asarray(mk).any()
    # nothing outside DATA_ROOT, no temporary folders left, raw data untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "root"]
    assert sorted(p.name for p in root.iterdir()) == [name]
    assert tree_digest(raw) == raw_digest

    digest = tree_digest(folder)
    assert data_cli("prepare", name, "--raw", str(raw), "--root", str(root), "--seed", "0") == 0
    assert tree_digest(folder) == digest
    assert sorted(p.name for p in root.iterdir()) == [name]

    capsys.readouterr()
    assert data_cli("verify", name, "--root", str(root)) == 0
    assert "differs from Table 1" in capsys.readouterr().out

    cat = sorted(expected)[0]
    victim = sorted((folder / cat / "test").rglob("*.png"))[-1]
    victim.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="cannot read image") as err:
        data_cli("verify", name, "--root", str(root))
    assert str(victim) in str(err.value)


def test_mvtec_copies_rgb_png_bytes_and_keeps_masks(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    raw_mvtec(raw)
    prepare("mvtec", raw, root)
    src = raw / "mvtec_anomaly_detection/bottle"
    copied = (root / "mvtec/bottle/train/good/000.png").read_bytes()
    assert copied == (src / "train/good/000.png").read_bytes()
    gray = np.asarray(Image.open(root / "mvtec/bottle/train/good/001.png"))
    assert gray.shape == (16, 16, 3) and (gray[..., 0] == gray[..., 1]).all()
    m = np.asarray(Image.open(root / "mvtec/bottle/ground_truth/broken_large/001_mask.png")) > 0
    assert m.sum() == 16 and m[2:6, 2:6].all()


def test_aitex_tiles_and_masks(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    raw_aitex(raw)
    _, conv = prepare("aitex", raw, root)
    cat = root / "aitex/aitex"
    assert sorted(p.name for p in (cat / "test/Broken_end").iterdir()) == ["0003_002_01_01.png"]
    assert sorted(p.name for p in (cat / "test/Fuzzyball").iterdir()) == ["0004_019_02_00.png",
                                                                         "0004_019_02_02.png"]
    m = np.asarray(Image.open(cat / "ground_truth/Broken_end/0003_002_01_01_mask.png")) > 0
    assert m.shape == (256, 256) and m.sum() == 20 * 30 and m[10:40, 44:64].all()
    src = np.asarray(Image.open(raw / "Defect_images/Defect_images/0003_002_01.png"))
    out = np.asarray(Image.open(cat / "test/Broken_end/0003_002_01_01.png"))
    assert (out[..., 0] == src[:, 256:512]).all()
    names = sorted(p.name for p in (cat / "train/good").iterdir()) + \
        sorted(p.name for p in (cat / "test/good").iterdir())
    assert len(set(names)) == 5 and all(n.startswith(("2306881-210020u_", "2311694-2040n7u_")) for n in names)
    assert any("unknown defect code '099'" in w for w in conv.warnings)
    assert any("0006_030_01" in w and "no mask" in w for w in conv.warnings)


def test_sdd_parts_labelled_by_bitmap(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    raw_sdd(raw)
    prepare("sdd", raw, root)
    cat = root / "sdd/sdd"
    assert sorted(p.stem for p in (cat / "test/defect").iterdir()) == ["kos01_Part0_2", "kos02_Part0_0",
                                                                      "kos02_Part0_1"]
    m = np.asarray(Image.open(cat / "ground_truth/defect/kos01_Part0_2_mask.png")) > 0
    assert m.shape == (20, 24) and m[5:10, 2:10].all() and m.sum() == 40
    normals = sorted(p.stem for p in (cat / "train/good").iterdir()) + \
        sorted(p.stem for p in (cat / "test/good").iterdir())
    assert sorted(normals) == ["kos01_Part0_0", "kos01_Part0_1", "kos01_Part1_0", "kos01_Part1_1",
                               "kos01_Part1_2", "kos02_Part0_2"]


def test_mastcam_first_three_channels(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    raw_mastcam(raw)
    prepare("mastcam", raw, root)
    a = np.load(raw / "mastcam-dataset/train_typical/t0.npy")
    out = np.asarray(Image.open(root / "mastcam/mastcam/train/good/t0.png"))
    assert (out == a[..., :3].astype(np.uint8)).all()
    b = np.load(raw / "mastcam-dataset/test_typical/s0.npy")  # [0, 1] floats are scaled by 255
    out = np.asarray(Image.open(root / "mastcam/mastcam/test/good/s0.png")).astype(int)
    assert np.abs(out - np.rint(b[..., :3] * 255)).max() == 0
    assert not (root / "mastcam/mastcam/test/all").exists()


def test_headct_and_elpv_labels(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    raw_headct(raw / "h")
    prepare("headct", raw / "h", root)
    assert sorted(p.stem for p in (root / "headct/headct/test/hemorrhage").iterdir()) == ["000", "001"]
    raw_elpv(raw / "e")
    prepare("elpv", raw / "e", root)
    assert sorted(p.stem for p in (root / "elpv/elpv/test/mono").iterdir()) == ["cell0001", "cell0009"]
    assert sorted(p.stem for p in (root / "elpv/elpv/test/poly").iterdir()) == ["cell0005"]
    good = {p.stem for p in (root / "elpv/elpv").glob("*/good/*.png")}
    assert good == {"cell0002", "cell0003", "cell0006", "cell0008", "cell0010"}


def test_seed_changes_the_split_not_the_counts(tmp_path):
    raw = tmp_path / "raw"
    raw_hyperkvasir(raw)
    prepare("hyperkvasir", raw, tmp_path / "a", seed=0)
    prepare("hyperkvasir", raw, tmp_path / "b", seed=1)
    ca, cb = (counts(tmp_path / r / "hyperkvasir/hyperkvasir") for r in "ab")
    assert ca == cb
    splits = {s: split_normals([f"k{i}" for i in range(40)], s) for s in (0, 1)}
    assert splits[0] != splits[1] and sum(v == "test" for v in splits[0].values()) == 10


def test_split_matches_table1_rounding():
    for n, n_test in [(98, 25), (1508, 377), (2695, 674), (2256, 564), (14000, 3500), (100, 25)]:
        split = split_normals([str(i) for i in range(n)], 0)
        assert sum(v == "test" for v in split.values()) == n_test


def test_missing_folder_and_corrupt_raw_image_are_one_line_errors(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    raw_aitex(raw)
    prepare("aitex", raw, root)
    digest = tree_digest(root / "aitex")
    bad = raw / "NODefect_images/2311694-2040n7u/0002_000_02.PNG"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as err:
        prepare("aitex", raw, root)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert tree_digest(root / "aitex") == digest  # the previous tree is untouched
    assert sorted(p.name for p in root.iterdir()) == ["aitex"]  # no temporary folder left
    shutil.rmtree(raw / "Mask_images")
    with pytest.raises(DataError, match="Mask_images is missing"):
        prepare("aitex", raw, root)
    with pytest.raises(DataError, match="Labels.txt"):
        (tmp_path / "o/Class1/Train").mkdir(parents=True)
        img(tmp_path / "o/Class1/Train/0001.PNG", mode="L")
        prepare("optical", tmp_path / "o", root)


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        data_cli("prepare", "nope", "--raw", str(tmp_path), "--root", str(tmp_path / "r"))
    with pytest.raises(UserError, match="needs --raw"):
        data_cli("prepare", "aitex", "--root", str(tmp_path / "r"))
    with pytest.raises(UserError, match="is not a folder"):
        data_cli("prepare", "aitex", "--raw", str(tmp_path / "nowhere"), "--root", str(tmp_path / "r"))
    with pytest.raises(DataError, match="not found"):
        data_cli("verify", "aitex", "--root", str(tmp_path / "r"))


def test_list_shows_present_and_missing(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    raw_brainmri(raw)
    prepare("brainmri", raw, root)
    capsys.readouterr()
    assert data_cli("list", "--data-root", str(root)) == 0
    out = capsys.readouterr().out
    assert "brainmri     present" in out and "train 3 good | test 2 good + 4 anomalies (tumor 4)" in out
    assert "aitex        missing" in out and "https://www.aitex.es/afid/" in out
    assert "kaggle" in out.lower()


def test_stale_temporary_folders_of_killed_runs_are_removed(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    raw_headct(raw)
    (root / ".headct.tmp-999999999" / "x").mkdir(parents=True)  # no such process
    prepare("headct", raw, root)
    assert sorted(p.name for p in root.iterdir()) == ["headct"]


def test_elpv_package_layout_is_understood():
    pytest.importorskip("elpv_dataset")
    from fsad_bench.data.converters.elpv import package_data_dir, read_labels

    rows = read_labels(package_data_dir() / "labels.csv")
    assert len(rows) == 2624
    assert sum(p == 0 for _, p, _ in rows) == 1131 + 377
    assert sum(p == 1 for _, p, _ in rows) == 715 and {t for _, _, t in rows} == {"mono", "poly"}
    assert (package_data_dir() / rows[0][0]).is_file()
