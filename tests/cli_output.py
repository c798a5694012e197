"""What a user reads on stderr: progress (`dmlkit.base.progress`; off a terminal one line per
phase, ending in " ...", and one per epoch), the run directory when it is created, and at most
one line of message (an error, or how to continue a stopped run)."""

import re

PROGRESS = re.compile(r"( \.\.\.$)|(^run directory: )|(^epoch \d+/\d+: )")


def message_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not progress.

    >>> message_lines("loading data (x) ...\\nrun directory: runs/a\\nerror: bad")
    ['error: bad']
    """
    return [x for x in stderr.strip().splitlines() if not PROGRESS.search(x)]
