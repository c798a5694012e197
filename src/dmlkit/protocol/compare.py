"""Comparison tables from ``results.json`` files (``dmlkit compare``; benchmark reports).

A results file holds one record per trained model and per anchor (`dmlkit.protocol.records`);
everything here is computed from those records (`dmlkit.protocol.statistics`): per method the
test metric per seed (separated and concatenated), its mean ± 95% Student-t CI over seeds,
the untrained (and pretrained-features) anchors over the same seeds, and the paired
comparison with the method's declared baseline and its computed verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmlkit.errors import ConfigError
from dmlkit.protocol.records import SCHEMA
from dmlkit.protocol.statistics import MODES, Estimate, Paired, estimate, paired, seed_values
from dmlkit.protocol.table import Table, cell, markdown_table

METRIC_NAMES = {"map_at_r": "MAP@R", "precision_at_1": "P@1", "r_precision": "R-Prec",
                "nmi": "NMI", "ami": "AMI"}
SHORT = {"separated": "sep.", "concatenated": "concat."}


def load_results(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The results files merged: ``methods`` and ``records`` of all (method names must not
    repeat across files); one-line ConfigError for a missing or foreign file."""
    merged: dict[str, Any] = {"names": [], "methods": {}, "records": []}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"results file {p} does not exist")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ConfigError(f"{p}: not a dmlkit results file (schema {SCHEMA}); rerun "
                              "`dmlkit benchmark ... --stage report` to rewrite it")
        twice = set(data["methods"]) & set(merged["methods"])
        if twice:
            raise ConfigError(f"{p}: methods {sorted(twice)} are also in an earlier file")
        one = comparison(data)
        merged["names"] += one["names"]
        merged["records"] += one["records"]
        merged["methods"].update(one["methods"])
    return merged


def comparison(results: dict[str, Any]) -> dict[str, Any]:
    """One results file in the form the tables read (`load_results` merges several)."""
    return {"names": [results["benchmark"]["name"]], "methods": results["methods"],
            "records": results["records"]}


def method_stats(results: dict[str, Any], method: str, metric: str) -> dict[str, Any]:
    """Per mode: the method's `Estimate`, its untrained (and pretrained) anchors' and the
    `Paired` comparison with its baseline (None where missing)."""
    records = results["records"]
    baseline = results["methods"][method].get("baseline")
    out: dict[str, Any] = {"baseline": baseline}
    for mode in MODES:
        values = seed_values(records, method, "final", metric, mode)
        base = seed_values(records, baseline, "final", metric, mode) if baseline else {}
        out[mode] = {
            "seeds": values,
            "estimate": estimate(values),
            "untrained": estimate(seed_values(records, method, "untrained", metric, mode)),
            "versus": paired(values, base) if baseline else None,
        }
    out["pretrained"] = estimate(
        seed_values(records, method, "pretrained", metric, "concatenated"))
    return out


def _ci(e: Estimate | None) -> str:
    return "-" if e is None else cell(e.mean, e.half)


def _delta(c: Paired | None) -> str:
    if c is None:
        return "-"
    p = "-" if c.p is None else f"{c.p:.3g}"
    return f"{c.diff:+.3f} ± {c.half:.3f} (p = {p})"


def compare_table(results: dict[str, Any], metric: str = "map_at_r") -> Table:
    """One row per method: seeds, the metric separated and concatenated (mean ± 95% CI over
    seeds), the untrained anchor (both modes), the pretrained features (when any method has
    them), the baseline, and per mode the paired difference and its verdict. Bold: the best
    mean of each metric column."""
    name = METRIC_NAMES.get(metric, metric)
    all_stats = {m: method_stats(results, m, metric) for m in results["methods"]}
    frozen = any(s["pretrained"] is not None for s in all_stats.values())
    header = ["method", "seeds", f"{name} sep.", f"{name} concat.", "untrained sep.",
              "untrained concat."] + (["pretrained features"] if frozen else [])
    header += ["baseline", "Δ sep. (paired t)", "sep. verdict", "Δ concat. (paired t)",
               "concat. verdict"]
    rows, means = [], []
    for method, s in all_stats.items():
        sep, cat = s["separated"], s["concatenated"]
        n = max((x["estimate"].n for x in (sep, cat) if x["estimate"]), default=0)
        row = [method, str(n), _ci(sep["estimate"]), _ci(cat["estimate"]),
               _ci(sep["untrained"]), _ci(cat["untrained"])]
        row += [_ci(s["pretrained"])] if frozen else []
        row += [s["baseline"] or "-"]
        for x in (sep, cat):
            row += [_delta(x["versus"]), x["versus"].verdict if x["versus"] else "-"]
        rows.append(row)
        means.append([x["estimate"].mean if x["estimate"] else None for x in (sep, cat)])
    bold = [[False] * len(header) for _ in rows]
    for j in range(2):
        column = [m[j] for m in means if m[j] is not None]
        for i, m in enumerate(means):
            bold[i][j + 2] = m[j] is not None and m[j] == max(column)
    return Table(header, rows, bold)


def caption(results: dict[str, Any], metric: str = "map_at_r") -> str:
    """What the table shows and how it was computed (one line)."""
    name = METRIC_NAMES.get(metric, metric)
    return (f"Test {name} of {', '.join(results['names'])}: mean ± 95% CI over seeds "
            "(Student t; one value per seed: separated = mean of the seed's fold models, "
            "concatenated = the seed's concatenated embedding); untrained = the same models at "
            "initialization, same seeds. Δ = method - baseline over shared seeds, paired "
            "t-test; verdict better/worse at p < 0.05, else no evidence. Best mean in bold.")


def compare_json(results: dict[str, Any], metric: str = "map_at_r") -> dict[str, Any]:
    """The table's numbers as a JSON-ready dict."""

    def plain(x: Any) -> Any:
        if isinstance(x, Estimate | Paired):
            return x.__dict__
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        return x

    return {"benchmarks": results["names"], "metric": metric,
            "methods": {m: plain(method_stats(results, m, metric)) for m in results["methods"]}}


def compare_markdown(results: dict[str, Any], metric: str = "map_at_r") -> list[str]:
    """`compare_table` as Markdown lines, then its caption (what ``dmlkit compare`` prints)."""
    return [*markdown_table(compare_table(results, metric)), "", caption(results, metric)]
