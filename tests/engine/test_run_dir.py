"""`RunDir.state`: written states, and states inferred where no process reports any more."""

import json
import platform
import subprocess
import sys
import textwrap
import time

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


def test_processes_creating_one_name_at_once_get_distinct_directories(tmp_path):
    """``mkdir`` is the claim (issue 30): 2 processes x 10 rounds, released together."""
    script = textwrap.dedent("""
        import sys, time
        from dmlkit.base.run_dir import RunDir
        from dmlkit.config import Config
        root, start = sys.argv[1], float(sys.argv[2])
        cfgs = [Config.model_validate({"run": {"root": f"{root}/{r}", "name": "same"}})
                for r in range(10)]
        for r, cfg in enumerate(cfgs):
            time.sleep(max(0.0, start + 0.2 * r - time.time()))
            print(RunDir.create(cfg).path)
    """)
    start = time.time() + 8  # both have imported torch by then
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    paths = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [len(p) for p in paths] == [10, 10]
    assert len(set(paths[0] + paths[1])) == 20  # never the same directory twice
    for r in range(10):
        assert sorted(d.name for d in (tmp_path / str(r)).iterdir()) == ["same", "same-2"]
