"""What the benchmark report says, independent of its format: an overview and the tables
(the results tables themselves: `dmlkit.protocol.compare`)."""

from __future__ import annotations

import math
from typing import Any

from dmlkit.protocol.table import Table, cell, finite


def search_table(results: dict[str, Any]) -> Table:
    """One row per method: the best trial's validation MAP@R (bold: the best), trials finished
    (pruned), and the time of the search (all trials, whichever invocation ran them) and of
    the last final stage (reused runs cost nothing)."""
    rows, values = [], []
    for name, r in results["methods"].items():
        search, counts = r["search"], r["search"]["counts"]
        rows.append([name, cell(search["best_value"]),
                     f"{counts['complete'] + counts['pruned']} ({counts['pruned']})",
                     f"{search['seconds']:.0f}", f"{r['final']['seconds']:.0f}"])
        values.append(search["best_value"] if finite(search["best_value"]) else -math.inf)
    bold = [[False, v == max(values) and math.isfinite(v), False, False, False]
            for v in values]
    return Table(["method", "val MAP@R (best trial)", "trials (pruned)", "search (s)",
                  "final (s)"], rows, bold)


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
                  "test metrics of the validation-selected models, one value per seed "
                  "(separated: the mean of its fold models; concatenated: the fold models' "
                  "L2-normalized embeddings concatenated), mean ± 95% CI over seeds "
                  "(Student t); each method against its baseline: paired t-test over seeds"),
        ("environment", f"{env.get('platform', '?')}, {env.get('cpu_count', '?')} threads, "
                        f"CPU capability {env.get('cpu_capability', '?')}, GPU: "
                        f"{env.get('cuda') or 'none'}, torch {env.get('torch', '?')}, "
                        f"commit {env.get('git_commit') or '?'}"),
        ("command", " ".join(env.get("command", [])) or "?"),
    ]
