"""Results tables inside Markdown documents, regenerated from committed ``results.json`` files.

A region is written as::

    <!-- compare: docs/results/cifar10-frozen/results.json --metric map_at_r -->
    (generated: the table of `dmlkit.protocol.compare` and its caption)
    <!-- /compare -->

Paths are relative to the repository root; ``--metric`` (default ``map_at_r``) is the only
option. `update_documents` rewrites every region of README.md and docs/**/*.md; with
``check`` it only lists the documents whose regions differ from what the files give.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from dmlkit.errors import ConfigError
from dmlkit.protocol.compare import compare_markdown, load_results

REGION = re.compile(r"(<!-- compare: (?P<args>[^\n]*?) -->\n)(?P<body>.*?)(<!-- /compare -->)",
                    re.DOTALL)


def documents(root: Path) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    root = Path(root)
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    return found + sorted((root / "docs").rglob("*.md"))


def region_text(args: str, root: Path) -> str:
    """The generated body of a region with arguments ``args`` (paths, then options)."""
    words = shlex.split(args)
    metric = "map_at_r"
    if "--metric" in words:
        i = words.index("--metric")
        if i + 1 >= len(words):
            raise ConfigError(f"compare region {args!r}: --metric needs a value")
        metric = words[i + 1]
        del words[i:i + 2]
    if not words or any(w.startswith("--") for w in words):
        raise ConfigError(f"compare region {args!r}: give results files, then --metric NAME")
    results = load_results([Path(root) / w for w in words])
    return "\n".join(compare_markdown(results, metric)) + "\n"


def render_document(text: str, root: Path) -> str:
    """``text`` with every compare region's body regenerated."""
    return REGION.sub(lambda m: m.group(1) + region_text(m.group("args"), root) + m.group(4),
                      text)


def update_documents(root: Path, check: bool = False) -> list[Path]:
    """Regenerate the regions of every document under ``root``; returns the documents that
    changed (with ``check``: that would change; nothing is written)."""
    changed = []
    for path in documents(root):
        text = path.read_text()
        if "<!-- compare:" not in text:
            continue
        new = render_document(text, root)
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new)
    return changed
