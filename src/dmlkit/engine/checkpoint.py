"""Atomic checkpoints: training state (optimizer, scheduler, RNG, counters) loaded with
weights_only, in a folder of numbered pairs; model weights through `dmlkit.base.files`."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import torch

from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.base.files import first_line, load_weights, save_weights
from dmlkit.data.download import file_digest
from dmlkit.errors import CheckpointError


def save_state(state: dict, path: Path) -> None:
    """Training state (optimizer, scheduler, RNG, counters) written atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict:
    """Training state, loaded with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path} is not a readable dmlkit checkpoint ({first_line(e)})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a dmlkit checkpoint (holds a {type(state).__name__})")
    return state


_NAME = re.compile(r"state-(\d+)(?:-(\d+))?\.pt")
_OURS = re.compile(r"\.?(state|model)-\d+(-\d+)?\.(pt|safetensors)(\..+)?")  # with temp files


class CheckpointFolder:
    """Checkpoint pairs ``state-<key>.pt`` + ``model-<key>.safetensors`` in one folder.

    ``<key>`` is ``EEEE`` at the end of epoch EEEE, or ``EEEE-BBBBBB`` after BBBBBB batches of
    epoch EEEE+1 (a mid-epoch checkpoint); keys sort as (epochs done, batches done). The weights
    are written first and the state, which records their sha256, last: a pair missing a half,
    or whose weights do not match the recorded hash, is incomplete and ignored.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def files(self, epoch: int, batch: int = 0) -> tuple[Path, Path]:
        """(state, weights) paths of key ``(epoch, batch)``."""
        key = f"{epoch:04d}" if batch == 0 else f"{epoch:04d}-{batch:06d}"
        return self.path / f"state-{key}.pt", self.path / f"model-{key}.safetensors"

    def pairs(self) -> list[tuple[int, int]]:
        """Keys of the pairs with both files present, oldest first."""
        found = []
        for p in self.path.glob("state-*.pt"):
            m = _NAME.fullmatch(p.name)
            if m:
                key = (int(m[1]), int(m[2] or 0))
                if self.files(*key)[1].is_file():
                    found.append(key)
        return sorted(found)

    def save(self, weights: dict[str, torch.Tensor], state: dict, epoch: int,
             batch: int = 0) -> Path:
        """Write the pair of key ``(epoch, batch)``; returns the state file's path."""
        state_path, weights_path = self.files(epoch, batch)
        digest = save_weights(weights, weights_path)
        save_state({**state, "weights_sha256": digest}, state_path)
        return state_path

    def load(self, epoch: int, batch: int = 0) -> tuple[dict, dict[str, torch.Tensor]]:
        """(state, weights) of one pair; CheckpointError if unreadable or mismatched."""
        state_path, weights_path = self.files(epoch, batch)
        state, weights = load_state(state_path), load_weights(weights_path)
        digest = state.get("weights_sha256")
        if digest is not None and file_digest(weights_path, "sha256") != digest:
            raise CheckpointError(f"{weights_path} is not the model saved with {state_path.name}")
        return state, weights

    def load_newest(
        self, warn: Callable[[str], None]
    ) -> tuple[Path, dict, dict[str, torch.Tensor]] | None:
        """The newest readable pair as (state path, state, weights); ``warn(message)`` for each
        newer pair skipped as unreadable. None when there is no pair; CheckpointError when every
        pair is unreadable."""
        keys = self.pairs()
        for i, key in enumerate(reversed(keys)):
            try:
                state, weights = self.load(*key)
            except CheckpointError as e:
                if i + 1 == len(keys):
                    raise CheckpointError(
                        f"no readable checkpoint in {self.path} ({e}); delete the folder to "
                        "train from the beginning"
                    ) from None
                warn(f"{e}; falling back to the previous checkpoint")
                continue
            return self.files(*key)[0], state, weights
        return None

    def prune(self, keep: int) -> None:
        """Keep the newest ``keep`` epoch-end pairs and the newest ``keep`` mid-epoch pairs newer
        than those; delete older pairs, orphaned halves and temp files of interrupted writes."""
        keys = self.pairs()
        ends = [k for k in keys if k[1] == 0][-keep:]
        newest_end = ends[-1] if ends else (-1, 0)
        mids = [k for k in keys if k[1] > 0 and k > newest_end][-keep:]
        wanted = {p.name for k in ends + mids for p in self.files(*k)}
        ours = [p for p in self.path.iterdir() if _OURS.fullmatch(p.name) and p.name not in wanted]
        for p in sorted(ours, key=lambda p: "model-" in p.name):
            p.unlink(missing_ok=True)  # states before weights: an interruption leaves no lone state
