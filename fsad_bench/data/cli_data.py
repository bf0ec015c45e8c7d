"""``fsad-bench data list | prepare | verify | download | add | remove``: the datasets on this machine.

Wired into the main parser with ``add_data_parser(subparsers)`` and dispatched with ``cmd_data(args)``.
The data root is ``--data-root`` (alias ``--root``), then ``$FSAD_DATA``, then the per-user default.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fsad_bench.errors import DataError, UserError

VERIFY_SIZE = 32  # decode_image's output size during verify (every file is still fully decoded)


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    d = subparsers.add_parser("data", help="list, prepare, verify and download the nine real datasets; "
                                           "add your own",
                              description="The paper's nine real datasets and your own, in the canonical "
                                          "(MVTec AD) layout.")
    sub = d.add_subparsers(dest="data_command", required=True)

    def root_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", "--root", dest="data_root", type=Path, default=None,
                       help="folder holding the datasets (default: $FSAD_DATA, then the per-user "
                            "data folder)")

    ls = sub.add_parser("list", help="each dataset: present or missing, where, counts, how to obtain it",
                        description="Each dataset (the nine real ones and yours): present or missing, "
                                    "where, its counts, and how to obtain it.")
    root_arg(ls)

    pr = sub.add_parser("prepare", help="convert a raw download into DATA_ROOT/NAME",
                        description="Convert an extracted raw download into DATA_ROOT/NAME in the "
                                    "canonical (MVTec AD) layout.")
    pr.add_argument("name", help="mvtec | aitex | sdd | elpv | optical | mastcam | brainmri | headct | "
                                 "hyperkvasir")
    pr.add_argument("--raw", type=Path, default=None,
                    help="the extracted raw download (ELPV: optional, the elpv-dataset package is used)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the 75/25 train/test split of the normals")
    root_arg(pr)

    ve = sub.add_parser("verify", help="decode every image, check masks, compare counts with Table 1",
                        description="Decode every image and mask of a dataset, check the masks, and "
                                    "compare the counts with the paper's Table 1.")
    ve.add_argument("name", help="a dataset name, or 'all' for every present dataset")
    root_arg(ve)

    dl = sub.add_parser("download", help="checksummed download + prepare, or where to get it by hand",
                        description="Download a dataset (checksummed), extract it and prepare it; for a "
                                    "dataset without a stable URL, print where to get it by hand and "
                                    "exit 2.")
    dl.add_argument("name", help="mvtec | aitex | sdd | elpv | optical | mastcam | brainmri | headct | "
                                 "hyperkvasir")
    dl.add_argument("--seed", type=int, default=0,
                    help="seed of the 75/25 train/test split of the normals when preparing (default 0)")
    dl.add_argument("--no-prepare", action="store_true", help="only download and extract")
    root_arg(dl)

    ad = sub.add_parser("add", help="register your own dataset: an MVTec-layout folder (--path) or plain "
                                    "folders of normal / abnormal images (--normal ...)",
                        description="Register a dataset under NAME for every protocol. Either --path DIR "
                                    "(already in the MVTec AD layout; nothing is copied) or --normal DIR "
                                    "[--abnormal DIR] [--masks DIR] [--test-normal DIR] (copied into "
                                    "DATA_ROOT/NAME in the layout). Registrations are kept in "
                                    "DATA_ROOT/fsad-datasets.json.")
    ad.add_argument("name", help="dataset name (letters, digits, '_' and '-'); must not be taken")
    ad.add_argument("--path", type=Path, default=None,
                    help="a folder in the MVTec AD layout: DIR/<category>/train/good, test/good, "
                         "test/<defect>[, ground_truth/<defect>/<stem>_mask.png], or one category folder")
    ad.add_argument("--normal", type=Path, default=None, help="normal images (split 75/25 train/test)")
    ad.add_argument("--abnormal", type=Path, default=None,
                    help="abnormal images; sub-folders are defect classes, a flat folder is class 'anomaly'")
    ad.add_argument("--masks", type=Path, default=None,
                    help="masks of abnormal images, matched by file stem (<stem>.* or <stem>_mask.*)")
    ad.add_argument("--test-normal", type=Path, default=None,
                    help="test normals (then every --normal image is a training normal)")
    ad.add_argument("--seed", type=int, default=0, help="seed of the 75/25 split of --normal (default 0)")
    ad.add_argument("--display", default=None,
                    help="longer name that 'fsad-bench data list' shows (default: NAME); report tables "
                         "name the dataset NAME")
    ad.add_argument("--replace", action="store_true",
                    help="replace your dataset of the same name: the new one is built or checked first, and "
                         "only then registered; the copy the old one had built is deleted, a folder it "
                         "only registered is kept")
    root_arg(ad)

    rm = sub.add_parser("remove", help="unregister a dataset added with 'data add' (files are kept unless "
                                       "--delete)",
                        description="Unregister a dataset added with 'data add'. Its files are kept unless "
                                    "--delete is given.")
    rm.add_argument("name", help="the name it was added under")
    rm.add_argument("--delete", action="store_true",
                    help="also delete its files: the copy 'data add' built in DATA_ROOT/NAME; a folder you "
                         "registered with --path only with --confirm PATH")
    rm.add_argument("--confirm", type=Path, default=None, metavar="PATH",
                    help="with --delete: the folder you registered with --path, typed out, to delete your "
                         "own data")
    root_arg(rm)
    return d


def _check_name(name: str) -> str:
    from fsad_bench.data.registry import REAL_DATASETS

    if name not in REAL_DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(REAL_DATASETS)}")
    return name


def _summary(cat_dir: Path) -> str:
    from fsad_bench.data.layout import NORMAL, scan_category

    idx = scan_category(cat_dir)
    n_train = len(idx.where("train"))
    n_good = len(idx.where("test", anomalous=False))
    n_anom = len(idx.where("test", anomalous=True))
    per = ", ".join(f"{c} {len(idx.where('test', cls=c))}" for c in idx.defect_classes)
    n_masks = sum(m is not None for m in idx.masks)
    return (f"train {n_train} {NORMAL} | test {n_good} {NORMAL} + {n_anom} anomalies"
            f"{f' ({per})' if per else ''}{f'; {n_masks} masks' if n_masks else ''}")


def cmd_list(args: argparse.Namespace) -> int:
    from fsad_bench.data.download import SOURCES
    from fsad_bench.data.layout import shown
    from fsad_bench.data.registry import (
        DATASETS,
        REAL_DATASETS,
        all_datasets,
        categories,
        dataset_dir,
        is_present,
        registry_file,
    )
    from fsad_bench.paths import data_root

    root = data_root(args.data_root)
    print(f"data root: {root}  (--data-root, then $FSAD_DATA, then the per-user default)")
    for name in REAL_DATASETS:
        folder = dataset_dir(name, root)
        present = is_present(name, root)
        print(f"{name:12s} {'present' if present else 'missing':8s} {folder}  [{DATASETS[name].display}]")
        if present:
            for cat in categories(name, root):
                try:
                    text = _summary(folder / cat)
                except DataError as exc:
                    text = f"malformed: {exc}"
                print(f"    {shown(cat)}: {text}")
        s = SOURCES[name]
        print(f"    source: {s.page}  licence: {s.licence}")
        if not present:
            print(f"    how: {s.how}")
    own = {n: d for n, d in all_datasets(root).items() if d.kind != "builtin"}
    print(f"your datasets ('fsad-bench data add'; registry {registry_file(root)}):" if own else
          "your datasets: none ('fsad-bench data add NAME --path DIR' or '--normal DIR --abnormal DIR')")
    for name, d in own.items():
        present = is_present(name, root)
        folder = dataset_dir(name, root) if d.kind == "user" or present else "?"
        print(f"{name:12s} {'present' if present else 'missing':8s} {folder}  [{d.display}] ({d.kind})")
        for cat in categories(name, root) if present else []:
            try:
                text = _summary(Path(folder) / cat)
            except DataError as exc:
                text = f"malformed: {exc}"
            print(f"    {cat}: {text}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from fsad_bench.data.converters import prepare
    from fsad_bench.paths import data_root

    name = _check_name(args.name)
    root = data_root(args.data_root)
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {root} is a file; give the folder that holds the datasets")
    print(f"preparing {name} from {args.raw or 'the elpv-dataset package'} -> {root / name}", file=sys.stderr)
    _run_prepare(name, args.raw, root, args.seed, prepare)
    return 0


def _run_prepare(name: str, raw: Path | None, root: Path, seed: int, prepare) -> None:
    folder, conv = prepare(name, raw, root, seed)
    for w in conv.warnings:
        print(f"  warning: {w}", file=sys.stderr)
    for cat in sorted(conv.categories):
        print(f"{name}/{cat}: {_summary(folder / cat)}")
    print(f"{name} ready in {folder} ('fsad-bench data verify {name}' checks it against Table 1)",
          file=sys.stderr)


def _check_file(idx, i: int, masks_expected: bool) -> str | None:
    """The problem with file ``i`` of a category index (unreadable image or mask, missing or mis-sized
    mask), or None."""
    from fsad_bench.data.cache import decode_image, decode_mask
    from fsad_bench.data.converters.common import image_size
    from fsad_bench.data.layout import NORMAL

    path = idx.root / idx.files[i]
    try:
        decode_image(path, VERIFY_SIZE)
        if idx.cls[i] == NORMAL:
            return None
        if idx.masks[i] is None:
            return f"no mask for {path}" if masks_expected else None
        mpath = idx.root / idx.masks[i]
        decode_mask(mpath, VERIFY_SIZE)
        if image_size(mpath) != image_size(path):
            return f"mask {mpath} is {image_size(mpath)}, its image is {image_size(path)} (width, height)"
    except DataError as exc:
        return str(exc)
    return None


def verify(name: str, root: Path, out=None) -> list[str]:
    """Decode every image and mask of ``name``, check mask sizes, print count differences with the
    paper's Table 1. Returns the problems found (unreadable files, missing or mis-sized masks);
    count differences are printed, not returned."""
    from fsad_bench.data.converters import HAS_MASKS, PAPER_TABLE1
    from fsad_bench.data.layout import scan_category
    from fsad_bench.data.registry import categories, dataset_dir

    out = out or sys.stdout
    folder = dataset_dir(name, root)
    problems: list[str] = []
    paper = PAPER_TABLE1.get(name, {})
    got_total = [0, 0, 0]
    cats = categories(name, root)
    for cat in cats:
        try:
            idx = scan_category(folder / cat)
        except DataError as exc:
            problems.append(str(exc))
            continue

        with ThreadPoolExecutor(4) as pool:
            found = pool.map(lambda i, ix=idx: _check_file(ix, i, name in HAS_MASKS), range(len(idx.files)))
            problems.extend(p for p in found if p)
        got = (len(idx.where("train")), len(idx.where("test", anomalous=False)),
               len(idx.where("test", anomalous=True)), len(idx.defect_classes))
        for k in range(3):
            got_total[k] += got[k]
        ref = paper.get(cat)
        labels = ("train normal", "test normal", "test anomaly", "anomaly classes")
        if ref is None:
            print(f"{name}/{cat}: {got[0]} / {got[1]} / {got[2]} ({got[3]} classes); not in Table 1",
                  file=out)
        elif got == ref:
            print(f"{name}/{cat}: {got[0]} / {got[1]} / {got[2]} ({got[3]} classes) = Table 1", file=out)
        else:
            diffs = "; ".join(f"{lab} {g} vs paper {r} ({g - r:+d})"
                              for lab, g, r in zip(labels, got, ref) if g != r)
            print(f"{name}/{cat}: differs from Table 1: {diffs}", file=out)
    missing = sorted(set(paper) - set(cats))
    if missing:
        print(f"{name}: categories of Table 1 not present: {', '.join(missing)}", file=out)
    if len(paper) > 1:
        ref_total = [sum(v[k] for v in paper.values()) for k in range(3)]
        print(f"{name} total: {got_total[0]} / {got_total[1]} / {got_total[2]} (paper {ref_total[0]} / "
              f"{ref_total[1]} / {ref_total[2]})", file=out)
    for p in problems:
        print(f"  problem: {p}", file=out)
    print(f"{name}: {len(problems)} problem(s) in {folder}", file=out)
    return problems


def cmd_verify(args: argparse.Namespace) -> int:
    from fsad_bench.data.registry import REAL_DATASETS, all_datasets, is_present
    from fsad_bench.paths import data_root

    root = data_root(args.data_root)
    own = [n for n, d in all_datasets(root).items() if d.kind != "builtin"]  # 'data add' and plugins
    if args.name == "all":
        names = [n for n in [*REAL_DATASETS, *own] if is_present(n, root)]
        if not names:
            raise DataError(f"no dataset is present under {root}; see 'fsad-bench data list'")
    else:
        names = [args.name if args.name in own else _check_name(args.name)]
    problems = []
    for name in names:
        problems += verify(name, root)
    if problems:
        raise DataError(f"{len(problems)} problem(s) found, first: {problems[0]}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from fsad_bench.data.converters import prepare
    from fsad_bench.data.download import ManualDownload, fetch_raw, manual_instructions
    from fsad_bench.paths import data_root

    name = _check_name(args.name)
    root = data_root(args.data_root)
    try:
        raw = fetch_raw(name, root)
    except ManualDownload:
        print(manual_instructions(name))
        raise
    if args.no_prepare:
        print(f"{name}: raw data in {raw or 'the elpv-dataset package'}; convert with "
              f"'fsad-bench data prepare {name}{f' --raw {raw}' if raw else ''}'")
        return 0
    _run_prepare(name, raw, root, args.seed, prepare)
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """Register ``args.name``: validate an MVTec-layout --path, or build the layout from --normal ...
    With ``--replace`` the user dataset of that name is replaced once the new one is built (or its
    folder checked): a failure leaves the old one registered and its files as they were."""
    from fsad_bench.data.folder import FolderSources, build_from_folders, check_layout
    from fsad_bench.data.registry import (
        built_copy,
        check_new_name,
        delete_folder,
        register_user_dataset,
        registered_folder,
        user_dataset_named,
    )
    from fsad_bench.paths import data_root

    root = data_root(args.data_root)
    replacing = user_dataset_named(args.name, root) if getattr(args, "replace", False) else None
    check_new_name(args.name, root, replacing)  # before anything is read or written
    old_copy = built_copy(replacing, root) if replacing else None
    old_folder = registered_folder(replacing, root) if replacing else None
    folder_flags = [f for f in ("normal", "abnormal", "masks", "test_normal") if getattr(args, f) is not None]
    if args.path is not None and folder_flags:
        raise UserError(f"give either --path (an MVTec-layout folder) or --normal/--abnormal/--masks/"
                        f"--test-normal, not both (got --path and --{folder_flags[0].replace('_', '-')})")
    if args.path is None and args.normal is None:
        raise UserError("data add needs --path DIR (an MVTec-layout folder) or --normal DIR (plain folders)")
    if args.path is not None:
        layout = check_layout(args.path)
        warnings, folder, cats = layout.warnings, layout.folder, layout.categories
        source = f"registered MVTec-layout folder {args.path}"
    else:
        target = root / args.name
        ours = old_copy is not None and target.exists() and target.resolve() == old_copy.resolve()
        if target.exists() and not ours:
            why = (f"; it is not a copy that 'data add' built for {replacing}, so --replace does not "
                   "delete it)" if replacing else ")")
            raise UserError(f"{target} exists already; remove it or choose another name (data add builds "
                            f"the dataset there{why}")
        src = FolderSources(args.normal, args.abnormal, args.masks, args.test_normal, args.seed)
        print(f"building {args.name} from {args.normal}" + (f" + {args.abnormal}" if args.abnormal else "")
              + f" -> {target}" + (" (replacing the copy there once built)" if ours else ""), file=sys.stderr)
        folder, conv = build_from_folders(args.name, root, src)  # swapped in whole, or not at all
        warnings, cats = conv.warnings, None
        source = "built by 'fsad-bench data add' from " + ", ".join(
            f"--{f.replace('_', '-')} {getattr(args, f)}" for f in folder_flags)
    for w in warnings:
        print(f"  warning: {w}", file=sys.stderr)
    registry = register_user_dataset(args.name, args.display or args.name, folder, root, cats, source,
                                     replacing=replacing)
    for cat in cats or sorted(d.name for d in folder.iterdir() if (d / "train" / "good").is_dir()):
        print(f"{args.name}/{cat}: {_summary(folder / cat)}")
    if replacing:
        new = Path(folder).resolve()
        if old_copy is not None and old_copy.exists() and old_copy.resolve() != new \
                and old_copy.resolve() not in new.parents:
            delete_folder(old_copy)
            print(f"{replacing} replaced; the copy it had built, {old_copy}, is deleted", file=sys.stderr)
        elif old_copy is None:
            print(f"{replacing} replaced; its folder {old_folder} is kept (your data: 'data add --path' only "
                  "registered it)", file=sys.stderr)
        else:
            print(f"{replacing} replaced", file=sys.stderr)
    elif getattr(args, "replace", False):
        print(f"no dataset {args.name!r} of yours to replace: added", file=sys.stderr)
    print(f"{args.name} registered in {registry}; run it with 'fsad-bench run --datasets {args.name}'",
          file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from fsad_bench.data.registry import built_copy, delete_user_dataset, remove_user_dataset, user_datasets
    from fsad_bench.paths import data_root

    root = data_root(args.data_root)
    if getattr(args, "delete", False):
        deleted = delete_user_dataset(args.name, root, args.confirm)
        print(f"{args.name} unregistered; "
              + (f"{deleted} deleted" if deleted else "its folder was gone already"), file=sys.stderr)
        return 0
    if args.confirm is not None:
        raise UserError("--confirm goes with --delete (it names the folder --delete deletes); nothing "
                        "changed")
    copy = built_copy(args.name, root) if args.name in user_datasets(root) else None
    gone = remove_user_dataset(args.name, root)
    folder = Path(gone.path) if Path(gone.path).is_absolute() else root / gone.path
    print(f"{args.name} unregistered; its files are still in {folder}" + (
        f" (the copy 'data add' built: delete it to add {args.name} again from folders; 'data remove NAME "
        "--delete' does both)" if copy else ""), file=sys.stderr)
    return 0


DATA_COMMANDS = {"list": cmd_list, "prepare": cmd_prepare, "verify": cmd_verify, "download": cmd_download,
                 "add": cmd_add, "remove": cmd_remove}


def cmd_data(args: argparse.Namespace) -> int:
    return DATA_COMMANDS[args.data_command](args)
