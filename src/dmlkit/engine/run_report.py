"""A run's report: ``report.md`` with the test metrics and plots of ``metrics.csv``.

Plots: training losses, validation metrics (when validated), and method statistics logged
per epoch (MDR's levels trajectory and batch-distance statistics).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from dmlkit.evaluation.metric_names import COLUMNS


def _columns(path: Path) -> dict[str, list[float]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[float]] = {}
    for key in rows[0] if rows else []:
        try:
            out[key] = [float(r[key]) if r[key] not in ("", None) else float("nan") for r in rows]
        except ValueError:
            continue
    return out


def _plot(path: Path, epochs: list[float], series: dict[str, list[float]], title: str) -> None:
    from matplotlib.figure import Figure  # imported on use; no pyplot, no global backend

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for name, values in series.items():
        ax.plot(epochs, values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _table(rows: dict[str, dict]) -> list[str]:
    """A markdown table: one row per named result, one column per metric of `COLUMNS`."""
    lines = ["| model | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for key, value in rows.items():
        cells = [value.get(k) for k, _ in COLUMNS]
        lines.append(f"| {key} | " + " | ".join(
            "-" if c is None else f"{c:.4f}" for c in cells) + " |")
    return lines


def write_run_report(run_dir: Path) -> Path:
    """Write ``report.md`` (and PNG plots) into ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = {k: v for k, v in metrics.items()
            if isinstance(v, dict) and "map_at_r" in v and k != "best_val"}
    lines = [f"# Run {run_dir.name}", "", "## Test metrics", "", *_table(test)]
    best = metrics.get("best_val")
    if best:
        lines += ["", f"## Validation: the best epoch ({best.get('epoch')}), by MAP@R", "",
                  *_table({"best_val": best})]
    table = run_dir / "metrics.csv"
    cols = _columns(table) if table.is_file() else {}
    if cols.get("epoch"):
        epochs = cols["epoch"]
        groups = {
            "losses": {k: v for k, v in cols.items() if (k.startswith("train_") or
                       k == "val_loss") and k not in ("train_seconds", "train_img_per_s")},
            "validation": {k[4:]: v for k, v in cols.items() if k.startswith("val_") and
                           k[4:] in {c for c, _ in COLUMNS}},
            "mdr_levels": {k[7:]: v for k, v in cols.items()
                           if k.startswith("method_mdr_levels")},
            "mdr_statistics": {k[7:]: v for k, v in cols.items()
                               if k in ("method_mdr_mu", "method_mdr_sigma")},
        }
        lines.append("")
        for name, series in groups.items():
            if series:
                _plot(run_dir / f"{name}.png", epochs, series, name.replace("_", " "))
                lines += [f"![{name}]({name}.png)", ""]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
