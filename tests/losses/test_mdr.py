import copy
import io
import math
import statistics

import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss, MarginLoss, TripletMarginLoss

from dmlkit.base.distances import pairwise_distances
from dmlkit.errors import ConfigError, TrainingError
from dmlkit.losses.mdr import MDRRegularizer


def _batch(seed: int, n: int = 10, dim: int = 6) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _brute_distances(x: torch.Tensor) -> list[list[float]]:
    rows = x.tolist()
    return [[math.dist(a, b) for b in rows] for a in rows]


def _brute_stats(x: torch.Tensor, include_diagonal: bool) -> tuple[float, float]:
    d = _brute_distances(x)
    n = len(d)
    values = [d[i][j] for i in range(n) for j in range(n) if include_diagonal or i != j]
    return statistics.mean(values), statistics.stdev(values)


def _brute_loss(x, levels, mu, sigma, nu) -> float:
    d = _brute_distances(x)
    n = len(d)
    terms = [
        min(abs((d[i][j] - mu) / sigma - s) for s in levels)
        for i in range(n)
        for j in range(n)
        if i != j
    ]
    return sum(terms) / len(terms) + nu * sum(s * s for s in levels)


def _reg(**kwargs) -> MDRRegularizer:
    return MDRRegularizer(**kwargs).double()


def test_pairwise_distances_match_brute_force():
    x = _batch(0)
    assert torch.allclose(
        pairwise_distances(x), torch.tensor(_brute_distances(x), dtype=x.dtype), atol=1e-9
    )
    assert torch.all(pairwise_distances(x).diagonal() == 0)


@pytest.mark.parametrize("include_diagonal", [True, False])
def test_first_batch_matches_brute_force(include_diagonal):
    x = _batch(1)
    levels = [-2.0, 0.5, 2.5]
    reg = _reg(levels=levels, nu=0.03, include_diagonal=include_diagonal)
    loss = reg(x)
    mu, sigma = _brute_stats(x, include_diagonal)
    assert reg.mu.item() == pytest.approx(mu, rel=1e-9)
    assert reg.sigma.item() == pytest.approx(sigma, rel=1e-9)
    assert loss.item() == pytest.approx(_brute_loss(x, levels, mu, sigma, 0.03), rel=1e-9)
    logs = reg.last_logs
    assert logs["mdr_level_penalty"].item() == pytest.approx(0.03 * (4 + 0.25 + 6.25))
    assert (logs["mdr"] + logs["mdr_level_penalty"]).item() == pytest.approx(loss.item())
    assert logs["mdr_levels"].tolist() == levels
    assert logs["mdr_mu"].item() == reg.mu.item()


def test_include_diagonal_shifts_statistics():
    x = _batch(2, n=12)
    on, off = _reg(include_diagonal=True), _reg(include_diagonal=False)
    on(x), off(x)
    n = x.shape[0]
    assert on.mu.item() == pytest.approx(off.mu.item() * (n - 1) / n, rel=1e-12)
    assert on.sigma.item() > off.sigma.item()
    values = pairwise_distances(x)
    assert on.sigma.item() == pytest.approx(values.flatten().std().item(), rel=1e-12)


def test_momentum_sequence_over_three_batches():
    reg = _reg(momentum=0.7, include_diagonal=False)
    batches = [_batch(s) for s in (3, 4, 5)]
    mu = sigma = None
    for k, x in enumerate(batches):
        loss = reg(x)
        mu_b, sigma_b = _brute_stats(x, include_diagonal=False)
        if k == 0:
            mu, sigma = mu_b, sigma_b
        else:
            mu, sigma = 0.7 * mu + 0.3 * mu_b, 0.7 * sigma + 0.3 * sigma_b
        assert reg.mu.item() == pytest.approx(mu, rel=1e-9)
        assert reg.sigma.item() == pytest.approx(sigma, rel=1e-9)
        # normalized with the statistics after this batch's update
        assert loss.item() == pytest.approx(_brute_loss(x, [-3, 0, 3], mu, sigma, 0.01), rel=1e-9)


