import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses, miners
from torch import nn

from dmlkit import config as config_mod
from dmlkit.config import (
    Config,
    HeadConfig,
    LossConfig,
    MDRConfig,
    MethodConfig,
    ModelConfig,
    PartsConfig,
)
from dmlkit.engine.checkpoint import load_state, save_state
from dmlkit.losses.mdr import MDRRegularizer
from dmlkit.methods.build import build_method
from dmlkit.methods.composed import ComposedMethod
from dmlkit.miners.distance_weighted import DistanceWeightedMiner
from numeric import assert_whole_close

CLASSES = np.array([2, 5, 11, 12])
DIM = 6
LEVELS = [-2.0, 0.0, 1.5]


def _cfg(weight: float = 0.6, nu: float = 0.01) -> MethodConfig:
    return MethodConfig(parts=PartsConfig(mdr=MDRConfig(weight=weight, nu=nu, levels=LEVELS)))


def build_mdr_method(cfg: MethodConfig, classes, dim: int) -> ComposedMethod:
    return ComposedMethod(cfg, classes, dim)


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 5, generator=g), torch.tensor(CLASSES).repeat(4), torch.arange(16)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Linear(5, DIM)


def _step(method, model, seed: int = 0) -> dict:
    (out,) = method.steps(model, {"class": _batch(seed)}, 0)
    return out


def test_total_is_base_plus_lambda_mdr_plus_nu_level_penalty(model):
    method = build_mdr_method(_cfg(weight=0.6, nu=0.01), CLASSES, DIM)
    assert isinstance(method.mdr.regularizer, MDRRegularizer)
    assert method.mdr.regularizer.nu == pytest.approx(0.01 / 0.6)
    out = _step(method, model)

    images, labels, _ = _batch(0)
    emb = model(images).detach()
    y = torch.searchsorted(torch.tensor(CLASSES), labels)
    base = losses.TripletMarginLoss(margin=0.1)(
        emb, y, miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard")(emb, y))
    # MDR by hand, first batch: statistics over all N^2 distances (diagonal included)
    n = len(emb)
    dist = torch.stack([torch.stack([(emb[i] - emb[j]).norm() for j in range(n)])
                        for i in range(n)])
    mu, sigma = dist.mean(), dist.flatten().std()
    pairs = [(dist[i, j] - mu) / sigma for i in range(n) for j in range(n) if i != j]
    mdr = np.mean([min(abs(float(d) - s) for s in LEVELS) for d in pairs])
    expected = float(base) + 0.6 * mdr + 0.01 * sum(s * s for s in LEVELS)
    assert_whole_close(out["loss"], expected)
    assert_whole_close(out["metric_loss"], base)


def test_zero_weight_is_the_base_loss(model):
    method = build_mdr_method(_cfg(weight=0.0), CLASSES, DIM)
    out = _step(method, model)
    assert method.mdr.regularizer.nu == 0.0
    assert torch.equal(out["loss"], out["metric_loss"])


def test_levels_are_optimized_with_weight_decay(model):
    method = build_mdr_method(_cfg(), CLASSES, DIM)
    groups = method.param_groups(lr=1e-3, weight_decay=1e-4)
    (group,) = [g for g in groups if g["name"] == "mdr"]
    assert group["params"] == [method.mdr.regularizer.levels]
    assert group["lr"] == 1e-3 and group["weight_decay"] == 1e-4
    opt = torch.optim.SGD(groups, lr=1e-3)
    _step(method, model)["loss"].backward()
    before = method.mdr.regularizer.levels.detach().clone()
    opt.step()
    assert not torch.equal(before, method.mdr.regularizer.levels.detach())


def test_statistics_are_state_and_survive_a_round_trip(model, tmp_path):
    method = build_mdr_method(_cfg(), CLASSES, DIM)
    state = method.state_dict()
    assert {"mdr.regularizer.mu", "mdr.regularizer.sigma", "mdr.regularizer.initialized",
            "mdr.regularizer.levels"} <= state.keys()
    assert not bool(state["mdr.regularizer.initialized"])
    _step(method, model, seed=0)
    _step(method, model, seed=1)  # a moving average, not just the first batch
    save_state({"method": method.state_dict()}, tmp_path / "state.pt")

    restored = build_mdr_method(_cfg(), CLASSES, DIM)
    restored.load_state_dict(load_state(tmp_path / "state.pt")["method"])
    for name in ("mu", "sigma", "initialized", "levels"):
        assert torch.equal(getattr(restored.mdr.regularizer, name),
                           getattr(method.mdr.regularizer, name))
    assert bool(restored.mdr.regularizer.initialized) and float(restored.mdr.regularizer.mu) > 0
    # the next step is the same whether or not training was interrupted
    a, b = _step(method, model, seed=2), _step(restored, model, seed=2)
    assert torch.equal(a["loss"], b["loss"])
    assert torch.equal(method.mdr.regularizer.mu, restored.mdr.regularizer.mu)
    fresh = build_mdr_method(_cfg(), CLASSES, DIM)
    assert not torch.equal(_step(fresh, model, seed=2)["loss"], b["loss"])


def test_build_method_wires_the_mdr_config():
    cfg = Config(method=MethodConfig(
        parts=PartsConfig(mdr=MDRConfig(weight=0.5, nu=0.02, levels=LEVELS, momentum=0.8)),
        loss=LossConfig(miner="dmlkit:DistanceWeightedMiner", miner_params={"positives": "all"}),
    ), model=ModelConfig(head=HeadConfig(dim=DIM)))
    method = build_method(cfg, CLASSES)
    assert isinstance(method, ComposedMethod)
    assert isinstance(method.mdr.regularizer, MDRRegularizer)
    assert method.mdr.weight == 0.5 and method.mdr.head == "embedding"
    assert method.mdr.regularizer.nu == pytest.approx(0.04)
    reg = method.mdr.regularizer
    assert reg.momentum == 0.8 and reg.levels.tolist() == LEVELS
    assert isinstance(method.miner, DistanceWeightedMiner) and method.num_classes == 4
    cfg.method.parts.mdr = None
    assert build_method(cfg, CLASSES).mdr is None


def test_mdr_small_preset_builds_the_mdr_recipe():
    cfg = config_mod.load("mdr-small")
    method = build_method(cfg, CLASSES)
    assert isinstance(method.mdr.regularizer, MDRRegularizer)
    assert isinstance(method.miner, DistanceWeightedMiner) and method.miner.positives == "all"
