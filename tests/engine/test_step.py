"""`Stepper`: a step with a non-finite loss or gradient is not applied, on the device for fused
optimizers (no read) and after a read for the others; it is reported by `read` with its
samples, and its losses stay out of the sums."""

import pytest
import torch

from dmlkit.engine.step import Stepper

OPTIMIZERS = {
    "adam (fused)": lambda p: torch.optim.Adam(p, lr=0.1, fused=True),
    "sgd (fused)": lambda p: torch.optim.SGD(p, lr=0.1, fused=True),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.1),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_non_finite_steps_are_not_applied_and_reported(name):
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = OPTIMIZERS[name]([w])
    stepper = Stepper(optimizer, torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"))
    assert stepper.on_device == (name != "rmsprop")
    stepper.reset({})
    index = [torch.tensor([4, 7])]
    stepper.step({"loss": (w * w).sum()}, index, 0)  # applied
    after_first = w.detach().clone()
    stepper.step({"loss": (w * w).sum() * torch.nan}, index, 1)  # non-finite loss
    stepper.step({"loss": torch.sqrt(w[0] * 0)}, index, 2)  # finite loss, NaN gradient
    assert torch.equal(w.detach(), after_first)
    sums, applied, bad = stepper.read()
    assert applied == 1 and sums["loss"] == 5.0
    assert [(b.iteration, b.bad, b.overflow, b.samples) for b in bad] == [
        (1, "loss", False, [4, 7]), (2, "gradient", False, [4, 7])]
    assert not stepper.unread
    if name == "adam (fused)":  # the skipped steps did not advance its step count either
        assert float(optimizer.state[w]["step"]) == 1.0
