"""The user's own datasets: ``fsad-bench data add`` (plain folders or an MVTec-layout folder), the
user registry under the data root, dataset plugins (entry-point group ``fsad_bench.datasets``), and
the protocols running on them."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_dataset
from own_data_toys import make_raw_folders
from PIL import Image

from fsad_bench.cli import main
from fsad_bench.data.converters.common import split_normals
from fsad_bench.data.layout import scan_category
from fsad_bench.data.registry import USER_REGISTRY, categories, dataset_dir, info, plugin_datasets
from fsad_bench.store import ResultStore

BRIGHT = "toy_detectors:Brightness"


def add(root: Path, *argv: str) -> int:
    return main(["data", "add", *argv, "--data-root", str(root)])


def run_q(root: Path, out: Path, protocol: str = "q1", dataset: str = "mine", method: str = BRIGHT,
          seeds: str = "0,1") -> int:
    return main(["run", "--protocol", protocol, "--methods", method, "--datasets", dataset, "--data-root",
                 str(root), "--budget", "smoke", "--seeds", seeds, "--out", str(out), "--no-progress"])


def rows(out: Path):
    with ResultStore(out) as store:
        return store.dataframe().sort_values(["category", "seed", "key"]).reset_index(drop=True)


def test_add_plain_folders_builds_the_layout_with_seeded_split_and_masks(tmp_path, capsys):
    raw = make_raw_folders(tmp_path / "raw")
    root = tmp_path / "data"
    assert add(root, "mine", "--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"]),
               "--masks", str(raw["masks"])) == 0
    idx = scan_category(root / "mine" / "mine")
    # 75/25 of the 40 sorted normals with seed 0, exactly as 'data prepare' splits them
    expected = split_normals([f"n{i:03d}.jpg" for i in range(40)], seed=0)
    test_good = sorted(Path(f).stem for f, s, c in zip(idx.files, idx.split, idx.cls)
                       if s == "test" and c == "good")
    assert test_good == sorted(Path(k).stem for k, v in expected.items() if v == "test")
    assert len(idx.where("train")) == 30 and len(test_good) == 10
    assert idx.defect_classes == ["blob", "spot"] and len(idx.where("test", anomalous=True)) == 24
    assert all(m is not None for m, c in zip(idx.masks, idx.cls) if c != "good")
    # masks are the user's masks of the same images (by stem), as binary 0/255 PNGs
    src = np.asarray(Image.open(raw["masks"] / "spot" / "spot03_mask.png")) > 0
    got = np.asarray(Image.open(root / "mine" / "mine" / "ground_truth" / "spot" / "spot03_mask.png"))
    assert set(np.unique(got)) <= {0, 255} and np.array_equal(got > 0, src)
    reg = json.loads((root / USER_REGISTRY).read_text())
    assert reg["datasets"]["mine"]["path"] == "mine"  # inside the data root: stored relative to it
    assert info("mine", root).kind == "user" and categories("mine", root) == ["mine"]
    assert main(["list", "--data-root", str(root)]) == 0
    assert "mine" in capsys.readouterr().out
    assert main(["data", "verify", "mine", "--data-root", str(root)]) == 0
    (root / "mine" / "mine" / "test" / "blob" / "blob01.png").write_bytes(b"broken")
    assert main(["data", "verify", "mine", "--data-root", str(root)]) == 2
    assert "blob01.png" in capsys.readouterr().err


def test_add_flat_abnormal_is_one_class_and_masks_match_plain_stems(tmp_path):
    raw = make_raw_folders(tmp_path / "raw", classes=("x",), n_per_class=10, flat=True, mask_suffix="")
    root = tmp_path / "data"
    assert add(root, "flat", "--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"]),
               "--masks", str(raw["masks"]), "--seed", "3") == 0
    idx = scan_category(root / "flat" / "flat")
    assert idx.defect_classes == ["anomaly"] and sum(m is not None for m in idx.masks) == 10


def test_add_with_test_normals_keeps_every_normal_for_training(tmp_path):
    raw = make_raw_folders(tmp_path / "raw", n_normal=20, masks=False)
    extra = make_raw_folders(tmp_path / "raw2", n_normal=7, classes=(), masks=False)
    root = tmp_path / "data"
    assert add(root, "tn", "--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"]),
               "--test-normal", str(extra["normal"])) == 0
    idx = scan_category(root / "tn" / "tn")
    assert len(idx.where("train")) == 20 and len(idx.where("test", anomalous=False)) == 7


def test_add_registers_an_mvtec_layout_folder_without_copying(tmp_path):
    ds = tmp_path / "elsewhere" / "parts"
    make_tiny_dataset(ds, category="screws")
    make_tiny_dataset(ds, category="nuts", seed=1)
    root = tmp_path / "data"
    assert add(root, "parts", "--path", str(ds)) == 0
    assert dataset_dir("parts", root) == ds.resolve() and categories("parts", root) == ["nuts", "screws"]
    assert not (root / "parts").exists()
    assert add(root, "onlynuts", "--path", str(ds / "nuts")) == 0  # one category folder
    assert categories("onlynuts", root) == ["nuts"]


@pytest.mark.parametrize("case, needle", [
    ("builtin", "taken by the built-in dataset 'mvtec'"),
    ("case", "taken by the built-in dataset 'mvtec'"),
    ("badname", "bad dataset name"),
    ("both", "either --path"),
    ("neither", "needs --path DIR"),
    ("notlayout", "holds no category folder with train/good"),
    ("corrupt", "cannot read image"),
    ("mixed", "mixes images"),
    ("masksize", "mask of"),
    ("flatmask2", "two classes"),
])
def test_add_bad_input_is_one_line_exit_2_and_registers_nothing(case, needle, tmp_path, capsys):
    raw = make_raw_folders(tmp_path / "raw", n_per_class=6)
    root = tmp_path / "data"
    name, argv = "mine", ["--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"])]
    if case == "builtin":
        name = "mvtec"
    elif case == "case":
        name = "MVTec"
    elif case == "badname":
        name = "my data,2"
    elif case == "both":
        argv += ["--path", str(raw["normal"])]
    elif case == "neither":
        argv = []
    elif case == "notlayout":
        argv = ["--path", str(raw["normal"])]
    elif case == "corrupt":
        (raw["normal"] / "n005.jpg").write_bytes(b"not an image")
    elif case == "mixed":
        shutil.copy(raw["normal"] / "n000.jpg", raw["abnormal"] / "stray.jpg")
    elif case == "masksize":
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(raw["masks"] / "blob" / "blob02_mask.png")
        argv += ["--masks", str(raw["masks"])]
    elif case == "flatmask2":  # flat masks: 'x00' is the stem of an image in two classes
        for c in ("blob", "spot"):
            shutil.copy(raw["abnormal"] / c / f"{c}00.png", raw["abnormal"] / c / "x00.png")
        flat = tmp_path / "flatmasks"
        flat.mkdir()
        shutil.copy(raw["masks"] / "blob" / "blob00_mask.png", flat / "x00_mask.png")
        argv += ["--masks", str(flat)]
    assert add(root, name, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and err[-1].startswith("fsad-bench: error:") and needle in err[-1]
    assert not (root / USER_REGISTRY).exists()
    if root.exists():  # a failed build leaves neither the dataset nor its temporary folder
        assert not (root / name).exists() and not [p for p in root.iterdir() if p.name.startswith(".")]


def test_name_must_not_clash_with_a_user_dataset_and_remove_keeps_files(tmp_path, capsys):
    raw = make_raw_folders(tmp_path / "raw", n_per_class=6, masks=False)
    root = tmp_path / "data"
    assert add(root, "mine", "--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"])) == 0
    assert add(root, "MINE", "--path", str(root / "mine")) == 2
    assert "taken by the user dataset 'mine'" in capsys.readouterr().err
    assert main(["data", "remove", "mine", "--data-root", str(root)]) == 0
    assert (root / "mine" / "mine" / "train" / "good").is_dir()
    assert run_q(root, tmp_path / "out") == 2
    assert "unknown dataset 'mine'" in capsys.readouterr().err


def test_malformed_registry_is_one_line_error(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / USER_REGISTRY).write_text('{"datasets": {"x": {"path": 3}}}')
    assert run_q(root, tmp_path / "out", dataset="synthetic") == 2
    err = capsys.readouterr().err
    assert USER_REGISTRY in err and "malformed" in err and not (tmp_path / "out").exists()


def test_q1_on_a_user_dataset_equals_the_same_data_as_a_builtin(tmp_path):
    """The user path changes nothing about the computation: same folder, same numbers."""
    root = tmp_path / "data"
    make_tiny_dataset(root / "brainmri", category="brainmri")
    assert add(root, "mine", "--path", str(root / "brainmri")) == 0
    assert run_q(root, tmp_path / "builtin", dataset="brainmri") == 0
    assert run_q(root, tmp_path / "user", dataset="mine") == 0
    a, b = rows(tmp_path / "builtin"), rows(tmp_path / "user")
    assert list(b.status) == ["ok", "ok"] and list(b.dataset) == ["mine", "mine"]
    assert np.allclose(a.auc_roc.sort_values(), b.auc_roc.sort_values()) and (b.auc_roc > 0.9).all()
    assert sorted(a.manifest_hash) == sorted(b.manifest_hash)  # identical splits


def test_q1_q2_q3_run_end_to_end_on_a_dataset_built_from_folders(tmp_path):
    raw = make_raw_folders(tmp_path / "raw", n_per_class=12)
    root = tmp_path / "data"
    assert add(root, "mine", "--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"]),
               "--masks", str(raw["masks"])) == 0
    assert run_q(root, tmp_path / "q1") == 0
    q1 = rows(tmp_path / "q1")
    assert list(q1.status) == ["ok", "ok"] and (q1.auc_roc > 0.9).all()
    assert run_q(root, tmp_path / "q2", protocol="q2", seeds="0") == 0
    q2 = rows(tmp_path / "q2")
    assert sorted(s["known_class"] for s in q2.setting) == ["blob", "spot"] and (q2.status == "ok").all()
    assert run_q(root, tmp_path / "q3", protocol="q3", method="own_data_toys:BrightMap", seeds="0") == 0
    q3 = rows(tmp_path / "q3")
    assert q3.status[0] == "ok" and q3.metrics[0]["pixel_auc_per_image"] > 0.8


def test_an_edited_user_dataset_is_recomputed_not_resumed(tmp_path, capsys):
    """Old results of changed files must not be reused: the cell key includes the files' fingerprint."""
    root = tmp_path / "data"
    ds = tmp_path / "own"
    make_tiny_dataset(ds, category="c")
    assert add(root, "mine", "--path", str(ds)) == 0
    assert run_q(root, tmp_path / "out", seeds="0") == 0
    first = rows(tmp_path / "out")
    capsys.readouterr()
    assert run_q(root, tmp_path / "out", seeds="0") == 0
    assert "1 already finished" in capsys.readouterr().err
    # replace the test normals by bright images: the same file names, different data
    for p in (ds / "c" / "test" / "good").iterdir():
        Image.fromarray(np.full((32, 32, 3), 250, np.uint8)).save(p)
    assert run_q(root, tmp_path / "out", seeds="0") == 0
    assert "1 cells ran ok, 0 already finished" in capsys.readouterr().err
    second = rows(tmp_path / "out")
    assert len(second) == 2 and set(first.key) < set(second.key)
    assert second[~second.key.isin(first.key)].auc_roc.iloc[0] < first.auc_roc.iloc[0]


