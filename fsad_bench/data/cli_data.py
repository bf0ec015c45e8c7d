"""``fsad-bench data list | prepare | verify | download``: the real datasets on this machine.

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
    d = subparsers.add_parser("data", help="list, prepare, verify and download the nine real datasets",
                              description="The paper's nine real datasets in the canonical (MVTec AD) "
                                          "layout.")
    sub = d.add_subparsers(dest="data_command", required=True)

    def root_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", "--root", dest="data_root", type=Path, default=None,
                       help="folder holding the datasets (default: $FSAD_DATA, then the per-user "
                            "data folder)")

    ls = sub.add_parser("list", help="each dataset: present or missing, where, counts, how to obtain it")
    root_arg(ls)

    pr = sub.add_parser("prepare", help="convert a raw download into DATA_ROOT/NAME")
    pr.add_argument("name", help="mvtec | aitex | sdd | elpv | optical | mastcam | brainmri | headct | "
                                 "hyperkvasir")
    pr.add_argument("--raw", type=Path, default=None,
                    help="the extracted raw download (ELPV: optional, the elpv-dataset package is used)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the 75/25 train/test split of the normals")
    root_arg(pr)

    ve = sub.add_parser("verify", help="decode every image, check masks, compare counts with Table 1")
    ve.add_argument("name", help="a dataset name, or 'all' for every present dataset")
    root_arg(ve)

    dl = sub.add_parser("download", help="checksummed download + prepare, or where to get it by hand")
    dl.add_argument("name")
    dl.add_argument("--seed", type=int, default=0)
    dl.add_argument("--no-prepare", action="store_true", help="only download and extract")
    root_arg(dl)
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
    from fsad_bench.data.registry import DATASETS, REAL_DATASETS, categories, dataset_dir, is_present
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
                print(f"    {cat}: {text}")
        s = SOURCES[name]
        print(f"    source: {s.page}  licence: {s.licence}")
        if not present:
            print(f"    how: {s.how}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from fsad_bench.data.converters import prepare
    from fsad_bench.paths import data_root

    name = _check_name(args.name)
    root = data_root(args.data_root)
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
    from fsad_bench.data.registry import REAL_DATASETS, is_present
    from fsad_bench.paths import data_root

    root = data_root(args.data_root)
    if args.name == "all":
        names = [n for n in REAL_DATASETS if is_present(n, root)]
        if not names:
            raise DataError(f"no dataset is present under {root}; see 'fsad-bench data list'")
    else:
        names = [_check_name(args.name)]
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


DATA_COMMANDS = {"list": cmd_list, "prepare": cmd_prepare, "verify": cmd_verify, "download": cmd_download}


def cmd_data(args: argparse.Namespace) -> int:
    return DATA_COMMANDS[args.data_command](args)
