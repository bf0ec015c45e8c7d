"""``fsad-bench report DIR``: every protocol found in a results folder, in its paper layout, with the
statistics beyond the paper, the comparison with the published numbers (``--compare-paper``), the
figures and the failed cells, rendered as Markdown, LaTeX, CSV or one self-contained HTML file."""

from __future__ import annotations

import html
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from fsad_bench import __version__
from fsad_bench.report.compare import PAPER_TABLES, compare, comparison_rows
from fsad_bench.report.figures import heatmap_panels, localisation_f1_curve
from fsad_bench.report.html import build_html
from fsad_bench.report.layouts import protocol_parts
from fsad_bench.report.presentation import report_spec
from fsad_bench.report.render import Part, render_grid
from fsad_bench.report.tables import load_long, run_header
from fsad_bench.store import ResultStore

MANIFEST_NAME = "run_manifest.json"


def comparison_part(df: pd.DataFrame, protocol: str, fmt: str) -> Part:
    """Ours beside the paper for one protocol (df: its rows, with the paper table's metric)."""
    title = f"{protocol}: ours beside the paper"
    comp = compare(df, protocol)
    if comp is None:
        return Part(title, _lines([f"the paper prints no numbers for protocol {protocol} (its results "
                                   "are figures only): nothing to compare"], fmt))
    notes = [comp.summary(),
             f"metric {comp.metric}; diff = ours - paper; ! = |diff| > 2 sd with sd = sqrt(std_ours^2 + "
             "std_paper^2) (floored at 0.0005, the published rounding); only the datasets and methods run "
             "are compared"]
    budgets = sorted(set(df.budget)) if "budget" in df.columns else []
    if budgets and budgets != ["paper"]:
        notes.append(f"ours ran at budget {', '.join(budgets)}, not the paper's settings: differences are "
                     "expected")
    if comp.unmatched_datasets:
        notes.append(f"no published numbers for: {', '.join(comp.unmatched_datasets)}")
    if comp.cells.empty:
        return Part(title, _lines(notes, fmt))
    headers, body = comparison_rows(comp, report_spec(protocol).names(comp.cells.method.unique()))
    if fmt == "csv":
        return Part(title, comp.cells.to_csv(index=False))
    return Part(title, render_grid(headers, body, fmt, notes, f"{protocol}: ours vs the paper's {comp.table}",
                                   f"tab:{protocol}-vs-paper"))


def _lines(lines: list[str], fmt: str) -> str:
    if fmt == "html":
        return "".join(f'<p class="note">{html.escape(s)}</p>' for s in lines)
    prefix = {"latex": "% ", "csv": "# "}.get(fmt, "> ")
    return "\n".join(prefix + s for s in lines) + "\n"


def collect_parts(folder: Path, fmt: str, metric: str, compare_paper: bool
                  ) -> tuple[list[Part], pd.DataFrame]:
    """All parts of a folder's report, and its cells that are not ok (failed / not applicable)."""
    df, not_ok = load_long(folder, metric)
    frames = {metric: df}  # one read of the store per metric, shared by all protocols

    def frame(m: str, protocol: str) -> pd.DataFrame:
        if m not in frames:
            frames[m] = load_long(folder, m)[0]
        return frames[m][frames[m].protocol == protocol]

    fig_dir = folder / "figures"
    parts: list[Part] = []
    for protocol in sorted(df.protocol.unique()):
        spec = report_spec(protocol)
        metrics = [metric]
        if spec.layout == "table4" and metric == "auc_roc":
            metrics = ["pixel_auc_per_image", "pixel_auc_pooled"]  # Table 4 is about localisation
        for m in metrics:
            sub = frame(m, protocol)
            parts += protocol_parts(sub, protocol, fmt, m, run_header(sub, spec), fig_dir)
        if spec.layout == "table4":
            parts.append(localisation_part(folder, protocol, fmt))
        if compare_paper:
            paper_metric = PAPER_TABLES.get(protocol, (None, metric))[1]
            parts.append(comparison_part(frame(paper_metric, protocol), protocol, fmt))
    return parts, not_ok


