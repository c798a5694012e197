"""What a long phase is doing, on stderr: live on a terminal, one plain line otherwise.

On a terminal a phase shows a spinner (`phase`) or a progress bar (`bar`) while it runs and
leaves one line with its duration (if it took a second or more). When stderr is not a
terminal (CI logs, pipes, files) each phase prints exactly one line when it starts and nothing
else: no carriage returns, no cursor movement; the epochs' bars (`live_bars`) are replaced by
one line per epoch (`plain`). Only the reporting process writes (``RANK`` unset or 0 under
torchrun); stdout stays for results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# sys.stderr is looked up at every write, so captured or redirected stderr is honoured
_console = Console(stderr=True, highlight=False, soft_wrap=True)
MIN_SECONDS = 1.0  # on a terminal, shorter phases leave no line behind


def _active(enabled: bool) -> bool:
    return enabled and os.environ.get("RANK", "0") == "0"


def _done(text: str, t0: float) -> None:
    seconds = time.perf_counter() - t0
    if seconds >= MIN_SECONDS:
        _console.print(f"{text}: done in {seconds:.1f} s", markup=False, style="dim")


@contextmanager
def phase(text: str, enabled: bool = True) -> Iterator[None]:
    """Announce ``text`` (e.g. "loading data") for the duration of the block."""
    if not _active(enabled):
        yield
        return
    t0 = time.perf_counter()
    if not _console.is_terminal:
        _console.print(f"{text} ...", markup=False)
        yield
        return
    with _console.status(text):
        yield
    _done(text, t0)


@contextmanager
def bar(text: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` units with the time elapsed and the estimated time left;
    the block advances it by calling ``advance(n)``.

    Off a terminal: one line "``text`` (``total``) ..." and ``advance`` does nothing.
    """
    if not _active(enabled):
        yield lambda n: None
        return
    t0 = time.perf_counter()
    if not _console.is_terminal:
        _console.print(f"{text} ({total}) ...", markup=False)
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=True) as progress:
        task = progress.add_task(text, total=total)
        yield lambda n: progress.advance(task, n)
    _done(text, t0)


def live_bars(*columns) -> Progress:
    """A persistent rich Progress on stderr (tasks added by the caller, e.g. one per epoch),
    shown on a terminal only; elsewhere disabled: report with `plain` instead."""
    return Progress(*columns, console=_console, transient=False,
                    disable=not (_active(True) and _console.is_terminal))


def plain(text: str) -> None:
    """One line on stderr when stderr is not a terminal (where `live_bars` shows nothing)."""
    if _active(True) and not _console.is_terminal:
        _console.print(text, markup=False)
