"""Rendering: one table (or any grid of cells) as GitHub Markdown, LaTeX (booktabs), an HTML fragment
or long-form CSV, and :class:`Part`, one titled section of a report. Cells mark bold as ``**x**``.

The table comes first and its notes after it, in every format. In HTML, notes that hold long lists
(:class:`~fsad_bench.report.text.Folded`), a table's run settings and the notes that explain how to
read the numbers (:class:`~fsad_bench.report.text.Explained`) fold away into ``<details>``."""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from fsad_bench.report.tables import Row, Table
from fsad_bench.report.text import Explained, Folded, spread_text


@dataclass
class Part:
    """One section of a report: a title, its body in the report's format, the figures it made."""

    title: str
    body: str
    figures: list[Path] = field(default_factory=list)


def _best(row: Row) -> set[str]:
    means = {m: round(v[0], 3) for m, v in row.cells.items() if not math.isnan(v[0])}
    if not means:
        return set()
    top = max(means.values())
    return {m for m, v in means.items() if v == top}


def cell_text(row: Row, method: str, best: set[str]) -> str:
    """'mean ± std' of one cell ('mean (1 seed)' for a cell of one seed), the mean bold when best, 'NaN'
    without a mean, ' †' when it includes flagged results."""
    mean, std = row.cells[method]
    if math.isnan(mean):
        return "NaN" + row.mark(method)
    text = spread_text(mean, std, row.seeds.get(method))
    if method in best:
        number, _, rest = text.partition(" ")
        text = f"**{number}** {rest}"
    return text + row.mark(method)


def render(table: Table, fmt: str, header_lines: list[str] | None = None, caption: str = "",
           label: str = "") -> str:
    """The table in ``fmt`` (markdown | latex | html | csv): mean ± seed std, best per row in bold.
    CSV keeps numbers: ``std`` is the population std over seeds (0 for one seed) and ``n_seeds`` says
    how many seeds it is over."""
    header_lines = header_lines or []
    names = [table.names.get(m, m) for m in table.methods]
    if fmt == "csv":
        out = io.StringIO()
        recs = [{"row": r.label, "average_row": r.is_average, "method": m, "mean": v[0], "std": v[1],
                 "n_seeds": r.seeds.get(m), "flags": ";".join(r.flags.get(m, []))}
                for r in table.rows for m, v in r.cells.items()]
        recs += [{"row": label, "average_row": False, "method": m, "p_value": p}
                 for label, ps in table.pvalue_rows for m, p in ps.items() if m != table.reference]
        pd.DataFrame(recs).to_csv(out, index=False)
        return out.getvalue()
    body = []
    previous_group = None
    for r in table.rows:
        best = _best(r)
        cells = []
        for m in table.methods:
            cells.append(cell_text(r, m, best) if m in r.cells else "-")
        if table.group_headers:
            first = ["" if r.group == previous_group else r.group, "**Mean**" if r.is_average else r.label]
            previous_group = r.group
        else:
            first = [f"**{r.label}**" if r.is_average else r.label]
        body.append(first + cells)
    pad = [""] if table.group_headers else []
    for row_label, ps in table.pvalue_rows:
        body.append([row_label] + pad + [ps.get(m, "-") for m in table.methods])
    first_headers = list(table.group_headers) if table.group_headers else ["Data"]
    return render_grid(first_headers + names, body, fmt, run_settings_notes(header_lines, fmt) + table.notes,
                       caption, label, rule_before=len(table.rows))


def run_settings_notes(lines: list[str], fmt: str) -> list[str]:
    """A table's run-settings lines (budget, image size, weights, seeds, configuration) as its first
    notes; in HTML one fold whose summary is the first line."""
    if fmt != "html" or len(lines) < 2:
        return list(lines)
    return [Folded(lines[0], lines[1:], "more")]


_BOLD = re.compile(r"\*\*(.+?)\*\*")


_LATEX_SPECIAL = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "#": "\\#", "_": "\\_", "{": "\\{",
                  "}": "\\}", "$": "\\$", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
                  "±": "$\\pm$", "≥": "$\\geq$", "≤": "$\\leq$", "→": "$\\rightarrow$",
                  "†": "$^\\dagger$", "‡": "$^\\ddagger$"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_cell(text: str) -> str:
    """Escape a cell for LaTeX; **x** (our bold marker) becomes \\textbf{x}."""
    parts = _BOLD.split(text)  # odd indices are the bold parts
    return "".join(f"\\textbf{{{_latex_escape(p)}}}" if i % 2 else _latex_escape(p)
                   for i, p in enumerate(parts))


def html_cell(text: str) -> str:
    parts = _BOLD.split(text)
    return "".join(f"<b>{html.escape(p)}</b>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def render_grid(headers: list[str], body: list[list[str]], fmt: str, notes: list[str] | None = None,
                caption: str = "", label: str = "", rule_before: int | None = None) -> str:
    """One table in markdown (GitHub), LaTeX (booktabs) or an HTML fragment. Cells mark bold as **x**;
    ``rule_before`` = index of the first body row after a mid rule (the p-value rows)."""
    notes = notes or []
    if fmt == "latex":
        lines = ["% needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering"]
        if caption:
            lines.append(f"\\caption{{{_latex_escape(caption)}}}")
        if label:
            lines.append(f"\\label{{{label}}}")
        lines += ["\\begin{tabular}{l" + "c" * (len(headers) - 1) + "}", "\\toprule",
                  " & ".join(latex_cell(h) for h in headers) + " \\\\", "\\midrule"]
        for i, row in enumerate(body):
            if i == rule_before and 0 < i:
                lines.append("\\midrule")
            lines.append(" & ".join(latex_cell(c) for c in row) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"] + [f"% {n}" for n in notes]
        return "\n".join(lines) + "\n"
    if fmt == "html":
        head = "".join(f"<th>{html_cell(h)}</th>" for h in headers)
        rows = []
        for i, row in enumerate(body):
            cls = ' class="rule"' if i == rule_before and i > 0 else ""
            rows.append(f"<tr{cls}>" + "".join(f"<td>{html_cell(c)}</td>" for c in row) + "</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        return (f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
                f"{notes_html(notes)}\n")
    text = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    quoted = "\n".join(f"> {n}" for n in notes)
    return f"{text}\n\n{quoted}\n" if quoted else text + "\n"


def _fold(summary: str, items: list[str], cls: str = "note") -> str:
    listed = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    return (f'<details class="{cls}"><summary>{html.escape(summary)}</summary><ul>{listed}</ul>'
            "</details>")


def notes_html(notes: list[str]) -> str:
    """Notes as HTML: plain notes as paragraphs in order, each :class:`Folded` note as a fold of its
    items, and the :class:`Explained` notes together in one fold at the end."""
    out, explained = [], []
    for n in notes:
        if isinstance(n, Explained):
            explained.append(n)
        elif isinstance(n, Folded) and n.items:
            what = n.what[:-1] if len(n.items) == 1 and n.what.endswith("s") else n.what
            out.append(_fold(f"{n.summary} ({len(n.items)} {what})", list(n.items)))
        else:
            out.append(f'<p class="note">{html.escape(n)}</p>')
    if explained:
        n = len(explained)
        out.append(_fold(f"how to read these numbers ({n} note{'s' if n > 1 else ''})", explained))
    return "".join(out)


def notes_text(lines: list[str], fmt: str) -> str:
    """Lines of notes without a table, in the report's format."""
    if fmt == "html":
        return notes_html(lines)
    prefix = {"latex": "% ", "csv": "# "}.get(fmt, "> ")
    return "\n".join(prefix + s for s in lines) + "\n"
