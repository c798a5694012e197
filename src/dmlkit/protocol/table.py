"""A text table (header, rows, bold best cells) and its number cells; rendered as Markdown
(`dmlkit.protocol.report.markdown`) and HTML (`dmlkit.protocol.report.html`)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """A header and rows of text cells; ``bold[i][j]`` marks the best value of a column."""

    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def cell(mean: float | None, half: float | None = None, digits: int = 3) -> str:
    """``"0.512 ± 0.013"``, ``"0.512"`` without a half-width, ``"-"`` when missing.

    >>> cell(0.5123, 0.0131), cell(0.5), cell(None)
    ('0.512 ± 0.013', '0.500', '-')
    """
    if not finite(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")


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
