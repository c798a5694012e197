import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli_output import message_lines
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
    res = CliRunner().invoke(app, ["reproduce", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert "original" in res.output and "reproduced" in res.output and "note" not in res.output
    original, again = (json.loads((tmp_path / n / "metrics.json").read_text())["final"]
                       for n in ("cli", "cli-reproduced"))
    assert again == original  # same seed, one CPU process: exactly the same run


@pytest.mark.parametrize("args,message", [
    (["train", "digits-smoke", "--set", "train.epochz=1"], "unknown key 'train.epochz'"),
    (["train", "no-such-preset"], "no preset or config file"),
    (["train", "digits-smoke", "--set", "data.name=nope"], "unknown dataset 'nope'"),
    (["train", "digits-smoke", "--set", "data.name=mnist", "--set", "data.root=/nonexistent"],
     "does not exist"),
    (["evaluate", "/nonexistent-run"], "/nonexistent-run does not exist"),
])
def test_user_errors_are_one_line(args, message, tmp_path):
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(message_lines(res.stderr)) == 1


def test_debug_shows_traceback(tmp_path):
    res = run_cli("--debug", "train", "no-such-preset", cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_presets_listed():
    res = CliRunner().invoke(app, ["presets"])
    assert "fashion-mnist-demo" in res.output and "mdr-paper-cub" in res.output


def test_evaluate_embeddings_npz(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5)
    emb = np.eye(4)[labels] + 0.01 * rng.standard_normal((20, 4))
    np.savez(tmp_path / "e.npz", embeddings=emb.astype(np.float32), labels=labels)
    res = CliRunner().invoke(app, ["evaluate-embeddings", str(tmp_path / "e.npz"),
                                   "--per-class"])
    assert res.exit_code == 0, res.output
    assert "1.000" in res.output and "per class" in res.output
    flags = np.arange(20) % 2 == 0
    np.savez(tmp_path / "q.npz", embeddings=emb.astype(np.float32), labels=labels,
             is_query=flags, is_gallery=~flags)
    res = CliRunner().invoke(app, ["evaluate-embeddings", str(tmp_path / "q.npz")])
    assert res.exit_code == 0 and "10 queries" in res.output


def test_evaluate_embeddings_bad_file(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"nope")
    res = run_cli("evaluate-embeddings", str(tmp_path / "bad.npz"))
    assert res.returncode == 2 and "cannot read" in res.stderr


def test_datasets_list_and_describe():
    res = CliRunner().invoke(app, ["datasets"])
    assert res.exit_code == 0 and "digits" in res.output and "available (1797 images)" in res.output
    res = CliRunner().invoke(app, ["datasets", "--describe", "digits"])
    assert res.exit_code == 0 and '"images": 1797' in res.output and "image_stats" in res.output


@pytest.mark.parametrize("args,message", [
    (["train", "digits-smoke", "--epochs", "3"],
     "No such option: --epochs (config keys are set with --set, e.g. --set train.epochs=...)"),
    (["trian"], "No such command 'trian'. Did you mean 'train'?"),
    (["evaluate"], "Missing argument"),
    (["search", "gallery.faiss", "query.png", "-k", "ten"], "Invalid value for '-k'"),
    (["train", "digits-smoke", "--devices", "5"], "train.batch_size 24 is not divisible by 5"),
])
def test_usage_errors_are_one_line_with_exit_2(args, message):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_bare_dmlkit_prints_the_help_only():
    res = CliRunner().invoke(app, [])
    assert res.exit_code == 2 and "Usage" in res.output and "train" in res.output
    assert "Error" not in res.output and "Traceback" not in res.output


def test_train_of_a_file_that_is_no_yaml_config(tmp_path):
    (tmp_path / "README.md").write_text("# hello\n")
    res = CliRunner().invoke(app, ["train", str(tmp_path / "README.md")])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {tmp_path / 'README.md'} is not a YAML config " \
                                 "(.yaml or .yml)"


def test_presets_have_a_description_each():
    from dmlkit.config import preset_description, preset_names

    res = CliRunner().invoke(app, ["presets"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for name in preset_names():
        description = preset_description(name)
        assert description and "\n" not in description
        assert any(line.split() == [name, *description.split()]
                   for line in res.output.splitlines()), name


@pytest.mark.parametrize("command", sorted(app.registered_commands and
                                           [c.name or c.callback.__name__.replace("_", "-")
                                            for c in app.registered_commands]))
def test_help_is_plain_sentences_and_labels_in_words(command):
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "``" not in res.output  # no RST markup
    assert not re.search(r"<(str|int|bool|path|float|list\[\w+\])", res.output, re.I), res.output


def test_datasets_describe_names_its_own_option(tmp_path):
    res = CliRunner().invoke(app, ["datasets", "--describe", "cifar10", "--root",
                                   str(tmp_path / "none")])
    assert res.exit_code == 2 and "--root" in res.output and "data.root" not in res.output
