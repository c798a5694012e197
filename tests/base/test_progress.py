import io
import itertools
import os
import re
import subprocess
import sys
import time

import pytest
from rich.console import Console

from dmlkit.base import progress
from dmlkit.base.progress import bar, live_bars, phase, plain


def test_off_a_terminal_each_phase_is_one_plain_line(capsys):
    with phase("loading data"):
        pass
    with bar("embedding", 1000) as advance:
        for _ in range(1000):
            advance(1)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "loading data ...\nembedding (1000) ...\n"


def test_ranks_other_than_0_and_disabled_phases_stay_silent(capsys, monkeypatch):
    with phase("off", enabled=False), bar("off", 3, enabled=False) as advance:
        advance(3)
    monkeypatch.setenv("RANK", "1")
    with phase("rank 1"), bar("rank 1", 3) as advance:
        advance(3)
    assert capsys.readouterr() == ("", "")


def test_on_a_terminal_a_live_display_then_one_line_with_the_duration(monkeypatch):
    term = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=term, force_terminal=True,
                                                      width=80))
    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)
    with bar("decoding", 4) as advance:
        for _ in range(4):
            advance(1)
            time.sleep(0.01)
    with phase("writing the report"):
        pass
    text = term.getvalue()
    assert "\x1b[" in text  # cursor control: the live bar and spinner
    lines = [line for line in text.split("\n") if "done in" in line]
    assert len(lines) == 2 and "decoding: done in" in lines[0]
    assert "writing the report: done in" in lines[1]


def test_a_failing_phase_does_not_claim_to_be_done(monkeypatch):
    term = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=term, force_terminal=True))
    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)
    with pytest.raises(ValueError), phase("loading data"):
        raise ValueError("broken")
    assert "done in" not in term.getvalue()


def test_on_a_terminal_quick_phases_leave_no_line(monkeypatch):
    term = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=term, force_terminal=True))
    with phase("building the model"):
        pass
    assert "done in" not in term.getvalue()


def test_epoch_bars_live_on_a_terminal_plain_lines_elsewhere(capsys, monkeypatch):
    with live_bars() as bars:
        bars.add_task("epoch 1/1", total=3)
    plain("epoch 1/1: loss 0.1")
    assert capsys.readouterr() == ("", "epoch 1/1: loss 0.1\n")
    term = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=term, force_terminal=True))
    with live_bars() as bars:
        bars.add_task("epoch 1/1", total=3, completed=3)
    plain("not shown: the bar stays on a terminal")
    assert "epoch 1/1" in term.getvalue() and "not shown" not in term.getvalue()


def test_off_a_terminal_long_phases_print_a_line_every_interval(capsys, monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.05)
    with phase("loading data"):
        time.sleep(0.3)
    with bar("embedding", 100) as advance:
        for _ in range(4):
            advance(25)
            time.sleep(0.1)
    with live_bars() as bars:
        task = bars.add_task("epoch 1/3", total=10, info="")
        for _ in range(5):
            bars.update(task, advance=1, info="loss 0.1234  99 img/s")
            time.sleep(0.1)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "loading data ..."
    assert any(line.startswith("loading data: 0 s so far") for line in err)
    assert "embedding (100) ..." in err
    assert any(re.fullmatch(r"embedding: \d+% \(\d+/100\), \d+ img/s, eta \d+ s", line)
               for line in err)
    assert any(re.fullmatch(r"epoch 1/3: \d+% \(\d+/10\), \d+ batch/s, eta \d+ s, "
                            r"loss 0.1234  99 img/s", line) for line in err)
    assert not any("\r" in line or "\x1b[" in line for line in err)


def test_durations_and_rate_lines():
    assert [progress.duration(s) for s in (0.4, 59.6, 61, 3599, 3600)] == [
        "0 s", "1 min 00 s", "1 min 01 s", "59 min 59 s", "1 h 00 min"]
    assert progress.rate_line("x", 0, 10, 0.0) == "x: 0% (0/10), 0/s"


@pytest.mark.slow
def test_the_demo_command_piped_never_goes_quiet(tmp_path):
    """`make demo`'s command with stderr piped (a CI log): a line at least every 30 s, and
    lines during the epoch (here every 2 s, on a small budget) rather than only at its end."""
    env = {**os.environ, "DMLKIT_PROGRESS_SECONDS": "2", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dmlkit", "train", "fashion-mnist-demo", "--set",
               "run.name=demo", "--set", "train.epochs=1", "--set", "train.batches_per_epoch=150",
               "--set", "data.max_per_class=300"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    times, lines = [], []  # gaps between lines (the first waits for Python and torch)
    for line in proc.stderr:
        times.append(time.perf_counter())
        lines.append(line.rstrip("\n"))
    assert proc.wait(timeout=600) == 0, "\n".join(lines)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 30, "\n".join(f"{g:6.1f} s  {line}" for g, line in zip(gaps, lines[1:],
                                                                             strict=True))
    assert any(re.match(r"epoch 1/1: \d+% \(\d+/150\)", line) for line in lines), lines
