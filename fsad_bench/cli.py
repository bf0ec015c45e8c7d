"""Command line: ``fsad-bench run | report | list | bench | data``.

Bad input (unknown names, missing data, bad ``--set``) prints one line and exits 2. A grid with
failed cells exits 1 after every other cell has run and been stored.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from fsad_bench import __version__
from fsad_bench.data.cli_data import add_data_parser, cmd_data
from fsad_bench.errors import UserError

if TYPE_CHECKING:
    from fsad_bench.runner.request import RunRequest


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --seeds {text!r}: expected integers like 0,1,2") from None


#: the top-level help's description (plain text: argparse prints it as written)
DESCRIPTION = ("Few-shot (weakly-supervised) image anomaly detection benchmark: run a protocol's grid "
               "(run), print its tables (report), list detectors, protocols and datasets (list), measure "
               "speed (bench), manage datasets (data).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fsad-bench", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"fsad-bench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a protocol's grid of cells",
                       description="Run a protocol's grid of cells (dataset x category x method x seed x "
                                   "setting) and store each result in OUT/results.sqlite. Finished cells "
                                   "are skipped, so rerunning the command resumes it.")
    r.add_argument("--protocol", default="q1", help="packaged protocol name or path to a .toml spec")
    r.add_argument("--methods", type=_csv_list, default=None,
                   help="comma-separated method names or package.module:Class paths; 'all' = the spec's")
    r.add_argument("--datasets", type=_csv_list, default=None,
                   help="comma-separated dataset names (default: the spec's that are present, else its "
                        "fallback)")
    r.add_argument("--seeds", type=_seeds, default=None, help="e.g. 0,1,2 (default: the spec's)")
    r.add_argument("--budget", default=None,
                   help="paper | quick | smoke, or a budget the methods declare (default: the spec's)")
    r.add_argument("--weights", choices=["imagenet", "none"], default=None,
                   help="backbone weights for every method that has them (default: the budget's)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter for every method that has it; METHOD.KEY=VALUE for one method; "
                        "img_size=N; or a setting of the spec, e.g. n_anomaly=5 or n_anomaly=5,10 "
                        "(repeatable)")
    r.add_argument("--jobs", type=int, default=None,
                   help="local worker processes (default: 1 on the CPU, GPUs x --cells-per-gpu with GPUs)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:0,cuda:1")
    r.add_argument("--cells-per-gpu", type=int, default=1, metavar="K",
                   help="cells sharing one GPU at once (a small model does not fill a large GPU)")
    r.add_argument("--executor", choices=["local", "dask", "slurm", "pbs"], default="local",
                   help="local processes, an existing dask cluster (--scheduler), or SLURM/PBS batch jobs")
    r.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask scheduler address for --executor dask, e.g. tcp://head-node:8786")
    r.add_argument("--out", type=Path, default=None, help="results folder (default results/<protocol>)")
    r.add_argument("--data-root", type=Path, default=None, help="folder holding the real datasets")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bar (for logs and batch jobs); the summary lines are still printed")
    r.add_argument("--rerun", choices=["failed", "all"], default="failed",
                   help="failed: compute cells without a finished row (default); all: recompute every cell")
    r.add_argument("--dry-run", action="store_true",
                   help="print the grid (cells by dataset x method), what the store already holds and an "
                        "estimated time; run nothing, write nothing")
    r.add_argument("--mlflow", default=None, metavar="URI",
                   help="also log each stored cell as an MLflow run (a tracking URI, or a folder: a "
                        "SQLite store FOLDER/mlflow.db is made in it); needs "
                        "pip install \"fsad-bench[mlflow]\"")
    r.add_argument("--mlflow-experiment", default=None, metavar="NAME",
                   help="MLflow experiment (default: 'fsad-bench PROTOCOL /abs/out/folder')")
    cl = r.add_argument_group("batch jobs (--executor slurm | pbs, through dask-jobqueue)")
    cl.add_argument("--queue", default=None, help="SLURM partition / PBS queue")
    cl.add_argument("--account", default=None, help="account (project) charged for the jobs")
    cl.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per job; 0 = CPU-only (default 1)")
    cl.add_argument("--walltime", default="04:00:00", help="per job, HH:MM:SS (default 04:00:00)")
    cl.add_argument("--cluster-jobs", type=int, default=1, help="batch jobs to start (default 1)")
    cl.add_argument("--cores", type=int, default=4, help="CPU cores per job (default 4)")
    cl.add_argument("--memory", default="32GB", help="memory per job (default 32GB)")

    rep = sub.add_parser("report", help="tables from a results folder or a long-form CSV",
                         description="Every protocol of a results folder in its paper layout (tables, "
                                     "statistics, figures), or the same tables from a long-form CSV.")
    rep.add_argument("folder", nargs="?", type=Path, metavar="DIR",
                     help="results folder written by 'fsad-bench run' (holds results.sqlite)")
    rep.add_argument("--from-csv", type=Path, default=None,
                     help="long-form CSV with columns dataset,category,method,seed,auc_roc")
    rep.add_argument("--format", choices=["markdown", "latex", "csv", "html", "parquet"], default="markdown",
                     help="html: one self-contained file (default DIR/report.html) with tables and figures; "
                     "parquet: one row per ok cell, as --long (default DIR/cells.parquet; needs the "
                     "'parquet' extra)")
    rep.add_argument("--long", action="store_true",
                     help="with --format csv: one row per ok cell (both AUCs, every setting and "
                     "configuration column) instead of the tables; reads back with --from-csv")
    rep.add_argument("--per-image", action="store_true",
                     help="with --format csv or parquet: one row per (ok cell, test image): the cell, the "
                     "image's file, label, score and rank in its cell (1 = most anomalous); parquet's "
                     "default file is DIR/images.parquet")
    rep.add_argument("--metric", choices=["auc_roc", "auc_pr"], default="auc_roc",
                     help="image-level metric of the tables: AUC-ROC (default) or AUC-PR")
    rep.add_argument("--compare-paper", action="store_true",
                     help="put each of our cells beside the paper's published number (results/paper/)")
    rep.add_argument("--output", "-o", type=Path, default=None, help="write to a file instead of stdout")

    ls = sub.add_parser("list", help="detectors, protocols and datasets",
                        description="The detectors (with broken plugins and name clashes), the packaged "
                                    "protocols and the datasets, each present or missing.")
    ls.add_argument("--data-root", type=Path, default=None,
                    help="folder holding the datasets (default: $FSAD_DATA, then the per-user data folder)")

    b = sub.add_parser("bench", help="training/evaluation throughput and memory per method; the default "
                       "grid's wall time",
                       description="Training and evaluation images/s and peak memory per method and "
                                   "budget on this device (the authors'-style reference pipeline: "
                                   "benchmarks/reference_pipeline.py).")
    b.add_argument("--methods", type=_csv_list, default=None,
                   help="comma-separated names or package.module:Class paths (default: the protocol's)")
    b.add_argument("--protocol", default="q1",
                   help="whose default methods are measured (packaged name or .toml path; default q1)")
    b.add_argument("--budgets", type=_csv_list, default=["quick"], help="e.g. quick,paper")
    b.add_argument("--steps", type=int, default=10, help="timed training steps per phase")
    b.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    b.add_argument("--eval-images", type=int, default=128, help="images scored in the eval timing")
    b.add_argument("--repeats", type=int, default=1, help="repeat each measurement, report the median")
    b.add_argument("--device", default="auto",
                   help="auto (a GPU if there is one, else the CPU) | cpu | cuda | cuda:N (default auto)")
    b.add_argument("--amp-bf16", action="store_true", help="bf16 autocast (methods with the option)")
    b.add_argument("--channels-last", action="store_true", help="channels_last (methods with the option)")
    b.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    b.add_argument("--grid", action="store_true",
                   help="also time 'fsad-bench run --protocol P --methods all' in a temporary folder")
    add_data_parser(sub)
    return p


def run_request(args: argparse.Namespace) -> RunRequest:
    """The parsed ``run`` arguments as the API's RunRequest (every flag passes through here)."""
    from fsad_bench.runner.executors import ClusterOptions, ExecConfig
    from fsad_bench.runner.request import RunRequest

    execution = ExecConfig(args.executor, args.jobs, args.device, args.cells_per_gpu, args.scheduler,
                           ClusterOptions(args.queue, args.account, args.gpus_per_job, args.walltime,
                                          args.cluster_jobs, args.cores, args.memory))
    return RunRequest(protocol=args.protocol, methods=args.methods, datasets=args.datasets, seeds=args.seeds,
                      budget=args.budget, weights=args.weights, overrides=args.overrides,
                      data_root=args.data_root, out=args.out, execution=execution,
                      progress=not args.no_progress, mlflow=args.mlflow,
                      mlflow_experiment=args.mlflow_experiment, argv=getattr(args, "argv", None) or sys.argv,
                      rerun=args.rerun)


