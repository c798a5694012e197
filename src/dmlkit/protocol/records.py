"""``results.json``: a benchmark's raw results, one record per trained model and per anchor.

```json
{"schema": 2, "benchmark": {...}, "environment": {... "git_commit": "73c59dc...",
 "torch": "2.14.1", "cpu_capability": "AVX2", "gpu": null},
 "methods": {"triplet": {"preset": ..., "baseline": null, "search": {...},
                         "final": {"params": {...}, "trial": 3, "runs": [...], "seconds": 41.0}}},
 "records": [
  {"method": "triplet", "stage": "search", "trial": 0, "fold": 0, "seed": 0,
   "config_hash": "...", "train_s": 3.1, "metrics": {"map_at_r": 0.41, ...}},
  {"method": "triplet", "stage": "final", "trial": 3, "fold": 1, "seed": 2, ...},
  {"method": "triplet", "stage": "final", "trial": 3, "fold": null, "seed": 2, ...},
  {"method": "triplet", "stage": "untrained", "fold": 0, "seed": 2, ...}]}
```
Stages: ``search`` (validation metrics of a trial's fold run, seed 0), ``final`` (test metrics
of a fold model; ``fold: null`` = the seed's concatenated embedding), ``untrained`` (the same
models at initialization, per seed, separated and concatenated), ``pretrained`` (a frozen
backbone's own features, per seed). No weights: the file is small enough to commit beside
its report, and every table is recomputed from it (`dmlkit.protocol.compare`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

SCHEMA = 2  # 1: the nested per-method layout before records


def git_commit() -> str | None:
    """The commit of the dmlkit source tree (``+dirty`` with uncommitted changes), or None
    outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def provenance() -> dict[str, Any]:
    """What produced the numbers: git commit, torch version, CPU capability, GPU name."""
    import torch  # here only: reading results stays light

    return {"git_commit": git_commit(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def record(method: str, stage: str, seed: int, fold: int | None, metrics: dict[str, Any],
           **extra: Any) -> dict[str, Any]:
    """One record: the numbers of ``metrics`` only (lists and nested values left out)."""
    numbers = {k: v for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    return {"method": method, "stage": stage, "seed": seed, "fold": fold, **extra,
            "metrics": numbers}


def dumps(results: dict[str, Any]) -> str:
    """The results as JSON: indented, but each record on one line (small, diffable)."""
    records = results.get("records", [])
    head = json.dumps({k: v for k, v in results.items() if k != "records"}, indent=1)
    lines = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in records)
    return head[:-2] + ',\n "records": [\n' + lines + "\n ]\n}\n"
