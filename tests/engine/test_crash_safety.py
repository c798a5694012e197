"""Crash safety in-process: mid-epoch checkpoints, exact resume, fallbacks, signals, full disks,
non-finite steps, and hostile inputs reported as one line by the command line."""

import csv
import errno
import json
import os
import signal
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cli_output import message_lines
from dmlkit import config
from dmlkit.base import atomic_write as atomic_write_mod
from dmlkit.base.atomic_write import WriteError, atomic_write_bytes
from dmlkit.base.files import load_weights
from dmlkit.cli.app import main
from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler
from dmlkit.data.random_batch_sampler import RandomBatchSampler
from dmlkit.engine.checkpoint import CheckpointFolder, load_state
from dmlkit.engine.interrupt import TrainingInterrupted
from dmlkit.engine.train import train
from dmlkit.errors import CheckpointError, ConfigError, DmlkitError, TrainingError
from dmlkit.methods.composed import ComposedMethod


def smoke(tmp_path, name, *overrides):
    return config.load("digits-smoke", [f"run.root={tmp_path}", f"run.name={name}",
                                        "eval.nmi=false", *overrides])


def cli(monkeypatch, capsys, *args):
    """``dmlkit ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dmlkit", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err):
    """The error is one line (progress and the run directory may precede it)."""
    return len(message_lines(err)) == 1 and "Traceback" not in err


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after the raise runs (no cleanup in the trainer)."""


def kill_after_saving(monkeypatch, epoch, batch):
    """Make the run 'die' right after the checkpoint pair (epoch, batch) is written."""
    save = CheckpointFolder.save

    def dying_save(self, weights, state, e, b=0):
        path = save(self, weights, state, e, b)
        if (e, b) == (epoch, batch):
            raise Killed
        return path

    monkeypatch.setattr(CheckpointFolder, "save", dying_save)


def final(run):
    return json.loads((run / "metrics.json").read_text())


# ----------------------------------------------------------------- mid-epoch checkpoints


def test_mid_epoch_checkpoint_holds_the_whole_position(tmp_path, monkeypatch):
    kill_after_saving(monkeypatch, 1, 6)  # iteration 16 of 2 x 10
    with pytest.raises(Killed):
        train(smoke(tmp_path, "a", "train.checkpoint_every=8"))
    folder = CheckpointFolder(tmp_path / "a" / "checkpoints")
    assert folder.pairs() == [(1, 0), (1, 6)]  # (0, 8) pruned at the end of epoch 1
    state, weights = folder.load(1, 6)
    assert (state["epoch"], state["batch"], state["iteration"]) == (1, 6, 16)
    assert set(state["rng"]) == {"torch", "cuda_ranks", "numpy", "python"}
    assert state["current_epoch"]["steps"] == 6 and state["current_epoch"]["images"] == 6 * 24
    assert state["current_epoch"]["sums"]["loss"] > 0 and "untrained" in state["results"]
    assert {"optimizer", "scheduler", "method", "best", "bad_epochs"} <= set(state)
    assert weights and state["weights_sha256"]


@pytest.mark.parametrize("method,overrides", [
    ("mdr", ["data.transform=small_aug", "data.image_size=8"]),  # RNG in the transform
    ("sharing", ["method.sharing.shared_dim=16", "method.sharing.num_surrogate_labels=8"]),
])
def test_resume_mid_epoch_matches_uninterrupted(tmp_path, monkeypatch, method, overrides):
    args = [f"method.name={method}", "train.checkpoint_every=7", *overrides]
    full = train(smoke(tmp_path, "full", *args)).path
    kill_after_saving(monkeypatch, 1, 4)  # iteration 14: epoch 2, batch 4
    with pytest.raises(Killed):
        train(smoke(tmp_path, "cut", *args))
    monkeypatch.undo()
    resumed = train(None, resume=tmp_path / "cut").path
    a, b = final(full), final(resumed)
    assert b["final"] == a["final"] and b["best_val"] == a["best_val"]
    if method == "sharing":
        assert b["final_shared"] == a["final_shared"]
    assert metrics_rows(resumed) == metrics_rows(full)  # no duplicated or missing row


