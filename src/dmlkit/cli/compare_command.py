"""``dmlkit compare``: the results tables of committed ``results.json`` files, and the
regeneration of every results table in README.md and docs/ (`dmlkit.protocol.doc_tables`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dmlkit.cli.json_output import JsonOpt, emit


def compare(
    results: Annotated[list[Path] | None, typer.Argument(
        help="results.json files (one per benchmark; method names must not repeat)")] = None,
    metric: Annotated[str, typer.Option(help="the test metric compared")] = "map_at_r",
    out: Annotated[Path | None, typer.Option(help="also write the Markdown table here")] = None,
    update_docs: Annotated[bool, typer.Option(
        "--update-docs", help="regenerate every <!-- compare: ... --> region of README.md and "
                              "docs/**/*.md under --root from its results files")] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="with --update-docs: write nothing, fail if a region is out of date")
    ] = False,
    root: Annotated[Path, typer.Option(help="repository root (for --update-docs)")] = Path("."),
    as_json: JsonOpt = False,
):
    """Per method: the test metric per seed, mean ± 95% CI over seeds (Student t), untrained
    anchors, and a paired t-test against its baseline with a computed verdict."""
    from dmlkit.cli.consoles import console
    from dmlkit.errors import ConfigError
    from dmlkit.protocol.compare import compare_json, compare_markdown, load_results
    from dmlkit.protocol.doc_tables import update_documents

    if update_docs:
        changed = update_documents(root, check=check)
        names = [str(p.relative_to(root)) for p in changed]
        if as_json:
            emit({"checked" if check else "updated": names})
        elif names:
            console.print(("out of date: " if check else "updated: ") + ", ".join(names))
        if check and changed:
            raise ConfigError(f"results tables out of date in {', '.join(names)}: run "
                              "`dmlkit compare --update-docs`")
        return
    if not results:
        raise ConfigError("give results.json files, or --update-docs")
    data = load_results(results)
    text = "\n".join(compare_markdown(data, metric)) + "\n"
    if out is not None:
        out.write_text(text)
    if as_json:
        emit(compare_json(data, metric))
        return
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command to ``app``."""
    app.command()(compare)
