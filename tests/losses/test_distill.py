import inspect
import math

import pytest
import torch

from dmlkit.errors import ConfigError
from dmlkit.losses.distill import EmbeddingDistillationLoss
from numeric import assert_whole_close


def test_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    per_sample = [math.dist(s[b].tolist(), t[b].tolist()) for b in range(7)]
    mean = EmbeddingDistillationLoss()(s, t)
    assert_whole_close(mean, sum(per_sample) / 7)
    assert_whole_close(EmbeddingDistillationLoss("sum")(s, t), sum(per_sample))
    assert_whole_close(EmbeddingDistillationLoss("none")(s, t), per_sample)


def test_gradient_only_to_student():
    s = torch.randn(5, 2, requires_grad=True)
    t = torch.randn(5, 2, requires_grad=True)
    EmbeddingDistillationLoss()(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    # d/ds mean ||s - t|| = (s - t) / (B ||s - t||)
    expected = (s - t) / (5 * torch.linalg.vector_norm(s - t, dim=1, keepdim=True))
    torch.testing.assert_close(s.grad, expected.detach())


def test_takes_no_labels():
    assert list(inspect.signature(EmbeddingDistillationLoss.forward).parameters) == [
        "self",
        "student",
        "target",
    ]


def test_shape_and_config_errors():
    loss = EmbeddingDistillationLoss()
    with pytest.raises(ConfigError, match="embedding dim"):
        loss(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ConfigError):
        loss(torch.zeros(4, 2), torch.zeros(3, 2))
    with pytest.raises(ConfigError):
        loss(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ConfigError):
        EmbeddingDistillationLoss("max")
