"""Rich tables of metrics."""

from __future__ import annotations

import math
import re

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from dmlkit.evaluation.metric_names import COLUMNS, OPTIONAL_HEADERS

_AT_K = {"recall_at_": "R@", "map_at_": "MAP@", "precision_at_": "P@"}


def header(key: str) -> str:
    """A metric's column header: ``P@1``, ``MAP@R``; ``map_at_5`` -> ``MAP@5``.

    >>> header("map_at_5"), header("recall_at_16"), header("r_precision")
    ('MAP@5', 'R@16', 'R-Prec')
    """
    known = dict(COLUMNS) | OPTIONAL_HEADERS
    if key in known:
        return known[key]
    for prefix, short in _AT_K.items():
        if re.fullmatch(rf"{prefix}\d+", key):
            return short + key[len(prefix):]
    return key


def metrics_table(rows: dict[str, dict[str, float]], title: str = "test metrics",
                  transposed: bool = False) -> Table:
    """One row per named result (e.g. untrained / trained), one column per metric present;
    ``transposed``: one row per metric, one column per result (for narrow terminals)."""
    keys = [k for k, _ in COLUMNS if any(k in r for r in rows.values())]
    keys += sorted({k for r in rows.values() for k in r if isinstance(r[k], float)}
                   - set(keys) - {"recall_at_1"})
    table = Table(title=title)
    table.add_column("metric" if transposed else "model", no_wrap=True, min_width=9)
    for name in rows if transposed else map(header, keys):
        table.add_column(name, justify="right", no_wrap=True, min_width=max(5, len(name)))
    for line in keys if transposed else rows:
        cells = [r.get(line) for r in rows.values()] if transposed else [
            rows[line].get(k) for k in keys]
        table.add_row(header(line) if transposed else line,
                      *("-" if v is None or (isinstance(v, float) and math.isnan(v))
                        else f"{v:.3f}" for v in cells))
    return table


def print_metrics(console: Console, rows: dict[str, dict[str, float]],
                  title: str = "test metrics") -> None:
    """`metrics_table` on ``console``; transposed when it would not fit its width (rich would
    cut headers and values)."""
    table = metrics_table(rows, title)
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if natural > console.width:
        table = metrics_table(rows, title, transposed=True)
    console.print(table)
