"""Every code block of README.md and docs/*.md runs, as written.

Per Markdown file, in a fresh temporary folder and in the file's order:

- ```python blocks run in this process, sharing one namespace per file;
- ```bash / ```sh blocks run command by command (backslash continuations and here-documents
  kept together): a ``dmlkit ...`` command runs this tree's CLI in this process (typer's
  CliRunner: the same code as the executable, without a new interpreter per command), any
  other command runs in ``bash -e -o pipefail``. ``dmlkit train`` gets a tiny budget appended
  (`TINY`; a later ``--set`` wins, so the block's other keys are kept), so that a block's run
  directories exist, quickly, for the blocks after it;
- ```yaml and ```text blocks are data or output, not run.

A block that cannot run here (a GPU, several machines, a dataset that is not installed, a
database server, hours of CPU) carries ``<!-- not run: REASON -->`` on the line before its fence.
docs/results/ is not covered: those are reports of long runs, each with its exact command.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dmlkit.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md"))]
TINY = ["--set", "train.epochs=1", "--set", "train.batches_per_epoch=2",
        "--set", "data.max_per_class=20"]
SHELL, PYTHON, DATA = {"bash", "sh"}, {"python"}, {"yaml", "text"}
FENCE = re.compile(r"^```(\S*)\s*$")
MARK = re.compile(r"^<!-- not run: (.+\S) -->$")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    not_run: str | None  # the reason, when marked


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the not-run marker before each."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        mark = MARK.match(lines[i - 1]) if i else None
        found.append(Block(m.group(1), "\n".join(lines[i + 1:end]) + "\n", i + 1,
                           mark.group(1) if mark else None))
        i = end + 1
    return found


def commands(code: str) -> list[str]:
    """A shell block cut into commands: one per line, with its backslash continuations and
    here-document lines; comment and blank lines dropped."""
    out, lines = [], iter(code.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = line
        while command.endswith("\\"):
            command = command[:-1] + next(lines)
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", command)
        if heredoc:
            body = []
            for more in lines:
                body.append(more)
                if more.strip() == heredoc.group(1):
                    break
            command = "\n".join([command, *body])
        out.append(command)
    return out


PIPES = {"|", ">", ">>", "<", "&&", "||", ";"}


def run_command(command: str, where: str) -> None:
    """One shell command: ``dmlkit`` in this process (``train`` with `TINY`), others in bash."""
    words = shlex.split(command, comments=True)
    if words[0] != "dmlkit" or PIPES & set(words):
        # a pipe or redirection: bash, with ``dmlkit`` this interpreter's (no tiny budget)
        dmlkit = f'dmlkit() {{ "{sys.executable}" -m dmlkit "$@"; }}; '
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", dmlkit + command],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{where}: {command}\n{done.stdout}\n{done.stderr}"
        return
    resumed = "--resume" in words  # a resumed run keeps its own budget (only epochs may grow)
    args = words[1:] + (TINY if words[1] == "train" and not resumed else [])
    result = CliRunner().invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, (
        f"{where}: {command}\n{result.output[-3000:]}\n{result.exception!r}")


def test_every_block_is_typed_and_marked_blocks_give_a_reason():
    for path in FILES:
        for b in blocks(path):
            where = f"{path.name}:{b.line}"
            assert b.lang in SHELL | PYTHON | DATA, f"{where}: untyped or unknown block {b.lang!r}"
            if b.lang in DATA:
                assert b.not_run is None, f"{where}: a {b.lang} block is never run: no marker"


def test_shell_blocks_are_cut_into_commands():
    code = ("# a comment\ndmlkit presets   # shipped\n\ndmlkit train a \\\n    --set b=1\n"
            "cat > my.yaml <<'EOF'\nx: 1\nEOF\necho done\n")
    assert commands(code) == ["dmlkit presets   # shipped", "dmlkit train a     --set b=1",
                              "cat > my.yaml <<'EOF'\nx: 1\nEOF", "echo done"]


def test_the_parser_sees_markers_and_every_block(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n<!-- not run: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n"
                  "```python\nx = 1\n```\n```text\nout\n```\n")
    got = [(b.lang, b.code, b.line, b.not_run) for b in blocks(md)]
    assert got == [("bash", "nvidia-smi\n", 3, "needs a GPU"), ("python", "x = 1\n", 7, None),
                   ("text", "out\n", 10, None)]


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    namespace: dict = {"__name__": "__doc_block__"}
    for b in blocks(path):
        if b.not_run is not None or b.lang in DATA:
            continue
        where = f"{path.name}:{b.line}"
        if b.lang in PYTHON:
            exec(compile(b.code, where, "exec"), namespace)  # our own docs
            continue
        for command in commands(b.code):
            run_command(command, where)
