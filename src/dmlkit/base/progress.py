"""What a long phase is doing, on stderr: live on a terminal, plain lines otherwise.

On a terminal a phase shows a spinner (`phase`) or a progress bar (`bar`) while it runs and
leaves one line with its duration (if it took a second or more). When stderr is not a
terminal (CI logs, pipes, files, ``nohup``) each phase prints one line when it starts and,
while it lasts, one more line every `INTERVAL` seconds (``DMLKIT_PROGRESS_SECONDS``, default
20): the percent done, the rate and the time left for a bar or an epoch, the time so far for
a phase without a count; never carriage returns or cursor movement. The epochs' bars
(`live_bars`) also end in one line per epoch (`plain`). Only the reporting process writes
(``RANK`` unset or 0 under torchrun); stdout stays for results.
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

from dmlkit.base.periodic import every

# sys.stderr is looked up at every write, so captured or redirected stderr is honoured
_console = Console(stderr=True, highlight=False, soft_wrap=True)
MIN_SECONDS = 1.0  # on a terminal, shorter phases leave no line behind


def _interval(default: float = 20.0) -> float:
    """``DMLKIT_PROGRESS_SECONDS`` if it is a positive number, else ``default``."""
    try:
        seconds = float(os.environ.get("DMLKIT_PROGRESS_SECONDS", default))
    except ValueError:
        return default
    return seconds if seconds > 0 else default


INTERVAL = _interval()  # seconds between lines off a terminal


def _active(enabled: bool) -> bool:
    return enabled and os.environ.get("RANK", "0") == "0"


def _done(text: str, t0: float) -> None:
    seconds = time.perf_counter() - t0
    if seconds >= MIN_SECONDS:
        _console.print(f"{text}: done in {seconds:.1f} s", markup=False, style="dim")


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``.

    >>> duration(41.6), duration(185), duration(7620)
    ('42 s', '3 min 05 s', '2 h 07 min')
    """
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def rate_line(text: str, done: float, total: float, seconds: float, unit: str = "",
              remaining: float | None = None) -> str:
    """``"text: 45% (450/1000), 12 img/s, eta 46 s"``; ``remaining`` (seconds) if known
    better than from the mean rate so far.

    >>> rate_line("embedding", 450, 1000, 37.5, "img")
    'embedding: 45% (450/1000), 12 img/s, eta 46 s'
    """
    rate = done / seconds if seconds > 0 else 0.0
    if remaining is None and rate > 0:
        remaining = (total - done) / rate
    eta = f", eta {duration(remaining)}" if remaining is not None else ""
    per = f" {unit}/s" if unit else "/s"
    return (f"{text}: {100 * done / max(total, 1):.0f}% ({done:.0f}/{total:.0f}), "
            f"{rate:.0f}{per}{eta}")


@contextmanager
def heartbeat(line: Callable[[], str | None], enabled: bool = True) -> Iterator[None]:
    """Off a terminal, print ``line()`` (unless None) every `INTERVAL` seconds from a
    background thread while the block runs; on a terminal (live displays) nothing."""
    if not _active(enabled) or _console.is_terminal:
        yield
        return
    def beat() -> None:
        text = line()
        if text:
            _console.print(text, markup=False)

    with every(INTERVAL, beat, "dmlkit-progress"):
        yield


@contextmanager
def phase(text: str, enabled: bool = True) -> Iterator[None]:
    """Announce ``text`` (e.g. "loading data") for the duration of the block."""
    if not _active(enabled):
        yield
        return
    t0 = time.perf_counter()
    if not _console.is_terminal:
        _console.print(f"{text} ...", markup=False)
        with heartbeat(lambda: f"{text}: {duration(time.perf_counter() - t0)} so far"):
            yield
        return
    with _console.status(text):
        yield
    _done(text, t0)


@contextmanager
def bar(text: str, total: int, enabled: bool = True,
        unit: str = "img") -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` units (``unit``, e.g. images) with the time elapsed and the
    estimated time left; the block advances it by calling ``advance(n)``.

    Off a terminal: one line "``text`` (``total``) ...", then every `INTERVAL` seconds the
    percent done, the rate and the time left (`rate_line`).
    """
    if not _active(enabled):
        yield lambda n: None
        return
    t0 = time.perf_counter()
    if not _console.is_terminal:
        _console.print(f"{text} ({total}) ...", markup=False)
        done = [0]

        def advance(n: int) -> None:
            done[0] += n

        with heartbeat(lambda: rate_line(text, done[0], total, time.perf_counter() - t0, unit)):
            yield advance
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=True) as progress:
        task = progress.add_task(text, total=total)
        yield lambda n: progress.advance(task, n)
    _done(text, t0)


class _Bars(Progress):
    """`live_bars`: off a terminal, a `heartbeat` line per unfinished task instead of the
    display (its description, percent, rate, ``info`` field and time left)."""

    def _line(self) -> str | None:
        lines = []
        for task in self.tasks:
            if task.finished or not task.total or task.elapsed is None:
                continue
            line = rate_line(task.description, task.completed, task.total, task.elapsed,
                             "batch", task.time_remaining)
            info = task.fields.get("info")
            lines.append(f"{line}, {info}" if info else line)
        return "\n".join(lines) or None

    def __enter__(self) -> _Bars:
        super().__enter__()
        self._beat = heartbeat(self._line)
        self._beat.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._beat.__exit__(*exc)
        super().__exit__(*exc)


def live_bars(*columns) -> Progress:
    """A persistent rich Progress on stderr (tasks added by the caller, e.g. one per epoch),
    shown on a terminal; elsewhere a line every `INTERVAL` seconds while a task runs (and
    `plain` for what the caller reports itself)."""
    return _Bars(*columns, console=_console, transient=False,
                 disable=not (_active(True) and _console.is_terminal))


def plain(text: str) -> None:
    """One line on stderr when stderr is not a terminal (where `live_bars` shows nothing)."""
    if _active(True) and not _console.is_terminal:
        _console.print(text, markup=False)