def metrics_rows(run):
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in ("train_seconds", "train_img_per_s")}
                for row in csv.DictReader(f)]


def test_resume_drops_metrics_rows_written_after_the_checkpoint(tmp_path, monkeypatch):
    kill_after_saving(monkeypatch, 1, 0)
    with pytest.raises(Killed):
        train(smoke(tmp_path, "a", "train.epochs=3"))
    monkeypatch.undo()
    csv_path = tmp_path / "a" / "metrics.csv"
    with csv_path.open("a") as f:  # a row of epoch 2, appended before a kill
        f.write("2" + ",0" * (len(csv_path.read_text().splitlines()[0].split(",")) - 1) + "\n")
    train(None, resume=tmp_path / "a")
    epochs = [r.split(",")[0] for r in csv_path.read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]


# ----------------------------------------------------------------- choosing the checkpoint


def test_newest_complete_pair_is_used(tmp_path, capsys):
    run = train(smoke(tmp_path, "a", "train.epochs=3", "train.keep_checkpoints=3")).path
    folder = CheckpointFolder(run / "checkpoints")
    assert folder.pairs() == [(1, 0), (2, 0), (3, 0)]
    folder.files(3)[1].unlink()  # weights of epoch 3 never written: pair ignored, no warning
    assert folder.pairs() == [(1, 0), (2, 0)]
    state_2 = folder.files(2)[0]
    state_2.write_bytes(state_2.read_bytes()[:200])  # truncated: fall back with a warning
    capsys.readouterr()
    path, state, _ = folder.load_newest(print)
    out = capsys.readouterr().out.strip().splitlines()
    assert path.name == "state-0001.pt" and state["epoch"] == 1
    assert len(out) == 1 and "state-0002.pt is not a readable dmlkit checkpoint" in out[0]


def test_weights_not_matching_their_state_are_rejected(tmp_path):
    run = train(smoke(tmp_path, "a", "train.keep_checkpoints=3")).path
    folder = CheckpointFolder(run / "checkpoints")
    folder.files(1)[1].write_bytes(folder.files(2)[1].read_bytes())  # a pair from two runs
    with pytest.raises(CheckpointError, match=r"is not the model saved with state-0001\.pt"):
        folder.load(1)
    warnings = []
    path, _, _ = folder.load_newest(warnings.append)
    assert path.name == "state-0002.pt" and not warnings


def test_truncated_newest_checkpoint_resume_falls_back(tmp_path, monkeypatch, capsys):
    aug = ["data.transform=small_aug", "data.image_size=8"]  # RNG restored at an epoch end
    full = train(smoke(tmp_path, "full", *aug)).path
    kill_after_saving(monkeypatch, 2, 0)
    with pytest.raises(Killed):
        train(smoke(tmp_path, "cut", *aug))
    monkeypatch.undo()
    newest = CheckpointFolder(tmp_path / "cut" / "checkpoints").files(2)[0]
    newest.write_bytes(newest.read_bytes()[:1000])
    capsys.readouterr()
    code, out, _ = cli(monkeypatch, capsys, "train", "--resume", str(tmp_path / "cut"))
    assert code == 0
    warning = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "state-0002.pt is not a readable" in warning[0]
    assert "resumed" in out and "after epoch 1" in out
    assert final(tmp_path / "cut")["final"] == final(full)["final"]


def test_all_checkpoints_unreadable_is_one_line(tmp_path, monkeypatch, capsys):
    run = train(smoke(tmp_path, "a")).path
    for p in (run / "checkpoints").glob("state-*"):
        p.write_bytes(b"not a checkpoint")
    code, _, err = cli(monkeypatch, capsys, "train", "--resume", str(run))
    assert code == 2 and one_line(err) and "no readable checkpoint in" in err


