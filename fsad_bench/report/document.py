"""``fsad-bench report DIR``: every protocol found in a results folder, in its paper layout, with the
statistics beyond the paper, the comparison with the published numbers (``--compare-paper``), the
figures and the failed cells, rendered as Markdown, LaTeX, CSV or one self-contained HTML file."""

from __future__ import annotations

import html
import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from fsad_bench import __version__
from fsad_bench.report.compare import PAPER_TABLES, comparison_part
from fsad_bench.report.figures import heatmap_panels, localisation_f1_curve
from fsad_bench.report.html import Section, build_html
from fsad_bench.report.layouts import protocol_parts
from fsad_bench.report.presentation import budget_note, report_spec
from fsad_bench.report.render import Part
from fsad_bench.report.tables import load_long, run_header
from fsad_bench.store import ResultStore

MANIFEST_NAME = "run_manifest.json"


def _lines(lines: list[str], fmt: str) -> str:
    if fmt == "html":
        return "".join(f'<p class="note">{html.escape(s)}</p>' for s in lines)
    prefix = {"latex": "% ", "csv": "# "}.get(fmt, "> ")
    return "\n".join(prefix + s for s in lines) + "\n"


def protocol_order(protocols: list[str]) -> list[str]:
    """The paper's order: q1, q2, ... by number (Tables 2-5, then Figs. 7 and 8), then the other
    protocols (the K sweep of Fig. 6, one's own specs) by name."""
    def key(name: str) -> tuple[int, int, str]:
        numbered = re.fullmatch(r"q(\d+)", name)
        return (0, int(numbered.group(1)), name) if numbered else (1, 0, name)

    return sorted(protocols, key=key)


def collect_sections(folder: Path, fmt: str, metric: str, compare_paper: bool
                     ) -> tuple[list[Section], pd.DataFrame]:
    """The report of a folder, one section per protocol in :func:`protocol_order`, and its cells that
    are not ok (failed / not applicable)."""
    df, not_ok = load_long(folder, metric)
    frames = {metric: df}  # one read of the store per metric, shared by all protocols

    def frame(m: str, protocol: str) -> pd.DataFrame:
        if m not in frames:
            frames[m] = load_long(folder, m)[0]
        return frames[m][frames[m].protocol == protocol]

    fig_dir = folder / "figures"
    sections: list[Section] = []
    for protocol in protocol_order(list(df.protocol.unique())):
        spec = report_spec(protocol)
        parts: list[Part] = []
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
        budgets = sorted({b for b in df[df.protocol == protocol].budget if isinstance(b, str)})
        sections.append(Section(protocol, spec.title, parts, budgets))
    return sections, not_ok


def localisation_part(folder: Path, protocol: str, fmt: str) -> Part:
    """Figs. 4 and 5 of a localisation run."""
    spec = report_spec(protocol)
    with ResultStore(folder) as store:
        df = store.dataframe(with_blobs=True)
    df = df[(df.protocol == protocol) & (df.status == "ok")]
    budget = budget_note(df.budget)
    paths = (localisation_f1_curve(df, folder / "figures", spec, budget)
             + heatmap_panels(df, folder / "figures", spec, budget))
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
            rows += [(f"manifest: {k}", v) for k, v in _flatten(data)]
    rows.append(("report made by", f"fsad-bench {__version__}, Python {platform.python_version()}, "
                                   f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}"))
    return rows


def _flatten(data: object, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Key/value lines of a JSON manifest (two levels, deeper values as JSON text; nothing is cut:
    the HTML report shows the settings collapsed, so length costs nothing there)."""
    if isinstance(data, dict) and depth < 2:
        out = []
        for k, v in data.items():
            out += _flatten(v, f"{prefix}{k}." if depth < 1 else f"{prefix}{k} ", depth + 1)
        return out
    return [(prefix.rstrip(". "), data if isinstance(data, str) else json.dumps(data, default=str))]


def banner_lines(sections: list[Section]) -> list[str]:
    """The budget(s) of the whole report and whether its numbers are comparable with the paper; one
    more line per protocol when the protocols ran at different budgets."""
    lines = [budget_note([b for s in sections for b in s.budgets])]
    if len({tuple(s.budgets) for s in sections}) > 1:
        lines += [f"{s.protocol}: {budget_note(s.budgets)}" for s in sections]
    return lines


def folder_report(folder: Path, fmt: str, metric: str = "auc_roc", compare_paper: bool = False) -> str:
    """The report of a results folder as one text in ``fmt``."""
    sections, not_ok = collect_sections(folder, fmt, metric, compare_paper)
    parts = [p for s in sections for p in s.parts]
    banner = banner_lines(sections)
    if fmt == "html":
        return build_html(f"fsad-bench report: {folder.name}", banner, sections, failed_cells(not_ok),
                          run_settings(folder))
    if fmt == "csv":
        return "\n".join(p.body for p in parts)
    if fmt == "latex":
        return "".join(f"% {line}\n" for line in banner) + "\n".join(f"% {p.title}\n{p.body}" for p in parts)
    text = "".join(f"**{line}**\n\n" for line in banner)
    text += "\n".join(f"## {p.title}\n\n{p.body}" + "".join(f"\n> figure: {f}" for f in p.figures
                                                           if f"figure: {f}" not in p.body)
                      for p in parts)
    for status, title in (("failed", "failed"), ("skipped", "not applicable")):
        rows = not_ok[not_ok.status == status]
        if len(rows):
            text += f"\n{len(rows)} {title} cell(s):\n" + "\n".join(
                f"- {cell}: {err}" for cell, err in failed_cells(rows)) + "\n"
    return text
