"""The trainer's checkpoints (docs/crash-safety.md): what a checkpoint holds, writing a pair on
rank 0, resuming from the newest readable one (metrics.csv trimmed to it, RNG states restored
when the loop continues). `Checkpointing` is mixed into `dmlkit.engine.trainer.Trainer`, whose
attributes it uses."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from dmlkit.base import process_group
from dmlkit.base.atomic_write import WriteError, atomic_write_bytes
from dmlkit.base.files import first_line
from dmlkit.config import Config, dotted, from_dict
from dmlkit.engine.seed import cuda_rng_state, rng_state, set_rng_state
from dmlkit.errors import CheckpointError

# where a run's files are, not what it trains: may change between a checkpoint and its resume
FREE_KEYS = ("run.", "train.epochs")


class EditedConfig(CheckpointError):
    """The run's config.yaml was edited after its checkpoint was written (`check_config`)."""


def check_config(cfg: Config, saved: str | None, run: Path, checkpoint: Path) -> None:
    """EditedConfig (one line naming the keys) if ``cfg`` differs from the config ``saved``
    (JSON) in the checkpoint in anything but `FREE_KEYS` (``train.epochs`` is checked by
    `resumed_config`): the checkpoint's optimizer, scheduler and method state belong to the
    config it was trained with, so an edit would be silently overruled (the checkpoint's
    learning rate wins) or half applied. Checkpoints from before configs were saved in them
    are not checked."""
    if saved is None:
        return
    old = dotted(from_dict(json.loads(saved)).to_dict())
    new = dotted(cfg.to_dict())
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k) != new.get(k) and not k.startswith(FREE_KEYS))
    if changed:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise EditedConfig(
            f"--resume: {run / 'config.yaml'} was edited after {checkpoint.name}: {shown}{more}; "
            "a run continues with the config it was trained with: undo the edit, or start a "
            "new run with it")


def empty_epoch() -> dict:
    """Running sums of the current epoch (saved in mid-epoch checkpoints)."""
    return {"sums": {}, "steps": 0, "images": 0, "skipped": 0, "overflows": 0, "seconds": 0.0}


class Checkpointing:
    """`state`, `save_checkpoint`, `resume` of a Trainer."""

    def state(self, rng: dict | None = None) -> dict:
        """Everything a checkpoint holds besides the weights (``rng``: default this
        process's RNG states)."""
        self._read_sums()
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "iteration": self.iteration,
            "current_epoch": self.current,
            "skipped": self.skipped,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "rng": rng or rng_state(device=self.device),
            "results": dict(self.results),
            "config": json.dumps(self.cfg.to_dict()),  # what `check_config` compares
        }

    def save_checkpoint(self) -> Path:
        """Write the pair of the current position and prune old pairs; returns the state file.

        Rank 0 writes (the state is the same on every rank); every rank learns the outcome. A
        failed write (full disk) raises CheckpointError; the previous pair stays intact.
        """
        outcome: tuple[str, str] = ("ok", "")
        self._read_sums()  # on every rank: a non-finite step stops every rank alike
        # each rank's CUDA generator (its own device; the other RNGs are the same on all ranks)
        rng = rng_state(process_group.all_objects(cuda_rng_state(self.device)))
        if self.dist.is_main:
            try:
                path = self.checkpoints.save(self.model.state_dict(), self.state(rng),
                                             self.epoch, self.batch)
                self.checkpoints.prune(self.cfg.train.keep_checkpoints)
                outcome = ("ok", str(path))
            except WriteError as e:
                outcome = ("error", str(e))
        status, text = process_group.broadcast_object(outcome)
        if status == "error":
            raise CheckpointError(
                f"could not save a checkpoint ({text}); the previous one "
                f"({self.last_checkpoint or 'none'}) is intact: free space, then "
                f"dmlkit train --resume {self.run.path}"
            )
        self.last_checkpoint = Path(text)
        return self.last_checkpoint

    def resume(self) -> None:
        """Continue from the newest complete, readable checkpoint of the run directory."""
        found = self.checkpoints.load_newest(self.warn)
        if found is None:
            self.console.print(f"no checkpoint in {self.run.path} yet: training from the start")
            self._trim_metrics()
            return
        path, state, weights = found
        check_config(self.cfg, state.get("config"), self.run.path, path)
        try:
            self.model.load_state_dict(weights)
            self.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path} does not fit this run's model ({first_line(e)})"
            ) from None
        self.epoch, self.best, self.bad_epochs = state["epoch"], state["best"], state["bad_epochs"]
        self.batch = state.get("batch", 0)
        self.iteration = state.get("iteration", 0)
        self.current = {**empty_epoch(), **state.get("current_epoch", {})}
        self.skipped = [list(s) for s in state.get("skipped", [])]
        self.results.update(state["results"])
        self._rng = state.get("rng") or {"torch": state["torch_rng"]}
        self.last_checkpoint = path
        self._trim_metrics()
        where = (f"epoch {self.epoch + 1}, after iteration {self.batch}" if self.batch
                 else f"after epoch {self.epoch}")
        self.console.print(f"resumed {self.run.path} from {path.name} ({where})")

    def _trim_metrics(self) -> None:
        """Drop metrics.csv rows of epochs after the checkpoint (written before a kill)."""
        path = self.run.path / "metrics.csv"
        if not self.dist.is_main or not path.is_file():
            return
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        header, body = (rows[0], rows[1:]) if rows else ([], [])
        if "epoch" not in header:
            path.unlink()
            return
        col = header.index("epoch")
        keep = [r for r in body if len(r) == len(header) and r[col].isdigit()
                and int(r[col]) <= self.epoch]
        if len(keep) < len(body):
            buf = io.StringIO()
            csv.writer(buf).writerows([header, *keep])
            atomic_write_bytes(path, buf.getvalue().encode())

    def _restore_rng(self) -> None:
        if self._rng is not None:
            set_rng_state(self._rng, self.dist.rank, self.device)
            self._rng = None
