"""Weights & Biases: one W&B run per dmlkit run, its id fixed by the run directory.

Online or offline as W&B's own ``WANDB_MODE`` says (``offline``: files in
``<run dir>/wandb/``, uploaded later with ``wandb sync``). A resumed dmlkit run resumes its
W&B run (``resume="allow"``); W&B itself reports the next step of a resumed online run
(``run.step``) and steps below it are skipped. An offline W&B run cannot be read back, so a
dmlkit run resumed offline logs the epochs since its checkpoint again (see docs/tracking.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dmlkit.engine.tracking.logger import Logger, require


class WandbLogger(Logger):
    """Metrics with ``run.log(values, step=epoch)``; config; files with ``run.save``."""

    def __init__(self, run_dir: Path, project: str, group: str | None) -> None:
        super().__init__()
        wandb = require("wandb", "wandb")
        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=project, group=group, name=run_dir.name, id=run_id,
                              resume="allow", dir=str(run_dir),
                              settings=wandb.Settings(silent=True, console="off"))
        self.first_step = self.run.step

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        if step >= self.first_step:
            super().log_metrics(values, step)

    def write(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def log_params(self, params: dict[str, str]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_files(self, files: list[Path]) -> None:
        for f in files:
            self.run.save(str(f), base_path=str(f.parent), policy="now")

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)
