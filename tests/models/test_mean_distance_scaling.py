import math

import torch

from dmlkit.models.mean_distance_scaling import MeanDistanceScaling


def _mean_offdiagonal_distance(x: torch.Tensor) -> float:
    rows = x.tolist()
    n = len(rows)
    total = sum(math.dist(rows[i], rows[j]) for i in range(n) for j in range(n) if i != j)
    return total / (n * (n - 1))


def test_training_output_has_unit_mean_distance():
    x = torch.randn(9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 7
    out = MeanDistanceScaling()(x)
    assert abs(_mean_offdiagonal_distance(out) - 1.0) < 1e-12
    assert torch.allclose(out * _mean_offdiagonal_distance(x), x, atol=1e-12)


def test_eval_returns_input_unchanged():
    x = torch.randn(6, 4)
    assert torch.equal(MeanDistanceScaling().eval()(x), x)


def test_single_sample_training_batch_is_unchanged():
    x = torch.randn(1, 4)
    assert torch.equal(MeanDistanceScaling()(x), x)


def test_divisor_is_in_the_graph():
    # x / mean_distance(x) is invariant to x -> c x, so the gradient of any function of the
    # output is orthogonal to x (Euler); with a detached divisor it would not be.
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    MeanDistanceScaling()(x).pow(2).sum().backward()
    assert abs((x.grad * x.detach()).sum().item()) < 1e-10
    assert x.grad.abs().sum().item() > 1e-3


def test_gradcheck():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(MeanDistanceScaling(), (x,))
