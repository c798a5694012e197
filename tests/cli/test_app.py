import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dmlkit.cli.app import app


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dmlkit", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_train_prints_untrained_and_trained(tmp_path):
    res = CliRunner().invoke(app, ["train", "digits-smoke", "--set", f"run.root={tmp_path}",
                                   "--set", "run.name=cli"])
    assert res.exit_code == 0, res.output
    assert "untrained" in res.output and "trained" in res.output and "MAP@R" in res.output
    assert (tmp_path / "cli" / "metrics.json").is_file()
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "cli")])
    assert res.exit_code == 0 and "MAP@R" in res.output


@pytest.mark.parametrize("args,message", [
    (["train", "digits-smoke", "--set", "train.epochz=1"], "unknown key 'train.epochz'"),
    (["train", "no-such-preset"], "no preset or config file"),
    (["train", "digits-smoke", "--set", "data.name=nope"], "unknown dataset 'nope'"),
    (["train", "digits-smoke", "--set", "data.name=mnist", "--set", "data.root=/nonexistent"],
     "does not exist"),
    (["evaluate", "/nonexistent-run"], "not a run directory"),
])
def test_user_errors_are_one_line(args, message, tmp_path):
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback(tmp_path):
    res = run_cli("--debug", "train", "no-such-preset", cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_presets_listed():
    res = CliRunner().invoke(app, ["presets"])
    assert "fashion-mnist-demo" in res.output and "mdr-paper-cub" in res.output
