"""torch.distributed for dmlkit: process group, global-batch gathering, gradient averaging.

The contract (docs/distributed.md): with ``W`` ranks each rank embeds its slice of the global
batch; methods `gather` the slices (rank order = global batch order) so every rank computes the
*same* loss ``L`` on the global batch. The gather's backward sums the ranks' gradients of the
gathered tensor, so rank r receives ``W * dL/dx_r``; `average_gradients` then averages every
parameter's gradient over ranks:

    (1/W) * sum_r W * dL/dx_r * dx_r/dtheta = dL/dtheta,

exactly the gradient of one process on the global batch. Parameters outside the model (loss
parameters, MDR levels) get ``dL/dbeta`` on every rank; their average is the same value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

BUCKET_BYTES = 25 * 2**20  # gradients are all-reduced in flat buckets of about this size


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def info() -> DistInfo:
    """The current process group's rank and size (rank 0 of 1 when none is initialized)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size())


def launched() -> bool:
    """True when started by torchrun (or any launcher setting ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _from_all_ranks(x: Tensor) -> Tensor:
    """Every rank's ``x`` (same shape everywhere) concatenated along dim 0 in rank order."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; backward: the sum over ranks of the gathered gradient, sliced."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.rank, ctx.n = dist.get_rank(), len(x)
        return _from_all_ranks(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather(x: Tensor) -> Tensor:
    """The global batch: every rank's ``x`` (same shape on every rank) concatenated in rank
    order; gradients flow back to the owning rank. Identity without a process group."""
    if not info().active:
        return x
    return _GatherWithGrad.apply(x) if x.requires_grad else _from_all_ranks(x)


def average_gradients(params: list[Tensor]) -> None:
    """Average the gradients of ``params`` over ranks, in place, in flat buckets.

    Parameters without a gradient are skipped; which ones have none is the same on every rank
    (every rank runs the same graph on the same global batch).
    """
    world = info().world_size
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[Tensor] = []
    size = 0
    for g in [*grads, None]:
        if g is not None:
            bucket.append(g)
            size += g.numel() * g.element_size()
        if bucket and (g is None or size >= BUCKET_BYTES):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat /= world
            offset = 0
            for b in bucket:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()
            bucket, size = [], 0


def gather_by_index(values: Tensor, indices: Tensor, total: int) -> Tensor:
    """Rows computed on different ranks put back in sample order: ``values[i]`` belongs to
    sample ``indices[i]``; returns ``total`` rows, each sample once (no padding duplicates).
    Every rank gets the result (on ``values``' device); without a process group the rows are
    just ordered."""
    home = values.device
    if info().active:
        values, indices = values.to(_comm_device()), indices.to(_comm_device())
        width = int(_from_all_ranks(torch.tensor([len(values)], device=values.device)).max())
        padded = values.new_zeros((width, *values.shape[1:]))
        padded[: len(values)] = values
        pad_idx = indices.new_full((width,), -1)
        pad_idx[: len(indices)] = indices
        all_idx = _from_all_ranks(pad_idx)
        keep = all_idx >= 0
        values, indices = _from_all_ranks(padded)[keep], all_idx[keep]
    if len(indices) != total or not torch.equal(indices.sort().values,
                                                torch.arange(total, device=indices.device)):
        raise RuntimeError(f"gathered {len(indices)} rows for {total} samples (lost or doubled)")
    out = values.new_empty((total, *values.shape[1:]))
    out[indices] = values
    return out.to(home)


def all_objects(obj: Any) -> list:
    """Every rank's ``obj`` in rank order, on every rank (pickled; ``[obj]`` alone)."""
    if not info().active:
        return [obj]
    out: list = [None] * info().world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small results and decisions)."""
    if not info().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. a stop signal)."""
    if not info().active:
        return flag
    t = torch.tensor([int(flag)], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if info().active:
        dist.barrier()


def _comm_device() -> torch.device:
    """Where small control tensors live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
