"""The run directory: resolved config, environment, metrics and checkpoints of one run."""

from __future__ import annotations

import csv
import json
import math
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from dmlkit import config as config_mod
from dmlkit.base import process_group
from dmlkit.base.files import atomic_write_bytes
from dmlkit.config import Config

PACKAGES = ("dmlkit", "torch", "torchvision", "timm", "pytorch-metric-learning", "faiss-cpu",
            "numpy", "scikit-learn", "optuna")


def environment(seed: int) -> dict:
    """Package versions, Python, platform, hardware and process count of this process."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = version(p)
        except PackageNotFoundError:
            versions[p] = None
    return {
        "seed": seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "world_size": process_group.info().world_size,
        "packages": versions,
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    return x


class RunDir:
    """Paths and writers of ``runs/<name>/``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, cfg: Config) -> RunDir:
        """A new run directory; an existing run is never reused (``name-2``, ``name-3``...)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = cfg.run.name or f"{cfg.data.name}-{cfg.method.label}-{stamp}"
        root = Path(cfg.run.root)
        path, n = root / name, 1
        while (path / "config.yaml").exists():
            n += 1
            path = root / f"{name}-{n}"
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        config_mod.save(cfg, run.config_path)
        run.write_json("env.json", environment(cfg.train.seed))
        return run

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_json(self, name: str, data: dict) -> None:
        blob = json.dumps(_clean(data), indent=2, sort_keys=False, allow_nan=False)
        atomic_write_bytes(self.path / name, blob.encode())

    def read_json(self, name: str) -> dict:
        return json.loads((self.path / name).read_text())

    def metrics_rows(self) -> list[dict[str, float]]:
        """The rows of ``metrics.csv`` as numbers (empty cells left out)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return []
        with path.open(newline="") as f:
            return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                    for row in csv.DictReader(f)]

    def append_metrics(self, row: dict) -> None:
        """One row of ``metrics.csv`` (columns fixed by the first row)."""
        path = self.path / "metrics.csv"
        new = not path.exists()
        fields = list(row) if new else next(csv.reader(path.open()))
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
