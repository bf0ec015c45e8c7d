"""One self-contained HTML file: run settings, every table, every figure embedded as a data URI,
and the failed cells with their errors. No scripts, no external resources: it opens offline and
can be mailed or attached to a paper's supplementary material."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from fsad_bench.report.render import Part

_CSS = """
body { font-family: system-ui, -apple-system, 'DejaVu Sans', sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1a1a1a; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e2e2e2; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #333; }
tr.rule td { border-top: 2px solid #333; }
p.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.settings td, .settings th { text-align: left; }
.failed td { text-align: left; font-family: ui-monospace, monospace; font-size: 0.85em; }
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)} (PDF beside it: "
            f"{html.escape(path.with_suffix('.pdf').name)})</figcaption></figure>")


def build_html(title: str, settings: list[tuple[str, str]], parts: list[Part],
               failed: list[tuple[str, str]]) -> str:
    """The whole document. ``parts`` bodies are HTML fragments (render_grid's 'html' format);
    their PNG figures are embedded. ``failed``: (cell, error) pairs."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", '<h2 id="settings">Run settings</h2>',
           '<table class="settings"><tbody>']
    out += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in settings]
    out.append("</tbody></table>")
    out.append("<nav><ul>" + "".join(f'<li><a href="#part{i}">{html.escape(p.title)}</a></li>'
                                     for i, p in enumerate(parts)) + "</ul></nav>")
    for i, part in enumerate(parts):
        out.append(f'<section><h2 id="part{i}">{html.escape(part.title)}</h2>')
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
    out.append("</body></html>")
    return "\n".join(out) + "\n"
