"""The benchmark report as Markdown; figures are PNG files beside it."""

from __future__ import annotations

from typing import Any

from dmlkit.protocol.compare import compare_markdown, comparison
from dmlkit.protocol.report.content import overview, params_table, search_table
from dmlkit.protocol.report.figures import Figure
from dmlkit.protocol.table import markdown_table

REPORT_METRICS = [("map_at_r", "MAP@R"), ("precision_at_1", "P@1"), ("r_precision", "R-Prec")]


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