def test_resume_of_a_folder_that_is_no_run(tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "train", "--resume", str(tmp_path))
    assert code == 2 and one_line(err) and "is not a run directory" in err


def test_prune_keeps_newest_pairs_and_removes_leftovers(tmp_path):
    folder = CheckpointFolder(tmp_path)
    for key in [(1, 0), (1, 5), (2, 0), (2, 3), (2, 6), (2, 9), (3, 0), (3, 4), (3, 8)]:
        folder.save({"w": torch.ones(2)}, {"epoch": key[0]}, *key)
    folder.files(4, 2)[1].write_bytes(b"orphaned weights")
    (tmp_path / ".state-0004-000002.pt.tmpab12").write_bytes(b"interrupted write")
    (tmp_path / "notes.txt").write_text("not ours")
    folder.prune(keep=2)
    assert folder.pairs() == [(2, 0), (3, 0), (3, 4), (3, 8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for k in folder.pairs() for p in folder.files(*k)] + ["notes.txt"])


# ----------------------------------------------------------------- samplers resume mid-epoch


def test_m_per_class_sampler_starts_at_start_batch():
    labels = np.repeat(np.arange(8), 6)
    s = MPerClassBatchSampler(labels, batch_size=8, m=2, batches_per_epoch=6, seed=4)
    s.set_epoch(3)
    epoch = list(s)
    s.set_epoch(3, start_batch=4)
    assert list(s) == epoch[4:]
    assert list(s) == epoch  # start_batch applies to the next iteration only
    with pytest.raises(ConfigError, match="start_batch"):
        s.set_epoch(3, start_batch=7)


def test_random_batch_sampler_starts_at_start_batch():
    s = RandomBatchSampler(50, 8, seed=2)
    s.set_epoch(1)
    epoch = list(s)
    s.set_epoch(1, 5)
    assert list(s) == epoch[5:] and list(s) == epoch
    s.set_epoch(1, len(s))
    assert list(s) == []


def test_single_image_classes_are_not_sampled_with_m_of_two_or_more():
    labels = np.array([0] * 5 + [1] * 5 + [2] + [3] * 5 + [4])
    s = MPerClassBatchSampler(labels, batch_size=6, m=2, batches_per_epoch=20, seed=0)
    assert s.skipped_classes.tolist() == [2, 4]
    drawn = np.concatenate([labels[b] for b in s])
    assert set(drawn.tolist()) == {0, 1, 3}
    for batch in s:  # every drawn pair is two distinct images
        assert len(set(batch)) == len(batch)
    assert MPerClassBatchSampler(labels, batch_size=5, m=1).skipped_classes.size == 0
    with pytest.raises(DmlkitError, match="2 more have a single image"):
        MPerClassBatchSampler(labels, batch_size=8, m=2)


# ----------------------------------------------------------------- signals


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_finishes_the_step_saves_and_exits(tmp_path, monkeypatch, capsys, signum, code):
    class_step, calls = ComposedMethod.class_step, []

    def step_then_signal(self, model, batch):
        calls.append(1)
        if len(calls) == 13:
            os.kill(os.getpid(), signum)
        return class_step(self, model, batch)

    monkeypatch.setattr(ComposedMethod, "class_step", step_then_signal)
    handler = signal.getsignal(signum)
    code_, _, err = cli(monkeypatch, capsys, "train", "digits-smoke", "--set",
                        f"run.root={tmp_path}", "--set", "run.name=s", "--set", "eval.nmi=false")
    assert code_ == code and one_line(err)
    name = signal.Signals(signum).name
    assert f"stopped by {name} at epoch 2, iteration 3" in err
    assert f"dmlkit train --resume {tmp_path / 's'}" in err
    state = load_state(tmp_path / "s" / "checkpoints" / "state-0001-000003.pt")
    assert (state["epoch"], state["batch"], state["current_epoch"]["steps"]) == (1, 3, 3)
    assert len(calls) == 13  # the step under way finished; no further step ran
    assert signal.getsignal(signum) == handler  # restored after training


