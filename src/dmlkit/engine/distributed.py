"""Launching and joining torch.distributed process groups (torchrun standalone, NCCL/gloo).

The collectives every layer uses (gather, gradient averaging, broadcast) are in
`dmlkit.base.process_group`; this module starts and ends the processes.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import torch
import torch.distributed as dist

from dmlkit.base.process_group import DistInfo, info
from dmlkit.engine.interrupt import TrainingInterrupted
from dmlkit.errors import ConfigError, TrainingError

# exit codes of a rank stopped by SIGINT/SIGTERM: 128 + n after its checkpoint (dmlkit's own
# exit), or -n when the launcher's follow-up signal ended it
STOP_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}
# ranks wait this long at a collective: covers rank 0 alone training Guided DML's master
TIMEOUT = timedelta(minutes=60)


def init_from_env(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...);
    NCCL on CUDA, gloo on CPU. Returns this rank's place and device (``cuda:LOCAL_RANK``)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={device} but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                              "GPU(s) on this node: lower --nproc-per-node / --devices")
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return info(), target


def launch(nproc: int, args: list[str]) -> None:
    """Run ``args`` (``-m module ...`` or a script) in ``nproc`` processes on this machine
    through torchrun's standalone rendezvous. Ranks that stopped on SIGINT/SIGTERM (after
    their checkpoint) raise `TrainingInterrupted`; any other failure a `TrainingError`
    naming the ranks."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", *args]))
    except ChildFailedError as e:
        codes = sorted(f.exitcode for f in e.failures.values())
        if codes and all(c in STOP_CODES for c in codes):
            signum = abs(codes[-1]) % 128  # a rank's own exit (128 + n) names the signal
            raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name}; the resume "
                                      "command is printed above", signum) from None
        ranks = ", ".join(str(f.local_rank) for f in e.failures.values())
        raise TrainingError(f"{nproc}-process training failed on rank(s) {ranks}; the "
                            "rank's own error is printed above") from None


def shutdown() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
