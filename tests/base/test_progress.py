import io
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
