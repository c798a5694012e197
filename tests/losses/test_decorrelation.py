import copy

import pytest
import torch
import torch.nn.functional as F

from dmlkit.errors import ConfigError
from dmlkit.losses.decorrelation import DecorrelationLoss


def unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=1)


def make(dim_c=5, dim_s=3, hidden=16, seed=0):
    torch.manual_seed(seed)
    return DecorrelationLoss(dim_c=dim_c, dim_s=dim_s, hidden=hidden).double()


def brute_sim(loss_fn, phi_c, phi_s):
    """sim by explicit loops over samples and dimensions, without gradient reversal."""
    total = 0.0
    for i in range(len(phi_c)):
        r = loss_fn.regressor(phi_s[i])
        r = r / r.norm()
        for j in range(phi_c.shape[1]):
            total = total + (phi_c[i, j] * r[j]) ** 2
    return total / phi_c.numel()


def test_default_architecture():
    layers = DecorrelationLoss().regressor
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert (layers[0].in_features, layers[0].out_features) == (128, 512)
    assert (layers[2].in_features, layers[2].out_features) == (512, 128)
    loss_fn = DecorrelationLoss()
    own = {id(p) for p in loss_fn.parameters()}
    assert own == {id(p) for p in loss_fn.regressor.parameters()}  # one param group: regressor


def test_value_is_minus_sim():
    loss_fn = make()
    phi_c, phi_s = unit(6, 5, seed=1), unit(6, 3, seed=2)
    expected = -brute_sim(loss_fn, phi_c, phi_s)
    assert torch.allclose(loss_fn(phi_c, phi_s), expected, atol=1e-14)


def test_regressor_step_increases_sim():
    loss_fn = make()
    phi_c, phi_s = unit(32, 5, seed=3), unit(32, 3, seed=4)
    before = loss_fn(phi_c, phi_s)
    optimizer = torch.optim.SGD(loss_fn.regressor.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        loss_fn(phi_c, phi_s).backward()
        optimizer.step()
    after = loss_fn(phi_c, phi_s)
    assert -after > -before + 1e-3  # sim went up: the regressor learns to predict phi_c


def test_embedding_gradients_are_reversed_and_regressor_gradients_are_not():
    loss_fn = make()
    reference = copy.deepcopy(loss_fn)
    phi_c = unit(8, 5, seed=5).requires_grad_(True)
    phi_s = unit(8, 3, seed=6).requires_grad_(True)
    loss_fn(phi_c, phi_s).backward()

    ref_c, ref_s = phi_c.detach().clone().requires_grad_(True), phi_s.detach().clone()
    ref_s.requires_grad_(True)
    (-brute_sim(reference, ref_c, ref_s)).backward()  # the same -sim, no reversal

    assert torch.allclose(phi_c.grad, -ref_c.grad, atol=1e-14)
    assert torch.allclose(phi_s.grad, -ref_s.grad, atol=1e-14)
    assert phi_s.grad.abs().sum() > 0 and phi_c.grad.abs().sum() > 0
    for p, q in zip(loss_fn.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-14)


def test_encoder_descent_reduces_sim():
    loss_fn = make()
    phi_c = unit(16, 5, seed=7).requires_grad_(True)
    phi_s = unit(16, 3, seed=8)
    sim_before = -loss_fn(phi_c, phi_s).item()
    loss_fn(phi_c, phi_s).backward()
    with torch.no_grad():
        phi_c -= 0.1 * phi_c.grad  # what an encoder step on phi_c would do
    assert -loss_fn(phi_c, phi_s).item() < sim_before


def test_degenerate_inputs_stay_finite():
    loss_fn = make()
    with torch.no_grad():
        loss_fn.regressor[2].weight.zero_()
        loss_fn.regressor[2].bias.zero_()  # R(phi_s) == 0: normalize must use its eps
    phi_c = torch.zeros(4, 5, dtype=torch.float64, requires_grad=True)
    phi_s = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(phi_c, phi_s)
    loss.backward()
    assert loss.item() == 0.0
    grads = [phi_c.grad, phi_s.grad, *(p.grad for p in loss_fn.parameters())]
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    ("c_shape", "s_shape", "error", "message"),
    [
        ((4, 6), (4, 3), ConfigError, "phi_c has 6 dims .* dim_c=5"),
        ((4, 5), (4, 2), ConfigError, "phi_s has 2 dims .* dim_s=3"),
        ((4, 5), (3, 3), ValueError, "same B"),
        ((5,), (4, 3), ValueError, r"got \(5,\) and \(4, 3\)"),
    ],
)
def test_shape_errors(c_shape, s_shape, error, message):
    loss_fn = make()
    with pytest.raises(error, match=message):
        loss_fn(torch.zeros(c_shape).double(), torch.zeros(s_shape).double())
