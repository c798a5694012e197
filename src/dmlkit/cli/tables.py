"""Rich tables of metrics."""

from __future__ import annotations

import math

from rich.table import Table

from dmlkit.evaluation.metric_names import COLUMNS

# headers of optional metrics, shown when present
OPTIONAL_HEADERS = {"nn_accuracy": "1NN-Acc", "nn_macro_precision": "1NN-P",
                    "nn_macro_recall": "1NN-R", "nn_macro_f1": "1NN-F1"}


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
        table.add_column(OPTIONAL_HEADERS.get(k, k), justify="right")
    for name, r in rows.items():
        cells = [r.get(k) for k, _ in present] + [r.get(k) for k in extra]
        table.add_row(name, *("-" if v is None or (isinstance(v, float) and math.isnan(v))
                              else f"{v:.3f}" for v in cells))
    return table
