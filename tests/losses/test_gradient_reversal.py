import pytest
import torch

from dmlkit.errors import ConfigError
from dmlkit.losses.gradient_reversal import GradientReversal, GradientReversalLayer, grad_reverse


def loss_of(y):
    return (y.sin() * torch.arange(1.0, 1 + y.numel(), dtype=y.dtype).view_as(y)).sum()


def input_grad(x, through):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_of(through(x)), x)
    return g


def test_forward_is_identity():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    y = grad_reverse(x, scale=0.3)
    assert torch.equal(y, x) and y.dtype == x.dtype and y.shape == x.shape
    assert y.requires_grad and y.grad_fn is not None


@pytest.mark.parametrize("scale", [1.0, 0.25, 3.0, 0.0])
def test_gradient_is_negated_and_scaled_exactly(scale):
    x = torch.randn(4, 6, dtype=torch.float64)
    plain = input_grad(x, lambda t: t)
    reversed_ = input_grad(x, lambda t: grad_reverse(t, scale))
    assert torch.equal(reversed_, -scale * plain)
    # the plain gradient is itself right: compare with finite differences
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(loss_of, (x,))


def test_function_module_and_function_agree():
    x = torch.randn(7, dtype=torch.float64)
    expected = -0.5 * input_grad(x, lambda t: t)
    assert torch.equal(input_grad(x, lambda t: GradientReversal.apply(t, 0.5)), expected)
    layer = GradientReversalLayer(0.5)
    assert torch.equal(input_grad(x, layer), expected)
    layer.scale = 2.0  # schedules change the scale in place
    assert torch.equal(input_grad(x, layer), 4 * expected)
    assert "scale=2.0" in repr(layer)


def test_only_the_reversed_branch_flips():
    x = torch.tensor([2.0, -1.0], requires_grad=True)
    (x * 3 + grad_reverse(x) * 5).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-2.0, -2.0]))


def test_double_backward_passes_the_reversal_twice():
    # L = sum y^2 with y = grad_reverse(x, s): dL/dx = -2 s x; d/dx of that, through the
    # reversal again, is (-s) * 2 * (-s) = 2 s^2 per coordinate.
    s = 0.5
    x = torch.tensor([1.0, -3.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(grad_reverse(x, s).pow(2).sum(), x, create_graph=True)
    assert torch.equal(g, -2 * s * x.detach())
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.equal(gg, torch.full_like(gg, 2 * s * s))


def test_no_grad_input_passes_through():
    x = torch.randn(3)
    assert torch.equal(grad_reverse(x), x) and not grad_reverse(x).requires_grad


@pytest.mark.parametrize("scale", [-1.0, float("nan"), float("inf")])
def test_bad_scale(scale):
    with pytest.raises(ConfigError, match="finite and >= 0"):
        grad_reverse(torch.zeros(2), scale)
