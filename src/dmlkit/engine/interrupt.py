"""Graceful stop: SIGINT/SIGTERM ask the training loop to checkpoint and exit cleanly.

The first signal only sets ``requested``; the loop finishes its step, saves a checkpoint and
raises `TrainingInterrupted` (exit code 128 + signal number: 130 for SIGINT, 143 for SIGTERM).
A second signal aborts at once (KeyboardInterrupt); checkpoint writes are atomic, so that is safe.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from dmlkit.errors import TrainingError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(TrainingError):
    """Training stopped on a signal after saving a checkpoint; ``exit_code`` = 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopOnSignal:
    """Context manager: while inside, SIGINT/SIGTERM set ``requested`` instead of killing.

    Handlers are only installed from the main thread (Python's rule); elsewhere the context is
    inert and signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    @property
    def name(self) -> str:
        """The requested signal's name (``SIGINT``), or an empty string."""
        return "" if self.requested is None else signal.Signals(self.requested).name

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def ignore_sigint(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a terminal's Ctrl-C reaches the whole process group; the
    workers leave it to the main process, which stops them. (SIGTERM keeps its effect: it is how
    DataLoader and multiprocessing end their workers.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