def register_dataset_plugin(site: Path, module_dir: Path, ep_name: str, target: Path) -> None:
    """A dataset plugin as an installed package would provide it: module + .dist-info entry point."""
    module_dir.mkdir(parents=True, exist_ok=True)
    dist = f"data_plugin_{ep_name}"
    (module_dir / f"{dist}.py").write_text(textwrap.dedent(f"""
        from fsad_bench.data.registry import DatasetInfo

        def locate():
            return {str(target)!r}

        DATASET = DatasetInfo({ep_name!r}, "My Parts", False, "test plugin", kind="plugin", locate=locate)
    """))
    info_dir = site / f"{dist}-0.1.0.dist-info"
    info_dir.mkdir(parents=True)
    (info_dir / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info_dir / "entry_points.txt").write_text(f"[fsad_bench.datasets]\n{ep_name} = {dist}:DATASET\n")


def test_dataset_plugin_runs_q1_and_clashes_are_errors(tmp_path, monkeypatch, capsys):
    ds = tmp_path / "plugin-data"
    make_tiny_dataset(ds, category="parts")
    site = tmp_path / "site"
    register_dataset_plugin(site, tmp_path / "mods", "myparts", ds)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.syspath_prepend(str(site))
    root = tmp_path / "data"
    assert info("myparts", root).display == "My Parts" and dataset_dir("myparts", root) == ds
    assert run_q(root, tmp_path / "out", dataset="myparts") == 0
    assert (rows(tmp_path / "out").status == "ok").all()
    raw = make_raw_folders(tmp_path / "raw", n_per_class=6, masks=False)
    assert add(root, "MyParts", "--normal", str(raw["normal"])) == 2
    assert "taken by the plugin dataset 'myparts'" in capsys.readouterr().err

    site2 = tmp_path / "site2"
    register_dataset_plugin(site2, tmp_path / "mods2", "mvtec", ds)
    monkeypatch.syspath_prepend(str(site2))
    assert run_q(root, tmp_path / "out2", dataset="synthetic") == 2
    assert "name of a built-in dataset" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_user_dataset_registered_in_a_data_root_is_seen_by_worker_processes(tmp_path):
    """Workers resolve the dataset from the registry beside the data, as the driver does."""
    root = tmp_path / "data"
    make_tiny_dataset(tmp_path / "own", category="c")
    assert add(root, "mine", "--path", str(tmp_path / "own")) == 0
    assert main(["run", "--methods", BRIGHT, "--datasets", "mine", "--data-root", str(root), "--budget",
                 "smoke", "--seeds", "0,1", "--jobs", "2", "--device", "cpu", "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    assert (rows(tmp_path / "out").status == "ok").all()


def test_a_broken_dataset_plugin_is_named_in_a_warning_and_skipped(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    info_dir = site / "broken_data-0.1.0.dist-info"
    info_dir.mkdir(parents=True)
    (info_dir / "METADATA").write_text("Metadata-Version: 2.1\nName: broken_data\nVersion: 0.1.0\n")
    (info_dir / "entry_points.txt").write_text("[fsad_bench.datasets]\n"
                                               "brokends = no_such_module_xyz:DATASET\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(RuntimeWarning, match="'brokends'.*failed to load"):
        known = plugin_datasets()
    assert "brokends" not in known
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: dataset plugin 'brokends'" in out and "synthetic" in out
    assert run_q(tmp_path / "data", tmp_path / "out", dataset="brokends") == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'brokends'; its plugin (no_such_module_xyz:DATASET) failed to load" in err


def test_q2_uses_the_classes_of_a_user_category_named_like_a_paper_category(tmp_path):
    """q2's per-category class list (MVTec AD's 'carpet') must not replace a user's own classes."""
    ds = tmp_path / "rugs"
    make_tiny_dataset(ds, category="carpet")  # classes blob, spot
    root = tmp_path / "data"
    assert add(root, "rugs", "--path", str(ds)) == 0
    assert run_q(root, tmp_path / "q2", protocol="q2", dataset="rugs", seeds="0") == 0
    q2 = rows(tmp_path / "q2")
    assert sorted(s["known_class"] for s in q2.setting) == ["blob", "spot"] and (q2.status == "ok").all()


# --- data that cannot hold a setting: decided before the grid, said once ---------------------------

def _two_sizes(tmp_path: Path) -> tuple[Path, Path]:
    """A user dataset 'mine' with a category of 24 anomalies ('big') and one of 14 ('c': q1's
    n_anomaly=10 is more than half of them)."""
    own = tmp_path / "own"
    make_tiny_dataset(own, category="big", n_per_class=12)
    make_tiny_dataset(own, category="c", n_per_class=7, seed=1)
    root = tmp_path / "data"
    assert add(root, "mine", "--path", str(own)) == 0
    return root, own


def _na_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("not applicable")]


def test_a_spec_setting_a_category_cannot_hold_is_not_applicable_said_once_before_the_grid(tmp_path, capsys):
    root, own = _two_sizes(tmp_path)
    out = tmp_path / "out"
    argv = ["run", "--methods", BRIGHT, "--datasets", "mine", "--data-root", str(root), "--budget", "smoke",
            "--seeds", "0,1", "--out", str(out), "--no-progress"]
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    planned = capsys.readouterr().out
    note = _na_lines(planned)
    assert len(note) == 1  # one line for the (category, setting), not one per method and seed
    assert note[0].startswith("not applicable (stored as 'skipped', not run; 2 cell(s)): mine/c "
                              "n_anomaly=10: ")
    assert f"more than half of the 14 anomalies in {own / 'c'}" in note[0]
    assert note[0].endswith(f"fsad-bench run {' '.join(argv[1:])} --set n_anomaly=7 fits it")
    assert "to run: 2; not applicable, stored without running: 2" in planned and not out.exists()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert _na_lines(err) == note and "FAILED" not in err  # the run says exactly what the dry run said
    assert "2 cells ran ok, 0 already finished, 0 failed, 2 not applicable" in err
    stored = rows(out)
    assert list(stored.status) == ["ok", "ok", "skipped", "skipped"]
    skipped = stored[stored.status == "skipped"]
    assert (skipped.error.str.contains("more than half of the 14 anomalies")).all()
    assert (skipped.device == "").all() and (skipped.wall_s == 0).all()  # never loaded nor run
    assert main(argv) == 0  # a rerun does not retry them
    assert "0 cells ran ok, 4 already finished" in capsys.readouterr().err


def test_the_command_that_fits_runs_end_to_end_and_says_its_setting(tmp_path, capsys):
    import shlex

    root, _ = _two_sizes(tmp_path)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["run", "--methods", BRIGHT, "--datasets", "mine", "--data-root", str(root),
                 "--budget", "smoke",
                 "--seeds", "0,1", "--out", str(out), "--no-progress", "--dry-run"]) == 0
    note = _na_lines(capsys.readouterr().out)[0]
    command = shlex.split(note.split("; ")[-1].removesuffix(" fits it"))
    assert command[:2] == ["fsad-bench", "run"] and command[-2:] == ["--set", "n_anomaly=7"]
    assert main(command[1:]) == 0
    err = capsys.readouterr().err
    assert "4 cells ran ok" in err and not _na_lines(err)
    stored = rows(out)
    assert (stored.status == "ok").all() and [s["n_anomaly"] for s in stored.setting] == [7] * 4
    manifests = ResultStore(out).dataframe(with_blobs=True).manifest
    assert all(len(m["labelled_anomalies"]) == 7 for m in manifests)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["settings"] == {"n_anomaly": [7]} and "n_anomaly=7" in manifest["argv"]
    assert main(["report", str(out)]) == 0
    assert "> settings: n_anomaly=7\n" in capsys.readouterr().out


# --- data remove --delete, data add --replace --------------------------------------------------------

def _built(tmp_path: Path, name: str = "mine", n_per_class: int = 6) -> tuple[Path, dict[str, Path]]:
    raw = make_raw_folders(tmp_path / f"raw{n_per_class}", n_per_class=n_per_class, masks=False)
    root = tmp_path / "data"
    assert add(root, name, "--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"])) == 0
    return root, raw


