"""Checks before work: a config that cannot train fails in one line, before torch is imported
and before a run directory exists."""

import subprocess
import sys
import time

import pytest
import yaml

from dmlkit import config
from dmlkit.engine.preflight import check_new_run, resumed_config
from dmlkit.errors import CheckpointError, ConfigError

# the CLI in a fresh interpreter; afterwards: whether torch was imported, and the error line
PROBE = """
import sys
from dmlkit.cli.app import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print("torch" in sys.modules)
"""


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", "train.epochs=0: a run trains at least 1 epoch"),
    ("train.batch_size=7", "train.batch_size=7 is not a multiple of train.m_per_class=8"),
    ("train.epoch=1", "config: unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
])
def test_bad_config_fails_before_torch_and_the_run_directory(tmp_path, override, message):
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PROBE, "train", "digits-smoke", "--set",
                          override], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    seconds = time.perf_counter() - t0
    assert res.stderr.startswith(f"error: {message}") and len(res.stderr.splitlines()) == 1
    assert res.stdout.strip() == "False"  # torch never imported
    assert not (tmp_path / "runs").exists()
    assert seconds < 10  # < 1 s on an idle machine; generous for a shared one


def test_batch_blocks_follow_the_method():
    cfg = config.load("digits-smoke", ["train.batch_size=20"])
    with pytest.raises(ConfigError, match=r"use e.g. train.batch_size=16 or 24"):
        check_new_run(cfg)
    student = config.load("digits-smoke", ["train.batch_size=20", "method.loss_weight=0",
                                           "method.parts.guided={}"])
    check_new_run(student)  # a pure Guided student draws random batches of any size
    with pytest.raises(ConfigError, match="not divisible by 5 ranks"):
        check_new_run(config.load("digits-smoke"), world_size=5)


def test_yaml_error_has_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 1\n  bad: [1, 2\nrun: {}\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4:4: not valid YAML: expected ',' or ']'"):
        config.load(str(path))
    assert yaml.safe_load("a: 1") == {"a": 1}


def test_preset_typo_suggests_one_preset():
    with pytest.raises(ConfigError) as err:
        config.load("digits-smok")
    assert str(err.value) == ("no preset or config file 'digits-smok' (did you mean "
                              "'digits-smoke'?); 'dmlkit presets' lists the presets")


@pytest.mark.parametrize("override,suggestion", [
    ("trian.epochs=1", "unknown key 'trian' (did you mean 'train'?)"),
    ("method.parts.mdr.wieght=1", "(did you mean 'method.parts.mdr.weight'?)"),
    ("train.zzz=1", "unknown key 'train.zzz'"),
])
def test_unknown_keys_suggest_the_closest(override, suggestion):
    with pytest.raises(ConfigError) as err:
        config.load("digits-smoke", [override])
    assert str(err.value).endswith(suggestion)


def test_resume_names_what_to_give_instead(tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    with pytest.raises(CheckpointError) as err:
        resumed_config(run / "config.yaml")
    assert str(err.value) == f"{run / 'config.yaml'} is a run's config file: give its run " \
                             f"directory, {run}"
    with pytest.raises(CheckpointError, match="does not exist"):
        resumed_config(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match=r"is not a run directory \(it has no config.yaml"):
        resumed_config(tmp_path)
