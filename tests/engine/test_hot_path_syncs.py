"""Device reads (host-device syncs on a GPU) per training iteration, library code included.

On the CPU nothing syncs, so the reads are counted where a CUDA run would wait for the device:
at the dispatcher, every operator that reads a value or has a data-dependent size
(``_local_scalar_dense``: ``item``/``bool``/``float``/``int``; ``nonzero``, ``masked_select``,
boolean-mask indexing forward and backward, ``unique``, ``repeat_interleave`` by a tensor,
``equal``), plus ``Tensor.tolist``. Torch's, PML's and dmlkit's code are all counted. Bound:
at most one read per iteration outside the reads of the loss sums (every ``train.log_every``
iterations and at the epoch end), for every method.
"""

import collections

import pytest
import torch
from rich.console import Console
from rich.progress import Progress
from torch.utils._python_dispatch import TorchDispatchMode

from dmlkit import config
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.train import build_components
from dmlkit.engine.trainer import Trainer

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
         aten.equal.default, aten.is_nonzero.default, aten.repeat_interleave.Tensor,
         aten.unique_consecutive.default, aten._unique2.default, aten.unique_dim.default}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
            aten._index_put_impl_.default}


class CountReads(TorchDispatchMode):
    """Counts device reads by operator name; ``paused`` ones go to ``logged``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.logged = 0
        self.paused = False

    def read(self, name: str) -> None:
        if self.paused:
            self.logged += 1
        else:
            self.counts[name] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READS:
            self.read(func.__name__)
        elif func in INDEXING and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.read(f"mask {func.__name__}")
        return func(*args, **(kwargs or {}))


CASES = {
    "triplet": ("digits-smoke", []),
    "triplet-fp16": ("digits-smoke", ["train.precision=fp16"]),
    "mdr": ("digits-smoke", ["method.name=mdr"]),
    "margin": ("margin-small", []),
    "sharing": ("sharing-small", []),
    "guided-student": ("guided-small", ["method.parts.guided.master_epochs=1"]),
    "compose-smoke": ("compose-smoke", []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_at_most_one_read_per_iteration(tmp_path, monkeypatch, case):
    preset, extra = CASES[case]
    iterations, log_every = 6, 3
    cfg = config.load(preset, [
        f"run.root={tmp_path}", "data.name=digits", "data.image_size=28",
        "model.backbone=small_cnn", "train.batch_size=24", "train.m_per_class=8",
        f"train.batches_per_epoch={iterations}", f"train.log_every={log_every}", *extra,
    ])
    data, method, model = build_components(cfg)
    trainer = Trainer(cfg, data, model, method, RunDir.create(cfg), torch.device("cpu"),
                      Console(quiet=True))
    trainer.method.prepare(trainer.model, trainer.data, trainer.run.path, trainer.device)
    mode = CountReads()
    per_iteration: list[collections.Counter] = []
    steps, read_sums, tolist = trainer.method.steps, trainer._read_sums, torch.Tensor.tolist

    def counted_steps(*args, **kwargs):  # one call per iteration
        before = collections.Counter(mode.counts)
        yield from steps(*args, **kwargs)
        per_iteration.append(mode.counts - before)

    def paused_read_sums():
        mode.paused = True
        try:
            return read_sums()
        finally:
            mode.paused = False

    def counted_tolist(self):
        mode.read("tolist")
        return tolist(self)

    monkeypatch.setattr(trainer.method, "steps", counted_steps)
    monkeypatch.setattr(trainer, "_read_sums", paused_read_sums)
    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    with mode:
        out = trainer.train_epoch(Progress(console=Console(quiet=True)))
    cur = trainer.current  # fp16: the scaler may skip a first step (overflow)
    assert cur["steps"] + cur["overflows"] >= iterations and out["train_loss"] > 0
    assert len(per_iteration) == iterations
    assert all(sum(c.values()) <= 1 for c in per_iteration), per_iteration
    assert sum(mode.counts.values()) <= iterations, dict(mode.counts)  # between iterations: 0
    assert mode.logged == iterations // log_every  # one transfer per log step