def test_remove_delete_deletes_the_copy_data_add_built_so_the_name_can_be_added_again(tmp_path, capsys):
    root, raw = _built(tmp_path)
    originals = sorted(p.relative_to(raw["normal"]) for p in raw["normal"].rglob("*"))
    assert main(["data", "remove", "mine", "--delete", "--data-root", str(root)]) == 0
    assert f"mine unregistered; {root / 'mine'} deleted" in capsys.readouterr().err
    assert not (root / "mine").exists()
    assert "mine" not in json.loads((root / USER_REGISTRY).read_text())["datasets"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no renamed leftovers
    assert sorted(p.relative_to(raw["normal"]) for p in raw["normal"].rglob("*")) == originals  # untouched
    assert add(root, "mine", "--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"])) == 0


def test_remove_without_delete_keeps_the_files_and_says_how_to_delete_them(tmp_path, capsys):
    root, _ = _built(tmp_path)
    assert main(["data", "remove", "mine", "--data-root", str(root)]) == 0
    assert "'data remove NAME --delete' does both" in capsys.readouterr().err
    assert (root / "mine" / "mine" / "train" / "good").is_dir()


def test_remove_delete_of_a_folder_only_registered_needs_the_folder_typed_out(tmp_path, capsys):
    own = tmp_path / "own"
    make_tiny_dataset(own, category="c")
    root = tmp_path / "data"
    assert add(root, "mine", "--path", str(own)) == 0
    capsys.readouterr()
    assert main(["data", "remove", "mine", "--delete", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--delete deletes it only with --confirm {own.resolve()}" in err[0]
    assert main(["data", "remove", "mine", "--delete", "--confirm", str(tmp_path),
                 "--data-root", str(root)]) == 2
    assert "is not the folder of mine" in capsys.readouterr().err
    # --confirm without --delete
    assert main(["data", "remove", "mine", "--confirm", str(own), "--data-root", str(root)]) == 2
    assert (own / "c" / "train" / "good").is_dir() and info("mine", root).kind == "user"  # nothing changed
    assert main(["data", "remove", "mine", "--delete", "--confirm", str(own), "--data-root", str(root)]) == 0
    assert not own.exists() and "mine" not in json.loads((root / USER_REGISTRY).read_text())["datasets"]


def test_remove_delete_never_deletes_what_another_dataset_or_the_data_root_uses(tmp_path, capsys):
    parts = tmp_path / "parts"
    make_tiny_dataset(parts, category="nuts")
    make_tiny_dataset(parts, category="screws", seed=1)
    root = tmp_path / "data"
    assert add(root, "parts", "--path", str(parts)) == 0
    assert add(root, "nuts", "--path", str(parts / "nuts")) == 0  # one category of 'parts'
    make_tiny_dataset(root / "whole", category="w")  # the user's own folder inside the data root
    assert add(root, "whole", "--path", str(root / "whole")) == 0
    capsys.readouterr()
    for name, confirm, needle in [("nuts", parts / "nuts", "shares files with dataset 'parts'"),
                                  ("parts", parts, "shares files with dataset 'nuts'"),
                                  ("whole", root / "whole", "--delete deletes it only with --confirm")]:
        args = ["--confirm", str(confirm)] if name != "whole" else []
        assert main(["data", "remove", name, "--delete", *args, "--data-root", str(root)]) == 2
        assert needle in capsys.readouterr().err
    assert (parts / "nuts" / "train").is_dir() and (root / "whole" / "w").is_dir()
    assert set(json.loads((root / USER_REGISTRY).read_text())["datasets"]) == {"parts", "nuts", "whole"}


def test_add_replace_builds_first_and_keeps_the_old_dataset_when_the_build_fails(tmp_path, capsys):
    root, _ = _built(tmp_path, n_per_class=6)
    bigger = make_raw_folders(tmp_path / "raw9", n_per_class=9, masks=False)
    capsys.readouterr()
    assert add(root, "mine", "--normal", str(bigger["normal"]), "--abnormal", str(bigger["abnormal"])) == 2
    assert "--replace" in capsys.readouterr().err  # the refusal says how to replace it
    (bigger["abnormal"] / "blob" / "blob03.png").write_bytes(b"broken")
    assert add(root, "mine", "--replace", "--normal", str(bigger["normal"]), "--abnormal",
               str(bigger["abnormal"])) == 2
    assert len(scan_category(root / "mine" / "mine").where("test", anomalous=True)) == 12  # the old one
    assert info("mine", root).kind == "user"
    (bigger["abnormal"] / "blob" / "blob03.png").unlink()
    assert add(root, "mine", "--replace", "--normal", str(bigger["normal"]), "--abnormal",
               str(bigger["abnormal"])) == 0
    assert len(scan_category(root / "mine" / "mine").where("test", anomalous=True)) == 17
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_add_replace_by_a_folder_deletes_the_old_copy_but_keeps_a_folder_it_only_registered(tmp_path, capsys):
    root, _ = _built(tmp_path)
    own = tmp_path / "own"
    make_tiny_dataset(own, category="c")
    assert add(root, "mine", "--replace", "--path", str(own)) == 0
    assert f"the copy it had built, {root / 'mine'}, is deleted" in capsys.readouterr().err
    assert not (root / "mine").exists() and dataset_dir("mine", root) == own.resolve()
    other = tmp_path / "other"
    make_tiny_dataset(other, category="d")
    assert add(root, "mine", "--replace", "--path", str(other)) == 0
    assert f"its folder {own.resolve()} is kept" in capsys.readouterr().err
    assert (own / "c" / "train" / "good").is_dir() and categories("mine", root) == ["d"]
    assert add(root, "fresh", "--replace", "--path", str(own)) == 0  # nothing to replace: added
    assert "no dataset 'fresh' of yours to replace: added" in capsys.readouterr().err
