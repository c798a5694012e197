import math

import pytest
import torch

from dmlkit.errors import ConfigError
from dmlkit.losses.guided_master_loss import GuidedMasterLoss


def brute_force(a, p, n, u, v, margin, beta):
    triplet, compaction = 0.0, 0.0
    for b in range(len(a)):
        d_ap = math.dist(a[b].tolist(), p[b].tolist())
        d_an = math.dist(a[b].tolist(), n[b].tolist())
        triplet += max(0.0, d_ap - d_an + margin)
        compaction += math.dist(u[b].flatten().tolist(), v[b].flatten().tolist())
    return (1 - beta) * triplet / len(a) + beta * compaction / len(a), triplet / len(a)


@pytest.mark.parametrize(("margin", "beta"), [(3.0, 0.003), (0.5, 0.3), (1.0, 0.0)])
def test_matches_brute_force(margin, beta):
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(6, 2, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    u, v = (torch.randn(6, 4, 2, 2, generator=g, dtype=torch.float64) for _ in range(2))
    loss_fn = GuidedMasterLoss(margin=margin, beta=beta)
    expected, expected_triplet = brute_force(a, p, n, u, v, margin, beta)
    assert loss_fn(a, p, n, u, v).item() == pytest.approx(expected, rel=1e-12)
    assert loss_fn.last_terms["triplet"].item() == pytest.approx(expected_triplet, rel=1e-12)
    assert not loss_fn.last_terms["compaction"].requires_grad


def test_distances_are_exact_with_zero_eps():
    # a == p: torch's default eps=1e-6 would give d_ap = sqrt(2) * 1e-6 instead of 0
    a = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    p = torch.zeros(1, 2, dtype=torch.float64)
    n = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    u = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    loss = GuidedMasterLoss(margin=6.0, beta=0.0)(
        a, p, n, u, torch.zeros(1, 3, dtype=torch.float64)
    )
    assert loss.item() == 1.0
    loss.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(u.grad).all()


def test_gradients_reach_all_inputs():
    a, p, n = (torch.randn(4, 2, requires_grad=True) for _ in range(3))
    u, v = (torch.randn(4, 8, requires_grad=True) for _ in range(2))
    GuidedMasterLoss(margin=10.0, beta=0.5)(a, p, n, u, v).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (a, p, n, u, v))


def test_errors():
    with pytest.raises(ConfigError):
        GuidedMasterLoss(beta=1.5)
    with pytest.raises(ConfigError):
        GuidedMasterLoss(margin=-1.0)
    loss = GuidedMasterLoss()
    x = torch.zeros(4, 2)
    with pytest.raises(ConfigError):
        loss(x, x, torch.zeros(3, 2), torch.zeros(4, 5), torch.zeros(4, 5))
    with pytest.raises(ConfigError):
        loss(x, x, x, torch.zeros(4, 5), torch.zeros(3, 5))
