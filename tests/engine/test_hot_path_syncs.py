"""Device reads (host-device syncs on a GPU) of dmlkit's own code in the training hot path.

On the CPU nothing syncs, so the reads are counted where Python asks a tensor for a value:
``item``, ``bool``, ``float``, ``int``, ``tolist``, ``nonzero``, one-argument ``torch.where``
and boolean-mask indexing, called from a dmlkit source file. (Library code is not counted:
PML's semihard miner reads the device a few times per step; Adam's ``item`` is on its step
counter, a CPU tensor.) Bound: one read per step (the fused finite check) plus one per
``train.log_every`` iterations and one at the epoch end (the loss sums).
"""

import collections
import sys

import pytest
import torch
from rich.console import Console
from rich.progress import Progress

from dmlkit import config
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.train import build_components
from dmlkit.engine.trainer import Trainer

READS = ("item", "__bool__", "__float__", "__int__", "tolist", "nonzero")


def caller_in_dmlkit() -> bool:
    frame = sys._getframe(2)
    return "/dmlkit/" in frame.f_code.co_filename.replace("\\", "/")


@pytest.fixture
def count_reads(monkeypatch):
    counts: collections.Counter = collections.Counter()

    def counted(name, original, is_read=lambda *a, **k: True):
        def wrapper(*args, **kwargs):
            if is_read(*args, **kwargs) and caller_in_dmlkit():
                counts[name] += 1
            return original(*args, **kwargs)
        return wrapper

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "nonzero", counted("nonzero", torch.nonzero))
    monkeypatch.setattr(torch, "where", counted("where", torch.where,
                                                lambda *a, **k: len(a) + len(k) == 1))

    def is_mask(self, index):
        items = index if isinstance(index, tuple) else (index,)
        return any(torch.is_tensor(i) and i.dtype == torch.bool for i in items)

    monkeypatch.setattr(torch.Tensor, "__getitem__",
                        counted("mask_index", torch.Tensor.__getitem__, is_mask))
    return counts


@pytest.mark.parametrize("method", ["metric", "mdr"])
def test_reads_per_step_are_bounded(tmp_path, count_reads, method):
    iterations, log_every = 10, 4
    cfg = config.load("digits-smoke", [
        f"run.root={tmp_path}", f"method.name={method}", f"train.batches_per_epoch={iterations}",
        f"train.log_every={log_every}", "data.transform=small_aug", "data.image_size=8",
    ])
    data, method_, model = build_components(cfg)
    trainer = Trainer(cfg, data, model, method_, RunDir.create(cfg), torch.device("cpu"),
                      Console(quiet=True))
    count_reads.clear()
    out = trainer.train_epoch(Progress(console=Console(quiet=True)))
    reads = sum(count_reads.values())
    assert trainer.current["steps"] == iterations and out["train_loss"] > 0
    assert reads <= iterations + iterations // log_every + 1, dict(count_reads)
    assert count_reads["__bool__"] == iterations  # exactly the one finite check per step
