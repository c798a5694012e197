"""`Tracker`: the loggers of ``run.loggers`` fed from a run directory.

Per-epoch values come from ``metrics.csv`` (step = epoch), after the epoch's checkpoint, so a
tracker never holds an epoch that a resumed run recomputes; what a crash kept from the
trackers is caught up on the next open (`Logger.logged`). At the end: ``metrics.json``'s
test metrics (``final/map_at_r``, ``untrained/...``, ``best_val/...``; step = epochs
trained), and the report, plots and tables as files.
"""

from __future__ import annotations

import json
from pathlib import Path

from dmlkit.config import Config, dotted
from dmlkit.engine.tracking.logger import Logger

FILES = ("report.md", "metrics.csv", "metrics.json", "config.yaml", "env.json")


def open_logger(name: str, cfg: Config, run_dir: Path) -> Logger:
    """The logger ``name`` of ``run.loggers`` for the run in ``run_dir``."""
    r = cfg.run
    if name == "tensorboard":
        from dmlkit.engine.tracking.tensorboard_logger import TensorBoardLogger

        return TensorBoardLogger(run_dir / "tensorboard")
    if name == "mlflow":
        from dmlkit.engine.tracking.mlflow_logger import MlflowLogger

        return MlflowLogger(run_dir, Path(r.root), r.tracking_uri, r.experiment, r.group)
    from dmlkit.engine.tracking.wandb_logger import WandbLogger

    return WandbLogger(run_dir, r.experiment, r.group)


class Tracker:
    """Every logger of one run (none: every call is a no-op)."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    @classmethod
    def open(cls, cfg: Config, run_dir: Path) -> Tracker:
        loggers: list[Logger] = []
        try:
            for name in cfg.run.loggers:
                loggers.append(open_logger(name, cfg, run_dir))
        except BaseException:
            cls(loggers).close(False)
            raise
        params = {k: str(v) for k, v in dotted(cfg.to_dict()).items()}
        for logger in loggers:
            logger.log_params(params)
        return cls(loggers)

    def log_epochs(self, rows: list[dict[str, float]]) -> None:
        """Every row of ``metrics.csv`` (step = its epoch) not logged yet."""
        for row in rows:
            step = int(row["epoch"])
            values = {k: v for k, v in row.items() if k != "epoch"}
            for logger in self.loggers:
                logger.log_metrics(values, step)

    def log_results(self, run_dir: Path) -> None:
        """The test metrics of ``metrics.json`` and the run's files."""
        if not self.loggers:
            return
        results = json.loads((run_dir / "metrics.json").read_text())
        step = int(results.get("epochs_trained", 0))
        values = {f"{name}/{k}": v for name, group in results.items()
                  if isinstance(group, dict) and "map_at_r" in group
                  for k, v in group.items()}
        files = [run_dir / f for f in FILES if (run_dir / f).is_file()]
        files += sorted(run_dir.glob("*.png"))
        for logger in self.loggers:
            logger.log_metrics(values, step)
            logger.log_files(files)

    def close(self, finished: bool) -> None:
        for logger in self.loggers:
            logger.close(finished)
