"""Rendering report sections as one self-contained HTML page (figures inlined as PNG)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .section import Section

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #1d2330; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccd; margin-top: 2em; }
nav a { margin-right: 1em; } .meta { color: #556; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
td, th { border: 1px solid #ccd; padding: 3px 8px; text-align: right; }
th { background: #eef; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #445; font-size: 13px; }
"""


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def table_html(rows: list[dict], caption: str = "") -> str:
    """An HTML table of dicts (columns: the first row's keys)."""
    if not rows:
        return ""
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def figure_html(path: Path, caption: str) -> str:
    """A figure with the PNG at `path` inlined as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)} <code>{html.escape(path.name)}</code>"
        "</figcaption></figure>"
    )


def render(title: str, meta: list[str], sections: list[Section], out: Path) -> str:
    """The page: title, a line of facts, a table of contents, then each section's text,
    tables and figures (files relative to `out`)."""
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "".join(f"<div class='meta'>{html.escape(m)}</div>" for m in meta),
        f"<nav>{nav}</nav>",
    ]
    for s in sections:
        parts.append(f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2>")
        parts.extend(f"<p>{html.escape(p)}</p>" for p in s.text)
        for caption, rows in s.tables:
            parts.append(table_html(rows, caption))
        for name, caption in s.figures:
            parts.append(figure_html(out / name, caption))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
