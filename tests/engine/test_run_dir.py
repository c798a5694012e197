"""`RunDir.state`: written states, and states inferred where no process reports any more."""

import json
import platform
import subprocess
import sys

from dmlkit.base.run_dir import RunDir


def test_states_round_trip(tmp_path):
    run = RunDir(tmp_path)
    for state in ("running", "interrupted", "failed", "finished"):
        run.set_state(state, "why")
        assert (run.state().state, run.state().message) == (state, "why")
    assert not list(tmp_path.glob(".state.json.*"))  # written atomically (no temp files left)


def test_running_whose_process_is_gone_reads_interrupted(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    state = {"state": "running", "message": "", "pid": int(dead), "host": platform.node()}
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert RunDir(tmp_path).state().state == "interrupted"
    state["host"] = "another-machine"  # cannot tell there: trust the file
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert RunDir(tmp_path).state().state == "running"


def test_run_directories_without_state_file(tmp_path):
    assert RunDir(tmp_path).state().state == "interrupted"
    (tmp_path / "metrics.json").write_text("{}")
    assert RunDir(tmp_path).state().state == "finished"
