"""A run's report: ``report.md`` and the same as one self-contained ``report.html``, with the
test metrics and plots of ``metrics.csv``.

Plots: training losses, validation metrics (when validated), and method statistics logged
per epoch (MDR's levels trajectory and batch-distance statistics). Epochs are ticked at whole
numbers, legends sit beside the axes, and series with identical values are drawn once under
their names joined by `` = `` (e.g. ``train_loss = train_triplet`` for a method whose only
term is the loss).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
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


def distinct_series(series: dict[str, list[float]]) -> dict[str, list[float]]:
    """``series`` with each run of identical values kept once, under the names joined by `` = ``.

    >>> distinct_series({"loss": [1.0, 0.5], "triplet": [1.0, 0.5], "mdr": [0.1, 0.2]})
    {'loss = triplet': [1.0, 0.5], 'mdr': [0.1, 0.2]}
    """
    merged: dict[str, list[float]] = {}
    for name, values in series.items():
        key = [v if not math.isnan(v) else None for v in values]
        same = next((k for k, v in merged.items()
                     if [x if not math.isnan(x) else None for x in v] == key), None)
        if same is None:
            merged[name] = values
        else:
            merged[f"{same} = {name}"] = merged.pop(same)
    return merged


def _plot(path: Path, epochs: list[float], series: dict[str, list[float]], title: str) -> None:
    from matplotlib.figure import Figure  # imported on use; no pyplot, no global backend
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.5, 3.5))
    ax = fig.subplots()
    for name, values in distinct_series(series).items():
        ax.plot(epochs, values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def _rows(results: dict[str, dict]) -> list[list[str]]:
    """Header, then one row per named result: one column per metric of `COLUMNS`."""
    rows = [["model", *(h for _, h in COLUMNS)]]
    for key, value in results.items():
        cells = [value.get(k) for k, _ in COLUMNS]
        rows.append([key, *("-" if c is None else f"{c:.4f}" for c in cells)])
    return rows


def _table(results: dict[str, dict]) -> list[str]:
    """A markdown table of `_rows`."""
    head, *body = _rows(results)
    return ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1),
            *("| " + " | ".join(r) + " |" for r in body)]


_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; }
td:not(:first-child) { text-align: right; }
th { background: #f0f0f0; }
.wide { overflow-x: auto; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _html(title: str, sections: list[tuple[str, dict[str, dict] | Path]]) -> str:
    """One page: per section a heading and a table (results by name) or an inline PNG."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, Path):
            uri = "data:image/png;base64," + base64.b64encode(body.read_bytes()).decode("ascii")
            parts.append(f'<img src="{uri}" alt="{html.escape(heading)}">')
            continue
        head, *rows = _rows(body)
        cells = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
        cells += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                  for r in rows]
        parts.append('<div class="wide"><table>' + "\n".join(cells) + "</table></div>")
    head = ('<meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head><body>\n'
            + "\n".join(parts) + "\n</body></html>\n")


def write_run_report(run_dir: Path) -> Path:
    """Write ``report.md``, ``report.html`` (the same, self-contained) and PNG plots into
    ``run_dir``; returns the Markdown report's path."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = {k: v for k, v in metrics.items()
            if isinstance(v, dict) and "map_at_r" in v and k != "best_val"}
    title = f"Run {run_dir.name}"
    lines = [f"# {title}", "", "## Test metrics", "", *_table(test)]
    sections: list[tuple[str, dict[str, dict] | Path]] = [("Test metrics", test)]
    best = metrics.get("best_val")
    if best:
        heading = f"Validation: the best epoch ({best.get('epoch')}), by MAP@R"
        lines += ["", f"## {heading}", "", *_table({"best_val": best})]
        sections.append((heading, {"best_val": best}))
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
                sections.append((name.replace("_", " "), run_dir / f"{name}.png"))
    (run_dir / "report.html").write_text(_html(title, sections))
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
