"""Rich tables of metrics."""

from __future__ import annotations

import math

from rich.table import Table

from dmlkit.evaluation.metric_names import COLUMNS


def metrics_table(rows: dict[str, dict[str, float]], title: str = "test metrics") -> Table:
    """One row per named result (e.g. untrained / trained), one column per metric present."""
    present = [(k, h) for k, h in COLUMNS if any(k in r for r in rows.values())]
    extra = sorted({k for r in rows.values() for k in r if isinstance(r[k], float)}
                   - {k for k, _ in present} - {"recall_at_1"})
    table = Table(title=title)
    table.add_column("model", no_wrap=True, min_width=9)
    for _, header in present:
        table.add_column(header, justify="right")
    for k in extra:
        table.add_column(k, justify="right")
    for name, r in rows.items():
        cells = [r.get(k) for k, _ in present] + [r.get(k) for k in extra]
        table.add_row(name, *("-" if v is None or (isinstance(v, float) and math.isnan(v))
                              else f"{v:.3f}" for v in cells))
    return table
