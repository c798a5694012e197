"""`BenchmarkProgress`: one line per fold run of a benchmark, with the overall count and an ETA.

The unit is a fold run. The total is what the stages ask for: ``trials x folds`` per method
for the search (one trial for a method without a search space) and ``seeds x folds`` for the
final stage. A trial pruned after fold k counts its folds not run as done; runs reused from
disk count as done in no time. ETA = remaining runs x the mean seconds of the runs trained in
this process (none yet: unknown).
"""

from __future__ import annotations

import time

from rich.console import Console


def _clock(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class BenchmarkProgress:
    """Counts fold runs against ``total`` and prints a line per run on ``console``."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.total, self.console = total, console
        self.done = 0
        self.trained_seconds, self.trained = 0.0, 0
        self.in_trial = 0  # fold runs of the current search trial so far
        self.start = time.perf_counter()

    def skip(self, runs: int) -> None:
        """``runs`` fold runs that will not happen (finished earlier, or a pruned trial's)."""
        self.done = min(self.total, self.done + runs)

    def run_done(self, label: str, seconds: float, trained: bool) -> None:
        """A fold run ended (``trained``: here, else reused from disk); prints its line."""
        self.done = min(self.total, self.done + 1)
        self.in_trial += 1
        if trained:
            self.trained_seconds += seconds
            self.trained += 1
        if self.console is None:
            return
        eta = ("?" if not self.trained
               else _clock(self.trained_seconds / self.trained * (self.total - self.done)))
        how = f"{seconds:.0f} s" if trained else "reused"
        self.console.print(f"[{self.done}/{self.total}] {label} ({how}); elapsed "
                           f"{_clock(time.perf_counter() - self.start)}, ETA {eta}",
                           markup=False, highlight=False)

    def trial_done(self, folds: int) -> None:
        """A search trial ended: its folds not run (pruned early) count as done."""
        self.skip(max(0, folds - self.in_trial))
        self.in_trial = 0
