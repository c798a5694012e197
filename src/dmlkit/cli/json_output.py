"""``--json``: a command's result as exactly one JSON document on stdout; its progress, notes
and warnings go to stderr (docs/cli.md lists each command's keys). Every document starts with
``"schema_version"`` (`SCHEMA_VERSION`), raised when a key is renamed or removed."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from dmlkit.base.run_dir import json_safe
from dmlkit.cli.consoles import console, err_console

SCHEMA_VERSION = 1

JsonOpt = Annotated[bool, typer.Option(
    "--json", help="print the result as one JSON document on stdout (progress on stderr)")]


def report_console(as_json: bool) -> Console:
    """Where a command's progress and messages go: stderr under ``--json``, else stdout."""
    return err_console if as_json else console


def _plain(o: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists; anything else (paths) as text."""
    return o.tolist() if hasattr(o, "tolist") else str(o)


def emit(doc: dict[str, Any]) -> None:
    """Write ``{"schema_version": ..., **doc}`` to stdout as JSON (NaN and inf -> null), one
    trailing newline."""
    doc = {"schema_version": SCHEMA_VERSION, **doc}
    plain = json.loads(json.dumps(doc, default=_plain))
    sys.stdout.write(json.dumps(json_safe(plain), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()