def localisation_part(folder: Path, protocol: str, fmt: str) -> Part:
    """Figs. 4 and 5 of a localisation run."""
    spec = report_spec(protocol)
    with ResultStore(folder) as store:
        df = store.dataframe(with_blobs=True)
    df = df[(df.protocol == protocol) & (df.status == "ok")]
    paths = localisation_f1_curve(df, folder / "figures", spec) + heatmap_panels(df, folder / "figures", spec)
    return Part(f"{protocol}: localisation figures (Figs. 4 and 5)",
                _lines([f"figure: {p}" for p in paths], fmt), paths)


def failed_cells(not_ok: pd.DataFrame) -> list[tuple[str, str]]:
    return [(f"{r.status}: {r.dataset}/{r.category} {r.method} seed={r.seed} {r.setting}", str(r.error))
            for r in not_ok.itertuples()]


def run_settings(folder: Path) -> list[tuple[str, str]]:
    """What the numbers were made with: from the store, and from the run manifest when there is one."""
    with ResultStore(folder) as store:
        df = store.dataframe()

    def values(col: str) -> str:
        return ", ".join(v for v in sorted(df[col].dropna().astype(str).unique()) if v) or "-"

    counts = df.status.value_counts().to_dict()
    rows = [("results folder", str(folder.resolve())), ("protocols", values("protocol")),
            ("budgets", values("budget")), ("image sizes", values("img_size")),
            ("weights", values("weights")),
            ("methods", values("method")), ("datasets", values("dataset")), ("seeds", values("seed")),
            ("devices", values("device")), ("fsad-bench versions of the cells", values("code_version")),
            ("cells", ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))),
            ("cells finished", f"{df.finished_at.min()} .. {df.finished_at.max()}")]
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            rows.append(("run manifest", f"unreadable: {exc}"))
        else:
            rows += [(f"manifest: {k}", v) for k, v in _flatten(data) if not k.startswith("spec")]
    rows.append(("report made by", f"fsad-bench {__version__}, Python {platform.python_version()}, "
                                   f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}"))
    return rows


def _flatten(data: object, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Key/value lines of a JSON manifest (two levels; long values cut)."""
    if isinstance(data, dict) and depth < 2:
        out = []
        for k, v in data.items():
            out += _flatten(v, f"{prefix}{k}." if depth < 1 else f"{prefix}{k} ", depth + 1)
        return out
    text = data if isinstance(data, str) else json.dumps(data, default=str)
    return [(prefix.rstrip(". "), text if len(text) <= 300 else text[:297] + "...")]


def folder_report(folder: Path, fmt: str, metric: str = "auc_roc", compare_paper: bool = False) -> str:
    """The report of a results folder as one text in ``fmt``."""
    parts, not_ok = collect_parts(folder, fmt, metric, compare_paper)
    if fmt == "html":
        return build_html(f"fsad-bench report: {folder.name}", run_settings(folder), parts,
                          failed_cells(not_ok))
    if fmt == "csv":
        return "\n".join(p.body for p in parts)
    if fmt == "latex":
        return "\n".join(f"% {p.title}\n{p.body}" for p in parts)
    text = "\n".join(f"## {p.title}\n\n{p.body}" + "".join(f"\n> figure: {f}" for f in p.figures
                                                          if f"figure: {f}" not in p.body)
                     for p in parts)
    for status, title in (("failed", "failed"), ("skipped", "not applicable")):
        rows = not_ok[not_ok.status == status]
        if len(rows):
            text += f"\n{len(rows)} {title} cell(s):\n" + "\n".join(
                f"- {cell}: {err}" for cell, err in failed_cells(rows)) + "\n"
    return text
