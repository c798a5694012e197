"""The CLI's rich consoles: results on stdout, messages and progress on stderr."""

from rich.console import Console

console = Console(soft_wrap=True)  # lines are never broken at 80 columns when piped
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