def test_interrupted_error_carries_the_exit_code():
    e = TrainingInterrupted("stopped", signal.SIGTERM)
    assert isinstance(e, TrainingError) and e.exit_code == 143


# ----------------------------------------------------------------- full disk


def test_atomic_write_on_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_write_mod.os, "fsync", full)
    with pytest.raises(WriteError, match=r"cannot write .*f\.bin: No space left") as e:
        atomic_write_bytes(path, b"new")
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous(tmp_path, monkeypatch,
                                                                           capsys):
    replace = os.replace

    def replace_until_full(src, dst):
        if os.path.basename(dst) == "state-0002.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(atomic_write_mod.os, "replace", replace_until_full)
    code, _, err = cli(monkeypatch, capsys, "train", "digits-smoke", "--set",
                       f"run.root={tmp_path}", "--set", "run.name=full", "--set", "eval.nmi=false")
    assert code == 2 and one_line(err)
    assert "state-0002.pt: No space left on device" in err
    assert "state-0001.pt) is intact" in err and "dmlkit train --resume" in err
    folder = CheckpointFolder(tmp_path / "full" / "checkpoints")
    assert folder.pairs() == [(1, 0)]
    state, weights = folder.load(1)
    assert state["epoch"] == 1 and weights
    assert not [p for p in folder.path.iterdir() if p.name.startswith(".")]  # no temp files


# ----------------------------------------------------------------- non-finite steps


def nan_on_calls(monkeypatch, bad_calls, grad=False):
    class_step, calls = ComposedMethod.class_step, []

    def patched(self, model, batch):
        calls.append(1)
        out = class_step(self, model, batch)
        if len(calls) in bad_calls:
            if grad:  # finite loss (0), NaN gradient: d sqrt(x)/dx at 0 times 0
                out["loss"] = out["loss"] * 0 + torch.sqrt(out["metric_loss"] * 0)
            else:
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(ComposedMethod, "class_step", patched)


