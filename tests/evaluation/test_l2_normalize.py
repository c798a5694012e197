import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmlkit.evaluation import evaluate
from dmlkit.evaluation.knn import l2_normalize


def test_rows_of_any_scale_give_the_same_unit_rows():
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(l2_normalize(x), F.normalize(x, dim=1))  # unchanged at ordinary scale
    for scale in (1e-30, 1e30):
        torch.testing.assert_close(l2_normalize(x * scale), F.normalize(x, dim=1))
    assert torch.equal(l2_normalize(torch.zeros(2, 3)), torch.zeros(2, 3))
    assert l2_normalize(torch.zeros(0, 3)).shape == (0, 3)


@pytest.mark.parametrize("scale", [1e-30, 1e-20])  # (large values: refused as such)
def test_normalized_scores_do_not_depend_on_the_scale(scale):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((300, 16)).astype(np.float32)
    labels = rng.integers(0, 30, 300)
    options = {"normalize": True, "metrics": ["precision_at_1", "map_at_r"]}
    base = evaluate(emb, labels, **options)
    scaled = evaluate((emb.astype(np.float64) * scale).astype(np.float32), labels, **options)
    assert scaled == base
