"""What a user reads on stderr: progress (`dmlkit.base.progress`; off a terminal one line per
phase, ending in " ...", one per epoch, and while a phase lasts one every interval: "N% (i/n)"
or "... so far"), the run directory when it is created, and at most one line of message (an
error, or how to continue a stopped run)."""

import re

HEARTBEAT = re.compile(r"(: \d+% \(\d+/\d+\), )|( so far$)")  # a long phase, every interval
PROGRESS = re.compile(rf"( \.\.\.$)|(^run directory: )|(^epoch \d+/\d+: )|{HEARTBEAT.pattern}")


def message_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not progress.

    >>> message_lines("loading data (x) ...\\nloading data (x): 21 s so far\\n"
    ...               "embedding: 40% (40/100), 9 img/s, eta 7 s\\nerror: bad")
    ['error: bad']
    """
    return [x for x in stderr.strip().splitlines() if not PROGRESS.search(x)]
