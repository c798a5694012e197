"""`every`: an action repeated on a background thread while a block runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def every(seconds: float, action: Callable[[], None], name: str, at_start: bool = False
          ) -> Iterator[None]:
    """Call ``action`` every ``seconds`` (first at once with ``at_start``) from a daemon thread
    named ``name`` until the block ends; the thread is joined before the block returns.

    >>> calls = []
    >>> with every(60, lambda: calls.append(1), "test", at_start=True):
    ...     pass
    >>> calls
    [1]
    """
    stop = threading.Event()

    def loop() -> None:
        if at_start:
            action()
        while not stop.wait(seconds):
            action()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
