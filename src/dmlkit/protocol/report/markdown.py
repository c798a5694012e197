"""The benchmark report as Markdown; figures are PNG files beside it."""

from __future__ import annotations

from typing import Any

from dmlkit.protocol.report.content import Table, overview, params_table, results_table
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


def render_markdown(results: dict[str, Any], figures: list[Figure], figure_dir: str) -> str:
    """The report: overview, results, selected hyperparameters, then the figures."""
    lines = [f"# Benchmark {results['benchmark']['name']}", ""]
    lines += [f"- **{label}**: {text}" for label, text in overview(results)]
    lines += ["", "## Results (test classes; mean ± 95% CI; best in bold)", ""]
    lines += markdown_table(results_table(results))
    lines += ["", "## Selected hyperparameters", ""]
    lines += markdown_table(params_table(results))
    for f in figures:
        lines += ["", f"## {f.title}", "", f.caption, "",
                  f"![{f.title}]({figure_dir}/{f.name}.png)"]
    return "\n".join(lines) + "\n"
