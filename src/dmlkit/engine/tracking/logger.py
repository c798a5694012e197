"""`Logger`: one experiment tracker of a run, logging each (key, step) exactly once."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType

from dmlkit.errors import ConfigError


def require(module: str, logger: str) -> ModuleType:
    """Import ``module`` (lazily: trackers are optional and slow to import) or say how to
    install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"run.loggers: {logger} is not installed: "
                          f"pip install 'dmlkit[{logger}]'") from None


class Logger(ABC):
    """Scalars by (key, step), params and files of one run in one tracker.

    ``logged`` holds the (key, step) pairs the tracker already has, read back from it when a
    run is opened again (resumed after a crash or stop): those are skipped, so no step is
    logged twice, and the rest is logged, so none is lost.
    """

    def __init__(self) -> None:
        self.logged: set[tuple[str, int]] = set()

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Log the numeric ``values`` at ``step`` that the tracker does not have yet."""
        new = {k: float(v) for k, v in values.items()
               if (k, step) not in self.logged and isinstance(v, int | float)
               and not isinstance(v, bool)}
        if new:
            self.write(new, step)
            self.logged.update((k, step) for k in new)

    @abstractmethod
    def write(self, values: dict[str, float], step: int) -> None:
        """Send ``values`` at ``step`` to the tracker (all of them, or none: one request)."""

    @abstractmethod
    def log_params(self, params: dict[str, str]) -> None:
        """The resolved configuration (dotted keys), once per run."""

    @abstractmethod
    def log_files(self, files: list[Path]) -> None:
        """The run's report, plots and tables, once the run has finished."""

    @abstractmethod
    def close(self, finished: bool) -> None:
        """Flush and end (``finished``: the run is complete, not stopped or crashed)."""
