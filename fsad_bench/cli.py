"""Command line: ``fsad-bench run | report | list | bench | data``.

Bad input (unknown names, missing data, bad ``--set``) prints one line and exits 2. A grid with
failed cells exits 1 after every other cell has run and been stored.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from fsad_bench import __version__
from fsad_bench.data.cli_data import add_data_parser, cmd_data
from fsad_bench.errors import UserError


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --seeds {text!r}: expected integers like 0,1,2") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fsad-bench", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"fsad-bench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a protocol's grid of cells")
    r.add_argument("--protocol", default="q1", help="packaged protocol name or path to a .toml spec")
    r.add_argument("--methods", type=_csv_list, default=None,
                   help="comma-separated method names or package.module:Class paths; 'all' = the spec's")
    r.add_argument("--datasets", type=_csv_list, default=None, help="default: the spec's datasets present")
    r.add_argument("--seeds", type=_seeds, default=None, help="e.g. 0,1,2 (default: the spec's)")
    r.add_argument("--budget", default=None, help="paper | quick | smoke (default: the spec's)")
    r.add_argument("--weights", choices=["imagenet", "none"], default=None,
                   help="backbone weights for every method that has them (default: the budget's)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter override; 'method.key=value' for one method (repeatable)")
    r.add_argument("--jobs", type=int, default=1, help="cells run in parallel worker processes")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:0,cuda:1")
    r.add_argument("--out", type=Path, default=None, help="results folder (default results/<protocol>)")
    r.add_argument("--data-root", type=Path, default=None, help="folder holding the real datasets")
    r.add_argument("--no-progress", action="store_true")

    rep = sub.add_parser("report", help="tables from a results folder or a long-form CSV")
    rep.add_argument("folder", nargs="?", type=Path)
    rep.add_argument("--from-csv", type=Path, default=None,
                     help="long-form CSV with columns dataset,category,method,seed,auc_roc")
    rep.add_argument("--format", choices=["markdown", "latex", "csv", "html"], default="markdown",
                     help="html: one self-contained file (default DIR/report.html) with tables and figures")
    rep.add_argument("--metric", choices=["auc_roc", "auc_pr"], default="auc_roc")
    rep.add_argument("--compare-paper", action="store_true",
                     help="put each of our cells beside the paper's published number (results/paper/)")
    rep.add_argument("--output", "-o", type=Path, default=None, help="write to a file instead of stdout")

    ls = sub.add_parser("list", help="detectors, protocols and datasets")
    ls.add_argument("--data-root", type=Path, default=None)

    b = sub.add_parser("bench", help="DevNet throughput and the default grid's wall time")
    b.add_argument("--budgets", type=_csv_list, default=["quick", "paper"])
    b.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    b.add_argument("--device", default="auto")
    b.add_argument("--grid", action="store_true",
                   help="also time 'fsad-bench run --protocol q1 --methods all' in a temporary folder")
    add_data_parser(sub)
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from fsad_bench.paths import default_results_dir
    from fsad_bench.protocol import load_protocol
    from fsad_bench.runner.generator import GridRequest, build_cells
    from fsad_bench.runner.runner import run_grid
    from fsad_bench.store import ResultStore

    spec = load_protocol(args.protocol)
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    req = GridRequest(args.methods, args.datasets, args.seeds, args.budget, args.weights,
                      args.overrides, args.data_root)
    cells, missing = build_cells(spec, req)
    if missing:
        used = sorted({c.dataset for c in cells})
        print(f"datasets not present under the data root: {', '.join(missing)}; running on "
              f"{', '.join(used)} ('fsad-bench list' says how to prepare them)", file=sys.stderr)
    out = args.out or default_results_dir(spec.name)
    budget = spec.budget(args.budget)
    print(f"protocol {spec.name}, budget {budget.name} ({budget.description}); {len(cells)} cells -> {out}",
          file=sys.stderr)
    with ResultStore(out) as store:
        summary = run_grid(cells, store, jobs=args.jobs, device=args.device, progress=not args.no_progress)
    print(f"{summary.ok} cells ran ok, {summary.skipped} already finished, {len(summary.failed)} failed, "
          f"{len(summary.not_applicable)} not applicable; "
          f"results in {out} ('fsad-bench report {out}')", file=sys.stderr)
    user_errors = [f for f in summary.failed if f.user_error]
    if user_errors:
        raise UserError(f"{len(user_errors)} cell(s) failed on bad input, first: {user_errors[0].error}")
    return 1 if summary.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from fsad_bench.report import load_long_csv, protocol_report
    from fsad_bench.report_doc import comparison_part, folder_report

    if args.from_csv:
        if args.format == "html":
            raise UserError("--format html needs a results folder (it embeds run settings and figures)")
        df = load_long_csv(args.from_csv, args.metric)
        text = protocol_report(df, "table2", args.format, args.metric, [f"source: {args.from_csv}"])
        if args.compare_paper:  # a long-form CSV is read as Table 2 (Q1) results
            text += "\n" + comparison_part(df.assign(setting=[{}] * len(df)), "q1", args.format).body
    elif args.folder:
        text = folder_report(args.folder, args.format, args.metric, args.compare_paper)
    else:
        raise UserError("report needs a results folder or --from-csv FILE")
    output = args.output
    if output is None and args.format == "html":
        output = args.folder / "report.html"
    if output:
        output.write_text(text)
        print(f"report written to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fsad_bench.data.registry import DATASETS, dataset_dir, is_present
    from fsad_bench.detectors.registry import available_detectors
    from fsad_bench.paths import data_root
    from fsad_bench.protocol import load_protocol, packaged_protocols

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detectors = available_detectors()
    print("detectors:")
    for name, cls in detectors.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"  {name:16s} {cls.__module__}:{cls.__name__}  {doc}")
    for w in caught:
        print(f"  WARNING: {w.message}")
    print("protocols:")
    for name in packaged_protocols():
        spec = load_protocol(name)
        print(f"  {name:10s} {spec.title}  (budgets: {', '.join(spec.budgets)})")
    root = data_root(args.data_root)
    print(f"datasets (data root {root}):")
    for name, info in DATASETS.items():
        if name == "synthetic":
            print(f"  {name:12s} present (embedded, generated on first use)")
            continue
        state = "present" if is_present(name, args.data_root) else "missing"
        print(f"  {name:12s} {state:8s} {dataset_dir(name, args.data_root)}  source: {info.source}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fsad_bench.bench import run_bench

    run_bench(args.budgets, args.steps, args.device, args.grid)
    return 0


COMMANDS = {"run": cmd_run, "report": cmd_report, "list": cmd_list, "bench": cmd_bench, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"fsad-bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fsad-bench: interrupted; finished cells are stored, rerun the command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
