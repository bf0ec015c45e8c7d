"""``fsad-bench report DIR``: every protocol found in a results folder, in its paper layout, with the
statistics beyond the paper, the comparison with the published numbers (``--compare-paper``), the
figures and the failed cells, rendered as Markdown, LaTeX, CSV or one self-contained HTML file (which
also shows each method's worst false positives and negatives: :mod:`fsad_bench.report.gallery`)."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from datetime import datetime, timezone

import pandas as pd

from fsad_bench import __version__
from fsad_bench.report.compare import comparison_part
from fsad_bench.report.gallery import gallery_part
from fsad_bench.report.html import Section, build_html
from fsad_bench.report.layouts import protocol_parts
from fsad_bench.report.presentation import budget_note
from fsad_bench.report.render import Part
from fsad_bench.report.results import Results
from fsad_bench.report.tables import run_header

MANIFEST_NAME = "run_manifest.json"


def collect_sections(results: Results, fmt: str, metric: str, compare_paper: bool
                     ) -> tuple[list[Section], pd.DataFrame]:
    """The report of a folder, one section per protocol (:meth:`Results.protocols`), and its cells
    that are not ok (failed / not applicable)."""
    _, not_ok = results.rows(metric)
    fig_dir = results.folder / "figures"
    sections: list[Section] = []
    for protocol in results.protocols():
        pres = results.presentations[protocol]
        layout = pres.layout
        parts: list[Part] = []
        for m in layout.metrics(metric):
            sub = results.rows(m, protocol)[0]
            parts += protocol_parts(sub, pres, fmt, m, run_header(sub, pres), fig_dir)
        blobs = _once(lambda protocol=protocol: results.ok_rows_with_blobs(protocol))
        parts += layout.extra_parts(blobs, pres, fmt, fig_dir)
        if compare_paper:
            paper_metric = layout.paper_metric if pres.spec.paper_tables else metric
            parts.append(comparison_part(results.rows(paper_metric, protocol)[0], pres, fmt))
        if fmt == "html":
            parts += [p for p in [gallery_part(blobs(), pres)] if p]
        budgets = sorted({b for b in results.cells[results.cells.protocol == protocol].budget
                          if isinstance(b, str)})
        sections.append(Section(protocol, pres.title, parts, budgets))
    return sections, not_ok


def _once(read: Callable[[], pd.DataFrame]) -> Callable[[], pd.DataFrame]:
    """``read``, reading the store at most once however often it is called."""
    memo: list[pd.DataFrame] = []

    def get() -> pd.DataFrame:
        if not memo:
            memo.append(read())
        return memo[0]

    return get


def failed_cells(not_ok: pd.DataFrame) -> list[tuple[str, str]]:
    return [(f"{r.status}: {r.dataset}/{r.category} {r.method} seed={r.seed} {r.setting}", str(r.error))
            for r in not_ok.itertuples()]


def run_settings(results: Results) -> list[tuple[str, str]]:
    """What the numbers were made with: from the store, and from the run manifest when there is one."""
    df, folder = results.cells, results.folder

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


def folder_report(results: Results, fmt: str, metric: str = "auc_roc", compare_paper: bool = False) -> str:
    """The report of a results folder as one text in ``fmt``."""
    sections, not_ok = collect_sections(results, fmt, metric, compare_paper)
    parts = [p for s in sections for p in s.parts]
    banner = banner_lines(sections)
    if fmt == "html":
        return build_html(f"fsad-bench report: {results.folder.name}", banner, sections,
                          failed_cells(not_ok), run_settings(results))
    if fmt == "csv":
        return "\n".join(p.body for p in parts)
    if fmt == "latex":
        return "".join(f"% {line}\n" for line in banner) + "\n".join(f"% {p.title}\n{p.body}" for p in parts)
    text = "".join(f"**{line}**\n\n" for line in banner)
    text += "\n".join(f"## {p.title}\n\n{p.body}" + "".join(f"\n> figure: {f}" for f in p.figures
                                                           if f"figure: {f}" not in p.body)
                      + ("\n" if not p.body.endswith("\n") or p.figures else "") for p in parts)
    for status, title in (("failed", "failed"), ("skipped", "not applicable")):
        rows = not_ok[not_ok.status == status]
        if len(rows):
            text += f"\n{len(rows)} {title} cell(s):\n" + "\n".join(
                f"- {cell}: {err}" for cell, err in failed_cells(rows)) + "\n"
    return text
