"""The run directory: resolved config, environment, metrics, checkpoints and state of one run.

``state.json`` records where the run stands: ``running`` (with the process id and host),
``interrupted`` (stopped by a signal; resumable), ``failed`` (with the error's first line) or
``finished`` (``metrics.json`` and the final weights are written). It is written atomically.
A ``running`` state whose process is gone (on this host) reads as ``interrupted`` (killed);
one recorded on another host stays ``running`` (`RunState.elsewhere`: ``train --resume --force``
takes it over);
run directories from before state files read as ``finished`` with ``metrics.json``, else
``interrupted``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from dmlkit import config as config_mod
from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.base.secrets import mask_secrets
from dmlkit.config import Config
from dmlkit.errors import CheckpointError

STATE_FILE = "state.json"
PACKAGES = ("dmlkit", "torch", "torchvision", "timm", "pytorch-metric-learning", "faiss-cpu",
            "numpy", "scikit-learn", "optuna")


def environment(seed: int) -> dict:
    """Package versions, Python, platform, hardware and process count of this process (the
    command line with its passwords masked: `mask_secrets`)."""
    import torch  # here only: reading a run directory stays light (no torch)

    from dmlkit.base import process_group

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
        "command": [mask_secrets(a) for a in sys.argv],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


State = Literal["running", "interrupted", "failed", "finished"]


@dataclass(frozen=True)
class RunState:
    """Where a run stands (see the module doc); ``message``: why it failed or stopped."""

    state: State
    message: str = ""
    host: str | None = None  # the recording process's host, while ``running``

    @property
    def elsewhere(self) -> bool:
        """``running`` under a process on another host: whether it lives cannot be seen here."""
        return self.state == "running" and self.host not in (None, platform.node())


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def json_safe(x):
    """``x`` with every non-finite float (NaN, inf; JSON has neither) replaced by None.

    >>> json_safe({"map_at_r": float("nan"), "seeds": [1.0, float("inf")]})
    {'map_at_r': None, 'seeds': [1.0, None]}
    """
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def _json_blob(data: dict) -> bytes:
    """``data`` as indented JSON (`json_safe`: no NaN or inf)."""
    return json.dumps(json_safe(data), indent=2, sort_keys=False, allow_nan=False).encode()


class RunDir:
    """Paths and writers of ``runs/<name>/``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, cfg: Config) -> RunDir:
        """A new run directory in state ``running``; an existing directory is never reused
        (``name-2``, ``name-3``...). ``mkdir`` (which fails on an existing directory) is the
        claim: two processes creating the same name at once get different directories."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = cfg.run.name or f"{cfg.data.name}-{cfg.method.label}-{stamp}"
        root = Path(cfg.run.root)
        root.mkdir(parents=True, exist_ok=True)
        path, n = root / name, 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                n += 1
                path = root / f"{name}-{n}"
        run = cls(path)
        run.write_config(cfg)
        run.write_json("env.json", environment(cfg.train.seed))
        run.set_state("running")
        return run

    def write_config(self, cfg: Config) -> None:
        """The resolved config as ``config.yaml`` (atomically)."""
        atomic_write_bytes(self.config_path, config_mod.to_yaml(cfg).encode())

    def read_config(self) -> Config:
        """The run's resolved config."""
        return config_mod.load(str(self.config_path))

    def set_state(self, state: State, message: str = "") -> None:
        """Record the run's state (with this process's id and host while ``running``).

        Written atomically; where that fails (a full disk has no block for the temp file) the
        state is written over the old ``state.json`` in place, in the block it already has.
        If that fails too, the atomic write's error is raised."""
        if state == "running" and not message:
            message = f"process {os.getpid()} on {platform.node()}"
        data = {"state": state, "message": message, "pid": os.getpid(),
                "host": platform.node(), "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            self.write_json(STATE_FILE, data)
        except OSError as err:
            try:
                with open(self.path / STATE_FILE, "r+b") as f:
                    f.write(_json_blob(data))
                    f.truncate()
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                raise err from None

    def state(self) -> RunState:
        """The run's state (see the module doc for runs without a state file)."""
        path = self.path / STATE_FILE
        if not path.is_file():
            done = (self.path / "metrics.json").is_file()
            return RunState("finished" if done else "interrupted")
        data = json.loads(path.read_text())
        state, message, pid = data.get("state"), data.get("message", ""), data.get("pid")
        if state not in ("running", "interrupted", "failed", "finished"):
            raise CheckpointError(f"{path}: unknown run state {state!r}")
        if (state == "running" and isinstance(pid, int) and pid > 0
                and data.get("host") == platform.node() and not _alive(pid)):
            return RunState("interrupted", f"its process ({pid}) ended without finishing")
        host = data.get("host") if state == "running" else None
        return RunState(state, message, host if isinstance(host, str) else None)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_bytes(self.path / name, _json_blob(data))

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


def open_run(path: Path, what: str | None = None) -> RunDir:
    """The run directory at ``path``; CheckpointError if it is none, or (with ``what``, the
    command that needs it) if the run did not finish (`require_finished`)."""
    run = RunDir(Path(path))
    if not run.config_path.is_file():
        raise CheckpointError(_not_a_run(Path(path)))
    if what is not None:
        require_finished(run, what)
    return run


def _not_a_run(path: Path) -> str:
    """Why ``path`` is no run directory, and what to give instead where that is clear."""
    if path.is_file() and path.name == "config.yaml":
        return f"{path} is a run's config file: give its run directory, {path.parent}"
    if path.is_file():
        return f"{path} is a file, not a run directory (runs/NAME)"
    if not path.exists():
        return f"{path} does not exist (a run directory is runs/NAME)"
    return f"{path} is not a run directory (it has no config.yaml)"


def require_finished(run: RunDir, what: str) -> None:
    """CheckpointError (one line saying what to do) unless ``run`` is ``finished``; ``what``
    is the command that needs it (``evaluate``, ``reproduce``...)."""
    now = run.state()
    if now.state == "finished":
        return
    resume = f"dmlkit train --resume {run.path}"
    if now.state == "running":
        raise CheckpointError(f"cannot {what} {run.path}: it is still training "
                              f"({now.message}); wait for it to finish")
    if now.state == "failed":
        raise CheckpointError(f"cannot {what} {run.path}: it failed ({now.message}); fix the "
                              f"cause and continue it with {resume}, or start a new run")
    raise CheckpointError(f"cannot {what} {run.path}: it was interrupted before finishing; "
                          f"continue it with: {resume}")
