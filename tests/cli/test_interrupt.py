"""Real processes: Ctrl-C (SIGINT) outside the training loop ends a command with exit 130 and
one line. The process is caught while it reads its dataset: one "image" is a FIFO, whose
``open`` blocks until a writer appears; the test opens the writing end only once the command
holds the reading end, so the signal provably arrives during data loading."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cli_output import message_lines
from dmlkit.cli.app import app

pytestmark = pytest.mark.slow


def folder_with_fifo(root):
    """Four class folders of three 8x8 grey PNGs, and a FIFO posing as a fifth image."""
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 60 * c + i, np.uint8)).save(root / f"c{c}/{i}.png")
    fifo = root / "c0" / "fifo.png"
    os.mkfifo(fifo)
    return fifo


def default_sigint():
    """The child's Ctrl-C as in a terminal: a suite started in the background by a
    non-interactive shell (``cmd &``) inherits SIGINT ignored, and Python keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_while_reading(args, fifo, cwd):
    """Start ``python -m dmlkit ARGS``; SIGINT once it opened ``fifo``. (exit code, output)

    The FIFO's writing end is closed (so the blocked reader thread can end and the process
    exit) only after the command said it was interrupted: under load, closing it at once would
    let the read fail before the main thread handles the signal."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = cwd / "output.txt"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "dmlkit", *args], cwd=cwd, env=env,
                                text=True, stdout=sink, stderr=subprocess.STDOUT,
                                preexec_fn=default_sigint)
    t0 = time.monotonic()
    while True:  # a non-blocking writer open succeeds only once a reader holds the FIFO
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as e:
            assert e.errno == errno.ENXIO, e
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() - t0 < 120, "the command never opened the FIFO"
            time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    while "interrupted" not in log.read_text() and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    os.close(fd)  # the reading thread gets EOF and ends, so the process can exit
    proc.wait(timeout=60)
    return proc.returncode, log.read_text()


def test_ctrl_c_while_train_loads_data(tmp_path):
    fifo = folder_with_fifo(tmp_path / "images")
    code, output = interrupt_while_reading(
        ["train", "digits-smoke", "--set", "data.name=folder", "--set",
         f"data.root={tmp_path / 'images'}", "--set", "run.root=runs"], fifo, tmp_path)
    assert code == 130, output
    assert message_lines(output) == ["interrupted (SIGINT)"]
    assert not (tmp_path / "runs").exists()  # data is read before a run directory is made


def test_ctrl_c_while_evaluate_loads_data(tmp_path):
    res = CliRunner().invoke(app, ["train", "digits-smoke", "--set", f"run.root={tmp_path}",
                                   "--set", "run.name=r", "--set", "train.epochs=1",
                                   "--set", "train.batches_per_epoch=1",
                                   "--set", "eval.evaluate_untrained=false"])
    assert res.exit_code == 0, res.output
    fifo = folder_with_fifo(tmp_path / "images")
    cfg_path = tmp_path / "r" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"].update(name="folder", root=str(tmp_path / "images"))
    cfg_path.write_text(yaml.safe_dump(cfg))
    code, output = interrupt_while_reading(["evaluate", str(tmp_path / "r")], fifo, tmp_path)
    assert code == 130, output
    assert message_lines(output) == ["interrupted (SIGINT)"]
