"""The benchmark report as Markdown; figures are PNG files beside it."""

from __future__ import annotations

from typing import Any

from dmlkit.protocol.compare import caption, compare_table, comparison
from dmlkit.protocol.report.content import Table, overview, params_table, search_table
from dmlkit.protocol.report.figures import Figure


def markdown_table(table: Table) -> list[str]:
    """GitHub table lines; bold cells wrapped in ``**``.

    >>> markdown_table(Table(["a", "b"], [["x", "1"]], [[False, True]]))
    ['| a | b |', '|---|---|', '| x | **1** |']
    """
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for row, bold in zip(table.rows, table.bold, strict=True):
        cells = [f"**{c}**" if b else c for c, b in zip(row, bold, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


REPORT_METRICS = [("map_at_r", "MAP@R"), ("precision_at_1", "P@1"), ("r_precision", "R-Prec")]


def compare_markdown(results: dict[str, Any], metric: str = "map_at_r") -> list[str]:
    """`compare_table` as Markdown lines, then its caption (what ``dmlkit compare`` prints)."""
    return [*markdown_table(compare_table(results, metric)), "", caption(results, metric)]


def render_markdown(results: dict[str, Any], figures: list[Figure], figure_dir: str) -> str:
    """The report: overview, results, selected hyperparameters, then the figures."""
    lines = [f"# Benchmark {results['benchmark']['name']}", ""]
    lines += [f"- **{label}**: {text}" for label, text in overview(results)]
    for metric, title in REPORT_METRICS:
        lines += ["", f"## Test {title}", ""]
        lines += compare_markdown(comparison(results), metric)
    lines += ["", "## Search", ""]
    lines += markdown_table(search_table(results))
    lines += ["", "## Selected hyperparameters", ""]
    lines += markdown_table(params_table(results))
    for f in figures:
        lines += ["", f"## {f.title}", "", f.caption, "",
                  f"![{f.title}]({figure_dir}/{f.name}.png)"]
    return "\n".join(lines) + "\n"
