"""The benchmark report as one self-contained HTML page (figures inline as base64 PNG)."""

from __future__ import annotations

import base64
import html
from typing import Any

from dmlkit.protocol.compare import caption, compare_table, comparison
from dmlkit.protocol.report.content import overview, params_table, search_table
from dmlkit.protocol.report.figures import Figure
from dmlkit.protocol.report.markdown import REPORT_METRICS
from dmlkit.protocol.table import Table

_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
table.numbers td:not(:first-child) { text-align: right; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #ddd; }
li { margin: 0.2em 0; }
"""


def html_table(table: Table, css_class: str = "") -> str:
    """``<table>`` with bold best cells.

    >>> html_table(Table(["a"], [["<x>"]], [[True]]))
    '<table class=""><tr><th>a</th></tr>\\n<tr><td><b>&lt;x&gt;</b></td></tr></table>'
    """
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header) + "</tr>"
    rows = []
    for row, bold in zip(table.rows, table.bold, strict=True):
        cells = [f"<b>{html.escape(c)}</b>" if b else html.escape(c)
                 for c, b in zip(row, bold, strict=True)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="{css_class}">' + "\n".join([head, *rows]) + "</table>"


def render_html(results: dict[str, Any], figures: list[Figure]) -> str:
    """The same content as the Markdown report, in one file with no external resources."""
    title = html.escape(f"Benchmark {results['benchmark']['name']}")
    parts = [f"<h1>{title}</h1>", "<ul>"]
    parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in overview(results)]
    parts.append("</ul>")
    data = comparison(results)
    for metric, name in REPORT_METRICS:
        parts += [f"<h2>Test {name}</h2>", html_table(compare_table(data, metric), "numbers"),
                  f"<p>{html.escape(caption(data, metric))}</p>"]
    parts += ["<h2>Search</h2>", html_table(search_table(results), "numbers"),
              "<h2>Selected hyperparameters</h2>", html_table(params_table(results))]
    for f in figures:
        uri = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
        parts += [f"<h2>{html.escape(f.title)}</h2>", f"<p>{html.escape(f.caption)}</p>",
                  f'<img src="{uri}" alt="{html.escape(f.title)}">']
    head = ('<meta charset="utf-8"><link rel="icon" href="data:,">'
            f"<title>{title}</title><style>{_STYLE}</style>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head><body>\n'
            + "\n".join(parts) + "\n</body></html>\n")
