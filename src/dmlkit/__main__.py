"""``python -m dmlkit``: the command line."""

from dmlkit.cli.app import main

main()