def cmd_run(args: argparse.Namespace) -> int:
    from fsad_bench.api import execute, plan

    req = run_request(args)
    if args.dry_run:
        sys.stdout.write(plan(req).text())
        return 0
    outcome = execute(req)
    summary = outcome.summary
    if summary.stopped:
        return 1
    user_errors = [f for f in summary.failed if f.user_error]
    if user_errors:
        raise UserError(f"{len(user_errors)} cell(s) failed on bad input, first: {user_errors[0].error}")
    return 1 if summary.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from fsad_bench.report.compare import comparison_part
    from fsad_bench.report.document import folder_report
    from fsad_bench.report.export import long_csv, long_frame, per_image_frame, read_long_csv, write_parquet
    from fsad_bench.report.layouts import protocol_report
    from fsad_bench.report.results import read_results
    from fsad_bench.report.tables import run_header
    from fsad_bench.upgrade import describe_old_store, presentation_of

    if args.long and args.format != "csv":
        raise UserError(f"--long is for --format csv (got --format {args.format}; parquet is always one row "
                        "per cell)")
    if args.from_csv and args.folder:
        raise UserError(f"report takes a results folder or --from-csv FILE, not both (got {args.folder} and "
                        f"--from-csv {args.from_csv}): give one of them")
    if args.per_image and (args.format not in ("csv", "parquet") or args.long or args.from_csv):
        raise UserError("--per-image exports a results folder's test images: give DIR with --format csv or "
                        "parquet, without --long or --from-csv")
    if args.from_csv:
        if args.format == "html":
            raise UserError("--format html needs a results folder (it embeds run settings and figures)")
        if args.long or args.format == "parquet":
            raise UserError("--long and --format parquet export a results folder's cells: give DIR, not "
                            "--from-csv")
        df, protocol = read_long_csv(args.from_csv, args.metric)
        # a --long export names its protocol; any other CSV is laid out as Table 2 (Q1) results
        pres = presentation_of(protocol or "q1", sorted(set(df.method)))
        header = [f"source: {args.from_csv}"]
        if {"budget", "img_size", "weights"} <= set(df.columns):
            header += run_header(df, pres)
        text = protocol_report(df, pres, args.format, args.metric, header)
        if args.compare_paper:
            text += "\n" + comparison_part(df, pres, args.format).body
    elif args.folder:
        try:
            results = read_results(args.folder, describe_old_store(args.folder))
        except sqlite3.DatabaseError as exc:  # e.g. a results.sqlite that is no SQLite file
            raise UserError(f"cannot read the results store in {args.folder}: {exc}") from None
        if args.per_image or args.long or args.format == "parquet":
            if args.per_image:
                frame, notes = per_image_frame(results)
                note = "; ".join([f"{len(frame)} test images of {frame.key.nunique()} ok cells exported",
                                  *notes])
            else:
                frame, left_out = long_frame(results)
                note = f"{len(frame)} ok cells exported" + (
                    f"; {left_out} failed or not applicable cell(s) left out (fsad-bench report "
                    f"{args.folder} lists them)" if left_out else "")
            if args.format == "parquet":
                default = "images.parquet" if args.per_image else "cells.parquet"
                output = args.output or args.folder / default
                write_parquet(frame, output)
                print(f"{note}; written to {output}", file=sys.stderr)
                return 0
            print(note, file=sys.stderr)
            text = long_csv(frame)
        else:
            text = folder_report(results, args.format, args.metric, args.compare_paper)
    else:
        raise UserError("report needs a results folder or --from-csv FILE")
    output = args.output
    if output is None and args.format == "html":
        output = args.folder / "report.html"
    if output:
        try:
            output.write_text(text)
        except OSError as exc:
            raise UserError(f"cannot write the report to {output}: {exc.strerror or exc}; -o FILE writes it "
                            "elsewhere") from None
        print(f"report written to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fsad_bench.data.registry import all_datasets, dataset_dir, is_present
    from fsad_bench.detectors.registry import available_detectors, detector_clashes
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
    for clash in detector_clashes():
        print(f"  CLASH: {clash.message}")
    print("protocols:")
    for name in packaged_protocols():
        spec = load_protocol(name)
        print(f"  {name:10s} {spec.title}  (default budget: {spec.default_budget})")
    root = data_root(args.data_root)
    print(f"datasets (data root {root}):")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datasets = all_datasets(args.data_root)
    for name, info in datasets.items():
        if name == "synthetic":
            print(f"  {name:12s} present (embedded, generated on first use)")
            continue
        present = is_present(name, args.data_root)
        where = dataset_dir(name, args.data_root) if present or info.kind != "plugin" else "(plugin)"
        origin = f"source: {info.source}" if info.kind == "builtin" else f"{info.kind} dataset: {info.source}"
        print(f"  {name:12s} {'present' if present else 'missing':8s} {where}  {origin}")
    for w in caught:
        print(f"  WARNING: {w.message}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fsad_bench.bench import BenchSettings, run_bench

    settings = BenchSettings(methods=args.methods, budgets=args.budgets, steps=args.steps, warmup=args.warmup,
                             device=args.device, eval_images=args.eval_images, amp_bf16=args.amp_bf16,
                             channels_last=args.channels_last, repeats=args.repeats, protocol=args.protocol)
    run_bench(settings, args.grid, args.json)
    return 0


COMMANDS = {"run": cmd_run, "report": cmd_report, "list": cmd_list, "bench": cmd_bench, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = ["fsad-bench", *(sys.argv[1:] if argv is None else argv)]  # for the run manifest
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
