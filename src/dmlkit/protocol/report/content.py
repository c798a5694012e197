"""What the benchmark report says, independent of its format: an overview and the tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

METRICS = [("map_at_r", "MAP@R"), ("precision_at_1", "P@1"), ("r_precision", "R-Prec")]
MODES = [("separated", "sep."), ("concatenated", "concat.")]


@dataclass(frozen=True)
class Table:
    """A header and rows of text cells; ``bold[i][j]`` marks the best value of a column."""

    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _cell(mean: float | None, half: float | None = None, digits: int = 3) -> str:
    """``"0.512 ± 0.013"``, ``"0.512"`` without a half-width, ``"-"`` when missing."""
    if not _finite(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")


def _untrained_cell(untrained: dict[str, Any] | None) -> str:
    """``"sep. / concat."`` MAP@R of the models at initialization; ``"-"`` when not measured."""
    if not untrained:
        return "-"
    separated = [m["map_at_r"] for m in untrained["separated"]]
    return (f"{_cell(sum(separated) / len(separated))} / "
            f"{_cell(untrained['concatenated']['map_at_r'])}")


def results_table(results: dict[str, Any]) -> Table:
    """One row per method: test metrics (mean ± 95% CI) separated and concatenated, the best
    trial's validation MAP@R, the test MAP@R of the seed-0 fold models at initialization
    (separated mean / concatenated), with a frozen backbone (any method) the test MAP@R of its
    features themselves, trials finished (pruned), and the time of the search (all trials,
    whichever invocation ran them) and of the last final stage (reused runs cost nothing).

    The best mean of each metric column is bold.
    """
    header = ["method"] + [f"{h} ({m})" for _, m in MODES for _, h in METRICS]
    frozen = any("pretrained_features" in r["final"] for r in results["methods"].values())
    header += ["val MAP@R", "untrained MAP@R (sep. / concat.)"]
    header += ["pretrained features MAP@R"] if frozen else []
    header += ["trials (pruned)", "search (s)", "final (s)"]
    rows, means = [], []
    for name, r in results["methods"].items():
        summary = r["final"]["summary"]
        cells, row_means = [name], []
        for mode, _ in MODES:
            for key, _ in METRICS:
                mean, half = summary[mode].get(key, [None, None])
                cells.append(_cell(mean, half))
                row_means.append(mean)
        search = r["search"]
        counts = search["counts"]
        cells += [_cell(search["best_value"]), _untrained_cell(r["final"].get("untrained"))]
        if frozen:
            cells.append(_cell((r["final"].get("pretrained_features") or {}).get("map_at_r")))
        cells += [f"{counts['complete'] + counts['pruned']} ({counts['pruned']})",
                  f"{sum(t['seconds'] or 0.0 for t in search['trials']):.0f}",
                  f"{r['final']['seconds']:.0f}"]
        row_means.append(search["best_value"])
        rows.append(cells)
        means.append(row_means)
    bold = [[False] * len(header) for _ in rows]
    for j in range(len(means[0]) if means else 0):
        column = [m[j] if _finite(m[j]) else -math.inf for m in means]
        for i, v in enumerate(column):
            bold[i][j + 1] = v == max(column) and math.isfinite(v)
    return Table(header, rows, bold)


def params_table(results: dict[str, Any]) -> Table:
    """The selected hyperparameters of each method."""
    rows = []
    for name, r in results["methods"].items():
        params = r["final"]["params"]
        text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in params.items()) or "(fixed: no search space)"
        rows.append([name, r["preset"], text])
    return Table(["method", "preset", "selected hyperparameters"], rows,
                 [[False] * 3 for _ in rows])


def overview(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) lines: dataset, protocol, search, final stage, environment, command."""
    b = results["benchmark"]
    env = results.get("environment", {})
    datasets = sorted({r["dataset"] for r in results["methods"].values()})
    prune = ("never" if b["prune_after"] is None
             else f"median rule after {b['prune_after']} trials")
    return [
        ("benchmark", b["name"]),
        ("dataset", f"{', '.join(datasets)}: classes sorted, first half train+val, second "
                    "half test (class-disjoint)"),
        ("cross-validation", f"{b['folds']} class-disjoint folds of the train+val classes "
                             "(contiguous class ranges); fold k validates on range k"),
        ("search", f"{b['trials']} trials per method, {b['sampler']} sampler (seed "
                   f"{b['seed']}), objective: mean over folds of the best validation MAP@R "
                   f"(early stopping by validation MAP@R); pruning: {prune}"),
        ("final", f"best configuration retrained on every fold with {b['seeds']} seed(s); "
                  "test metrics of the validation-selected models. Separated: mean ± 95% CI "
                  "over all fold models; concatenated: the fold models' L2-normalized "
                  "embeddings concatenated, mean ± 95% CI over seeds"),
        ("environment", f"{env.get('platform', '?')}, {env.get('cpu_count', '?')} threads, "
                        f"GPU: {env.get('cuda') or 'none'}, torch "
                        f"{env.get('packages', {}).get('torch', '?')}"),
        ("command", " ".join(env.get("command", [])) or "?"),
    ]