def test_non_finite_loss_names_the_last_checkpoint_file(tmp_path, monkeypatch):
    nan_on_calls(monkeypatch, range(15, 100))  # epoch 2, iteration 5 on
    with pytest.raises(TrainingError) as e:
        train(smoke(tmp_path, "nan", "train.checkpoint_every=3"))
    last = tmp_path / "nan" / "checkpoints" / "state-0001-000002.pt"
    message = str(e.value)
    assert message.startswith("non-finite loss at epoch 2, iteration 5 (batch samples [")
    assert f"last good checkpoint: {last};" in message and "train.skip_nonfinite=true" in message
    assert load_state(last)["iteration"] == 12
    weights = load_weights(last.with_name("model-0001-000002.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_non_finite_gradient_is_caught(tmp_path, monkeypatch):
    nan_on_calls(monkeypatch, {3}, grad=True)
    with pytest.raises(TrainingError, match=r"non-finite gradient at epoch 1, iteration 3 .*"
                                            r"last good checkpoint: none yet"):
        train(smoke(tmp_path, "g"))


def test_skip_nonfinite_counts_and_logs_skipped_steps(tmp_path, monkeypatch, capsys):
    nan_on_calls(monkeypatch, {3, 7})
    run = train(smoke(tmp_path, "skip", "train.skip_nonfinite=true")).path
    out = capsys.readouterr().out
    assert "skipped a step with a non-finite loss at epoch 1, iteration 3" in out
    assert final(run)["skipped_nonfinite"] == {"count": 2, "at": [[1, 3], [1, 7]]}
    rows = (run / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("skipped_steps")
    assert [r.split(",")[col] for r in rows[1:]] == ["2", "0"]
    assert all(torch.isfinite(t).all() for t in load_weights(run / "model.safetensors").values())


def test_skip_nonfinite_gives_up_when_a_whole_epoch_is_non_finite(tmp_path, monkeypatch):
    nan_on_calls(monkeypatch, range(1, 100))
    with pytest.raises(TrainingError, match="every step of epoch 1 had a non-finite"):
        train(smoke(tmp_path, "all", "train.skip_nonfinite=true"))


# ----------------------------------------------------------------- hostile inputs, one line


def png(path, seed, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def image_folder(root, bad=None):
    """Class folders a..h of 4 images, ``b_single`` of 1 image, ``0_empty`` without images."""
    for c in "abcdefgh":
        for i in range(4):
            png(root / c / f"{i}.png", seed=ord(c) * 10 + i)
    png(root / "b_single" / "0.png", seed=1)
    (root / "0_empty").mkdir()
    if bad is not None:
        name, data = bad
        (root / "a" / name).write_bytes(data)
    return root


FOLDER_ARGS = ["--set", "data.name=folder", "--set", "data.transform=small", "--set",
               "data.image_size=8", "--set", "data.val_fraction=0", "--set",
               "data.train_classes=[0, 1, 2, 3, 4]", "--set", "train.batch_size=8", "--set",
               "train.m_per_class=2", "--set", "train.epochs=1", "--set",
               "train.batches_per_epoch=3", "--set", "eval.evaluate_untrained=false"]


def train_folder(monkeypatch, capsys, tmp_path, root, *extra):
    return cli(monkeypatch, capsys, "train", "digits-smoke", "--set", f"data.root={root}",
               "--set", f"run.root={tmp_path / 'runs'}", "--set", "run.name=f", *FOLDER_ARGS,
               *extra)


def test_empty_and_single_image_classes_train_with_one_warning(tmp_path, monkeypatch, capsys):
    root = image_folder(tmp_path / "images")
    code, out, err = train_folder(monkeypatch, capsys, tmp_path, root)
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 1 training class(es) with a single image are never sampled "
                        "(ids 2)"]  # sorted folders: a, b, b_single, ...


@pytest.mark.parametrize("bad,workers,message", [
    (("broken.png", b"\x89PNG not really"), 0, "unreadable image"),
    (("cut.jpg", None), 0, "cannot decode image"),
    (("cut.jpg", None), 1, "cannot decode image"),  # raised in a DataLoader worker
])
def test_undecodable_image_is_one_line(tmp_path, monkeypatch, capsys, bad, workers, message):
    if bad[1] is None:  # a JPEG cut short: its header verifies, decoding fails mid-training
        png(tmp_path / "full.png", 0)
        Image.open(tmp_path / "full.png").resize((64, 64)).save(tmp_path / "full.jpg")
        data = (tmp_path / "full.jpg").read_bytes()
        bad = (bad[0], data[: len(data) // 2])
    root = image_folder(tmp_path / "images", bad)
    code, _, err = train_folder(monkeypatch, capsys, tmp_path, root, "--set",
                                f"data.num_workers={workers}")
    assert code == 2 and one_line(err) and message in err and bad[0] in err


@pytest.mark.parametrize("args,message", [
    (["--set", "train.checkpoint_every=-1"], "'train.checkpoint_every'"),
    (["--set", "train.skip_nonfinite=maybe"], "'train.skip_nonfinite'"),
    (["--set", "train.checkpoint_evry=5"], "unknown key 'train.checkpoint_evry'"),
    (["--set", "data.name=folder", "--set", "data.root=/nonexistent/images"], "does not exist"),
])
def test_bad_config_or_path_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    code, _, err = cli(monkeypatch, capsys, "train", "digits-smoke", "--set",
                       f"run.root={tmp_path}", *args)
    assert code == 2 and one_line(err) and message in err


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dmlkit", "--debug", "train", "--resume", str(tmp_path)])
    with pytest.raises(CheckpointError, match="not a run directory"):
        main()
