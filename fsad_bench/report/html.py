"""One self-contained HTML file that opens with the results: a banner with the budget(s) (and whether
the numbers are comparable with the paper), then per protocol, in order, its tables and figures
(embedded as data URIs) and its per-image gallery, then the failed cells, and last the run settings,
collapsed and uncut.
No scripts, no external resources: it opens offline and can be mailed or attached to a paper's
supplementary material."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from fsad_bench.report.gallery import GALLERY_CSS
from fsad_bench.report.render import Part

_CSS = """
body { font-family: system-ui, -apple-system, 'DejaVu Sans', sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1a1a1a; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
.banner { border: 2px solid #b26b00; background: #fff4e0; padding: 0.5em 1em; margin: 1em 0; }
.banner p { margin: 0.2em 0; }
nav { font-size: 0.9em; } nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; min-width: 36em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e2e2e2; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #333; }
tr.rule td { border-top: 2px solid #333; }
p.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
details#settings { margin-top: 2em; } details#settings > summary { font-size: 1.3em; font-weight: 600; }
summary { cursor: pointer; }
details.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
details.note ul { margin: 0.2em 0 0.4em 0; padding-left: 1.6em; }
.settings td, .settings th { text-align: left; vertical-align: top; }
.settings td { font-family: ui-monospace, monospace; font-size: 0.85em; white-space: pre-wrap;
               overflow-wrap: anywhere; }
.failed td { text-align: left; font-family: ui-monospace, monospace; font-size: 0.85em; }
"""


@dataclass
class Section:
    """One protocol of a report: its parts (tables with their figures, statistics, comparison) and
    the budgets its cells ran at."""

    protocol: str
    title: str
    parts: list[Part]
    budgets: list[str] = field(default_factory=list)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)} (PDF beside it: "
            f"{html.escape(path.with_suffix('.pdf').name)})</figcaption></figure>")


def build_html(title: str, banner: list[str], sections: list[Section], failed: list[tuple[str, str]],
               settings: list[tuple[str, str]]) -> str:
    """The whole document. ``banner``: lines on the budgets, shown first; ``sections``: one per
    protocol, in report order, whose parts' bodies are HTML fragments (render_grid's 'html' format)
    and whose PNG figures are embedded; ``failed``: (cell, error) pairs; ``settings``: (name, value)
    pairs, shown in full inside a collapsed <details> at the end."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}{GALLERY_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", '<div class="banner" role="note">']
    out += [f"<p><strong>{html.escape(line)}</strong></p>" for line in banner]
    if failed:
        out.append(f'<p>{len(failed)} cell(s) did not finish: <a href="#failed">listed after the '
                   "results</a></p>")
    out.append("</div>")
    out.append("<nav>" + "".join(f'<a href="#{html.escape(s.protocol)}">{html.escape(s.protocol)}</a>'
                                 for s in sections)
               + '<a href="#failed">failed cells</a><a href="#settings">run settings</a></nav>')
    for s in sections:
        protocol = html.escape(s.protocol)
        out.append(f'<section id="{protocol}" data-protocol="{protocol}"><h2>{html.escape(s.title)}</h2>')
        for part in s.parts:
            if part.title != s.title:
                out.append(f"<h3>{html.escape(part.title)}</h3>")
            out.append(part.body)
            out += [_img(f) for f in part.figures if f.suffix == ".png" and f.is_file()]
        out.append("</section>")
    out.append(f'<h2 id="failed">Failed cells ({len(failed)})</h2>')
    if failed:
        out.append('<table class="failed"><thead><tr><th>cell</th><th>error</th></tr></thead><tbody>')
        out += [f"<tr><td>{html.escape(c)}</td><td>{html.escape(e)}</td></tr>" for c, e in failed]
        out.append("</tbody></table>")
    else:
        out.append("<p>none</p>")
    out.append(f'<details id="settings"><summary>Run settings ({len(settings)} entries: protocol, budget, '
               "image size, weights, devices, versions, run manifest)</summary>")
    out.append('<table class="settings"><tbody>')
    out += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in settings]
    out.append("</tbody></table></details>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
