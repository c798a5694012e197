import pytest
import torch
from pytorch_metric_learning import distances, losses, miners, reducers

from dmlkit.config import LossConfig
from dmlkit.errors import ConfigError
from dmlkit.losses.by_name import build_distance, build_loss, build_miner
from dmlkit.miners.distance_weighted import DistanceWeightedMiner
from numeric import assert_whole_close


def _error(fn) -> str:
    with pytest.raises(ConfigError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.mark.parametrize(
    ("cfg", "kind", "wanted"),
    [
        (LossConfig(name="TripletMarginLos"), "loss", "TripletMarginLoss"),
        (LossConfig(name="tripletmarginloss"), "loss", "TripletMarginLoss"),
        (LossConfig(name="TirpletMarginLoss"), "loss", "TripletMarginLoss"),
        (LossConfig(miner="MultiSimilarityMinr"), "miner", "MultiSimilarityMiner"),
        (LossConfig(distance="CosineSimilarty"), "distance", "CosineSimilarity"),
        (LossConfig(reducer="MeanReduce"), "reducer", "MeanReducer"),
    ],
)
def test_unknown_names_are_one_line_config_errors_with_a_hint(cfg, kind, wanted):
    build = build_miner if kind == "miner" else lambda c: build_loss(c, 3, 8)
    message = _error(lambda: build(cfg))
    assert message.startswith(f"unknown {kind} ")
    assert f"did you mean {wanted}" in message


def test_unknown_name_far_from_everything_has_no_hint():
    message = _error(lambda: build_loss(LossConfig(name="Zzzqqq"), 3, 8))
    assert message == "unknown loss 'Zzzqqq'"


def test_unknown_dmlkit_miner():
    message = _error(lambda: build_miner(LossConfig(miner="dmlkit:DistanceWeightedMinr")))
    assert "'DistanceWeightedMinr'" in message and "did you mean DistanceWeightedMiner" in message


def test_bad_parameters_are_one_line_config_errors_naming_the_class():
    message = _error(lambda: build_loss(LossConfig(params={"margn": 0.1}), 3, 8))
    assert message.startswith("loss TripletMarginLoss:") and "margn" in message
    bad_strategy = LossConfig(miner="BatchEasyHardMiner", miner_params={"pos_strategy": "x"})
    assert _error(lambda: build_miner(bad_strategy)).startswith("miner BatchEasyHardMiner:")


def test_num_classes_and_embedding_size_are_injected():
    loss = build_loss(LossConfig(name="ProxyAnchorLoss", params={}, miner=None), 5, 16)
    assert isinstance(loss, losses.ProxyAnchorLoss)
    assert loss.proxies.shape == (5, 16) and loss.proxies.requires_grad
    # explicit parameters win over the injected ones
    loss = build_loss(
        LossConfig(name="ProxyAnchorLoss", params={"num_classes": 7, "margin": 0.2}), 5, 16
    )
    assert loss.proxies.shape == (7, 16) and loss.margin == 0.2
    margin = build_loss(LossConfig(name="MarginLoss", params={"learn_beta": True}), 4, 16)
    assert margin.beta.shape == (4,) and margin.beta.requires_grad
    # losses without per-class parameters get neither
    triplet = build_loss(LossConfig(name="TripletMarginLoss", params={"margin": 0.3}), 4, 16)
    assert isinstance(triplet, losses.TripletMarginLoss) and triplet.margin == 0.3


def test_distance_and_reducer_are_passed_to_the_loss():
    cfg = LossConfig(distance="LpDistance", distance_params={"p": 1, "normalize_embeddings": False},
                     reducer="MeanReducer")
    loss = build_loss(cfg, 3, 8)
    assert isinstance(loss.distance, distances.LpDistance)
    assert loss.distance.p == 1 and not loss.distance.normalize_embeddings
    assert isinstance(loss.reducer, reducers.MeanReducer)
    default = build_loss(LossConfig(), 3, 8)
    assert isinstance(default.reducer, reducers.AvgNonZeroReducer)
    assert build_distance(None, {}) is None


def test_pml_miners_get_the_loss_distance():
    cfg = LossConfig(distance="LpDistance", distance_params={"p": 1, "normalize_embeddings": False})
    miner = build_miner(cfg)
    assert isinstance(miner, miners.TripletMarginMiner)
    assert isinstance(miner.distance, distances.LpDistance)
    assert miner.distance.p == 1 and not miner.distance.normalize_embeddings
    # the miner then ranks with that distance: same triplets as a miner built by hand
    emb = 3 * torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 3
    by_hand = miners.TripletMarginMiner(
        margin=0.1, type_of_triplets="semihard",
        distance=distances.LpDistance(p=1, normalize_embeddings=False),
    )
    for a, b in zip(miner(emb, labels), by_hand(emb, labels), strict=True):
        assert torch.equal(a, b)
    cosine = build_miner(LossConfig(distance="CosineSimilarity"))
    assert isinstance(cosine.distance, distances.CosineSimilarity)
    assert build_miner(LossConfig(miner=None)) is None


def test_dmlkit_prefix_builds_dmlkits_miner():
    cfg = LossConfig(miner="dmlkit:DistanceWeightedMiner",
                     miner_params={"cutoff": 0.4, "nonzero_loss_cutoff": None, "positives": "one"})
    miner = build_miner(cfg)
    assert type(miner) is DistanceWeightedMiner
    assert miner.cutoff == 0.4 and miner.nonzero_loss_cutoff is None and miner.positives == "one"
    # without the prefix the name is PML's class of the same name
    pml = build_miner(LossConfig(miner="DistanceWeightedMiner", miner_params={}))
    assert isinstance(pml, miners.DistanceWeightedMiner)


def _margin_case() -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Four triplets on the unit circle with chosen chord distances (beta 1.2, margin 0.2: the
    positive term is active when d_ap > 1.0, the negative term when d_an < 1.4): both active,
    only the positive, only the negative, neither."""
    d_ap = torch.tensor([1.2, 1.1, 0.5, 0.5])
    d_an = torch.tensor([1.0, 1.6, 1.3, 1.8])
    angle = lambda d: 2 * torch.asin(d / 2)  # noqa: E731  chord length d -> angle
    points = torch.stack([torch.zeros(4), angle(d_ap), -angle(d_an)], dim=1).flatten()
    embeddings = torch.stack([points.cos(), points.sin()], dim=1)
    idx = torch.arange(4) * 3
    labels = torch.tensor([0, 0, 1] * 4)
    return embeddings, labels, (idx, idx + 1, idx + 2)


def _official_margin_loss(embeddings, triplets, beta=1.2, margin=0.2) -> tuple[torch.Tensor, int]:
    """Official losses.py MarginLoss / MarginLoss_noise: sum of the terms divided by the number of
    triplets with at least one active term ((pos > 0) + (neg > 0) on bool tensors: OR)."""
    a, p, n = triplets
    pos = torch.relu((embeddings[a] - embeddings[p]).norm(dim=1) - beta + margin)
    neg = torch.relu(beta - (embeddings[a] - embeddings[n]).norm(dim=1) + margin)
    active = (pos > 0) | (neg > 0)
    assert (pos > 0).tolist() == [True, True, False, False]  # the hand-built case is as intended
    assert (neg > 0).tolist() == [True, False, True, False]
    return (pos + neg).sum() / active.sum(), int(active.sum())


@pytest.mark.parametrize(("reducer", "divisor"), [("AvgNonZeroReducer", 3), (None, 4)])
def test_margin_loss_normalization_official_and_pml(reducer, divisor):
    """Official: / triplets with an active term (3); PML's default: / active terms (2+1+1 = 4)."""
    embeddings, labels, triplets = _margin_case()
    official, active = _official_margin_loss(embeddings, triplets)
    cfg = LossConfig(name="MarginLoss", params={"margin": 0.2, "beta": 1.2, "learn_beta": True},
                     reducer=reducer, miner=None)
    loss = build_loss(cfg, num_classes=2, embedding_size=2)(embeddings, labels, triplets)
    expected = official * active / divisor
    assert active == 3
    assert_whole_close(loss, expected)


def test_official_margin_normalization_of_no_active_triplet_is_zero():
    embeddings, labels, triplets = _margin_case()
    last = tuple(t[3:] for t in triplets)  # the triplet with neither term active
    cfg = LossConfig(name="MarginLoss", params={"margin": 0.2, "beta": 1.2},
                     reducer="AvgNonZeroReducer", miner=None)
    assert build_loss(cfg, 1, 2)(embeddings, labels, last).item() == 0.0
