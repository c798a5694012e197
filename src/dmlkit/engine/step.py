"""`Stepper`: one optimizer step per dict of named losses, without reading the device.

The finite check (the loss and every gradient norm, one fused ``isfinite``) stays on the device:
a step whose check fails is not applied (fused Adam / AdamW / SGD skip it on the device through
their ``found_inf`` input, as under the gradient scaler; other optimizers read the check, one
device read per step), and its loss values are left out of the epoch sums. The per-step
checks, the loss sums and the count of applied steps are read together by `Stepper.read`
(the trainer reads every ``train.log_every`` iterations, at checkpoints and at the epoch end):
one transfer, so a non-finite step is reported then, naming its iteration and samples.

With fp16 a non-finite loss makes the gradients NaN before unscaling, so the gradient scaler
skips the step (and lowers its scale); a finite loss with non-finite gradients is the scaler's
overflow (docs/crash-safety.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmlkit.base import process_group


@dataclass
class BadStep:
    """A step not applied: its loss or a gradient was not finite (``overflow``: fp16's gradient
    scaler overflow, a finite loss with non-finite gradients)."""

    iteration: int  # within the epoch, from 0
    bad: str  # "loss" or "gradient"
    overflow: bool
    samples: list[int]


class Stepper:
    """Steps ``optimizer`` (with ``scaler``) on losses; keeps the epoch's float64 loss sums on
    the device. ``clip``: ``optim.grad_clip_value``."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 device: torch.device, clip: float | None = None) -> None:
        self.optimizer, self.scaler, self.device, self.clip = optimizer, scaler, device, clip
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        # fused optimizers take the finite check as found_inf and skip on the device
        self.on_device = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        self.sums: dict[str, torch.Tensor] = {}
        self._checks: list[tuple[int, torch.Tensor, list[torch.Tensor]]] = []

    @property
    def unread(self) -> bool:
        """Whether steps were taken since the last `read`."""
        return bool(self._checks)

    def reset(self, sums: dict[str, float]) -> None:
        """Start the sums at ``sums`` (an epoch's start, or a resumed position)."""
        self.sums = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                     for k, v in sums.items()}
        self._checks = []

    def step(self, losses: dict[str, torch.Tensor], indices: list[torch.Tensor],
             iteration: int) -> None:
        """Backward ``losses["loss"]``, average the gradients over ranks, step unless the loss
        or a gradient is not finite; add the losses to the sums where it is. ``indices``: the
        batch's sample indices (named when the step is reported)."""
        loss = losses["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        fp16 = self.scaler.is_enabled()
        loss_ok = torch.isfinite(loss.detach())
        self.scaler.scale(loss).backward()
        process_group.average_gradients(self.params)
        grads = [p.grad for p in self.params if p.grad is not None]
        if fp16:
            if grads:  # a non-finite loss poisons the gradients: the scaler skips the step
                torch._foreach_mul_(grads, torch.where(loss_ok, 1.0, torch.nan).float())
            self.scaler.unscale_(self.optimizer)
        norms = torch.stack(torch._foreach_norm(grads)).float() if grads else loss_ok[None]
        grads_ok = torch.isfinite(norms).all()  # a norm past the float32 range counts
        ok = loss_ok & grads_ok
        if self.clip is not None:
            torch.nn.utils.clip_grad_value_(self.params, self.clip)
        if fp16:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif self.on_device:
            self.optimizer.grad_scale, self.optimizer.found_inf = None, (~ok).float()
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.grad_scale, self.optimizer.found_inf
        elif bool(ok):  # one device read: this optimizer has no on-device skip
            self.optimizer.step()
        for k, v in losses.items():
            value = torch.where(ok, v.detach().to(torch.float64), 0.0)
            total = self.sums.get(k)
            self.sums[k] = value if total is None else total + value
        self._checks.append((iteration, torch.stack([loss_ok, grads_ok]), indices))

    def read(self) -> tuple[dict[str, float], int, list[BadStep]]:
        """(the epoch's loss sums, steps applied since the last read, the steps not applied):
        one transfer from the device."""
        checks, self._checks = self._checks, []
        flat = [v.reshape(1) for v in self.sums.values()] + [c.double() for _, c, _ in checks]
        values = torch.cat(flat).tolist() if flat else []
        n = len(self.sums)
        sums = dict(zip(self.sums, values[:n], strict=True))
        bad, applied = [], 0
        fp16 = self.scaler.is_enabled()
        for k, (iteration, _, indices) in enumerate(checks):
            loss_ok, grads_ok = values[n + 2 * k], values[n + 2 * k + 1]
            if loss_ok and grads_ok:
                applied += 1
                continue
            overflow = fp16 and bool(loss_ok)
            samples = [] if overflow or not indices else sorted(set(torch.cat(indices).tolist()))
            bad.append(BadStep(iteration, "gradient" if loss_ok else "loss", overflow, samples))
        return sums, applied, bad