def test_gradients_reach_embeddings_and_only_nearest_levels():
    x = _batch(6).requires_grad_(True)
    reg = _reg(levels=(-3.0, 0.0, 3.0, 50.0), nu=0.0)
    reg(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # level 50 is nearest to no pair: no gradient from the L1 part
    assert reg.levels.grad[3].item() == 0.0
    # the others: d/ds_k mean_{pairs} |d - s_k| over the pairs whose nearest level is k
    d = _brute_distances(x.detach())
    n = len(d)
    mu, sigma = reg.mu.item(), reg.sigma.item()
    expected = [0.0] * 4
    for i in range(n):
        for j in range(n):
            if i != j:
                z = (d[i][j] - mu) / sigma
                k = min(range(4), key=lambda k, z=z: abs(z - reg.levels[k].item()))
                expected[k] -= math.copysign(1.0, z - reg.levels[k].item()) / (n * (n - 1))
    assert reg.levels.grad.tolist() == pytest.approx(expected, abs=1e-12)


def test_level_penalty_gradient():
    reg = _reg(levels=(-3.0, 0.0, 3.0, 50.0), nu=0.5)
    reg(_batch(7)).backward()
    assert reg.levels.grad[3].item() == pytest.approx(2 * 0.5 * 50.0)


def test_state_dict_round_trip_keeps_initialized():
    first, second = _batch(8), _batch(9)
    reg = _reg()
    reg(first)
    assert "initialized" in reg.state_dict() and bool(reg.state_dict()["initialized"])
    buffer = io.BytesIO()
    torch.save(reg.state_dict(), buffer)
    buffer.seek(0)
    resumed = _reg()
    resumed.load_state_dict(torch.load(buffer))
    assert bool(resumed.initialized)
    resumed(second)
    mu_b, _ = _brute_stats(second, include_diagonal=True)
    assert resumed.mu.item() == pytest.approx(0.9 * reg.mu.item() + 0.1 * mu_b, rel=1e-9)
    assert resumed.mu.item() != pytest.approx(mu_b, rel=1e-6)  # no re-initialization


def test_eval_mode_does_not_change_statistics():
    reg = _reg()
    reg.eval()
    x = _batch(10)
    loss = reg(x)  # before any training batch: normalized with this batch's statistics
    assert not bool(reg.initialized) and reg.mu.item() == 0.0
    mu, sigma = _brute_stats(x, include_diagonal=True)
    assert loss.item() == pytest.approx(_brute_loss(x, [-3, 0, 3], mu, sigma, 0.01), rel=1e-9)
    reg.train()
    reg(_batch(11))
    state = {k: v.clone() for k, v in reg.state_dict().items()}
    reg.eval()
    reg(_batch(12))
    for key, value in reg.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_single_sample_batch_is_only_the_penalty():
    reg = _reg()
    x = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    loss = reg(x)
    assert loss.item() == pytest.approx(0.01 * 18)
    assert not bool(reg.initialized)
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_invalid_arguments():
    with pytest.raises(ConfigError):
        MDRRegularizer(levels=())
    with pytest.raises(ConfigError):
        MDRRegularizer(momentum=1.5)
    with pytest.raises(ConfigError):
        MDRRegularizer(nu=-1)
    with pytest.raises(TrainingError):
        MDRRegularizer()(torch.randn(3, 4, 2))


def _pml_losses():
    return [
        (TripletMarginLoss, {"margin": 0.2}),
        (ContrastiveLoss, {}),
        (MarginLoss, {"margin": 0.2}),
    ]


@pytest.mark.parametrize(("loss_cls", "kwargs"), _pml_losses())
def test_as_pml_embedding_regularizer(loss_cls, kwargs):
    x = _batch(13, n=12).float().requires_grad_(True)
    labels = torch.arange(12) // 3
    distance = LpDistance(normalize_embeddings=False)
    base = loss_cls(distance=distance, **kwargs)(x, labels)
    reference = MDRRegularizer()
    expected_reg = copy.deepcopy(reference)(x)
    regularized = loss_cls(
        distance=distance, embedding_regularizer=reference, embedding_reg_weight=0.6, **kwargs
    )
    total = regularized(x, labels)
    assert total.item() == pytest.approx(base.item() + 0.6 * expected_reg.item(), rel=1e-6)
    assert bool(reference.initialized)  # the regularizer's state is the one PML called
    total.backward()
    assert reference.levels.grad is not None and reference.levels.grad.abs().sum() > 0


@pytest.mark.parametrize(("loss_cls", "kwargs"), _pml_losses())
def test_zero_weight_gives_exactly_the_base_loss(loss_cls, kwargs):
    x = _batch(14, n=12).float()
    labels = torch.arange(12) // 4
    distance = LpDistance(normalize_embeddings=False)
    base = loss_cls(distance=distance, **kwargs)(x, labels)
    total = loss_cls(
        distance=distance,
        embedding_regularizer=MDRRegularizer(),
        embedding_reg_weight=0.0,
        **kwargs,
    )(x, labels)
    assert torch.equal(total, base)


def test_pml_distance_and_reducer_conventions() -> None:
    """PML's regularizer keywords: distance= and reducer= are taken or refused in one line."""
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.reducers import MeanReducer, ThresholdReducer

    x = torch.randn(10, 4, dtype=torch.float64)
    plain = _reg()(x)
    same = MDRRegularizer(
        distance=LpDistance(p=2, power=1, normalize_embeddings=False), reducer=MeanReducer()
    ).double()(x)
    assert same.item() == plain.item()
    normalized = MDRRegularizer(distance=LpDistance(normalize_embeddings=True)).double()(x)
    assert normalized.item() == _reg()(torch.nn.functional.normalize(x)).item()
    with pytest.raises(ConfigError, match="Euclidean"):
        MDRRegularizer(distance=CosineSimilarity())
    with pytest.raises(ConfigError, match="ThresholdReducer makes no sense"):
        MDRRegularizer(reducer=ThresholdReducer(low=0.1))
