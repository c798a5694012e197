import re

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses, miners
from torch import nn

from dmlkit.config import LossConfig, MDRConfig, MethodConfig, PartsConfig
from dmlkit.methods.composed import ComposedMethod
from numeric import assert_close_scaled, assert_whole_close, magnitude

CLASSES = np.array([9, 3, 7])  # non-contiguous, unsorted class ids
DIM = 6


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(12, 5, generator=g)
    labels = torch.tensor([3, 7, 9, 3, 7, 9, 3, 7, 9, 3, 7, 9])
    return images, labels, torch.arange(12)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Linear(5, DIM)


def _method(loss: LossConfig, classes, dim: int, loss_weight: float = 1.0,
                 **parts) -> ComposedMethod:
    """The base loss alone, or with ``parts`` (their configs)."""
    cfg = MethodConfig(loss=loss, loss_weight=loss_weight, parts=PartsConfig(**parts))
    return ComposedMethod(cfg, classes, dim)


def _step(method: ComposedMethod, model: nn.Module, batch) -> dict:
    out = list(method.steps(model, {"class": batch}, 0))
    assert len(out) == 1
    return out[0]


def test_labels_are_mapped_to_contiguous_ids():
    method = _method(LossConfig(), CLASSES, DIM)
    assert method.num_classes == 3
    assert method.contiguous(torch.tensor([9, 3, 7, 3])).tolist() == [2, 0, 1, 0]


def test_step_loss_is_the_pml_loss_on_the_mined_triplets(model, batch):
    method = _method(LossConfig(), CLASSES, DIM)
    out = _step(method, model, batch)
    emb, y = model(batch[0]).detach(), method.contiguous(batch[1])
    triplets = miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard")(emb, y)
    assert len(triplets[0]) > 0
    expected = losses.TripletMarginLoss(margin=0.1)(emb, y, triplets)
    torch.testing.assert_close(out["metric_loss"], expected)
    assert torch.equal(out["loss"], out["metric_loss"]) and out["loss"].requires_grad
    # brute force: mean of the non-zero relu(d_ap - d_an + margin) on normalized embeddings
    e = nn.functional.normalize(emb, dim=1)
    per = [max(float((e[a] - e[p]).norm() - (e[a] - e[n]).norm()) + 0.1, 0.0)
           for a, p, n in zip(*(t.tolist() for t in triplets), strict=True)]
    nonzero = [v for v in per if v > 0]
    assert_whole_close(out["loss"], sum(nonzero) / len(nonzero))


def test_proxy_loss_uses_contiguous_labels(model, batch):
    cfg = LossConfig(name="ProxyAnchorLoss", params={}, miner=None, miner_params={})
    method = _method(cfg, CLASSES, DIM)
    out = _step(method, model, batch)
    by_hand = losses.ProxyAnchorLoss(num_classes=3, embedding_size=DIM)
    by_hand.proxies.data.copy_(method.loss.proxies.data)
    emb = model(batch[0])
    expected = by_hand(emb, torch.tensor([0, 1, 2] * 4))
    torch.testing.assert_close(out["loss"], expected)


def test_loss_parameters_are_in_param_groups_with_the_loss_lr(model, batch):
    cfg = LossConfig(name="ProxyAnchorLoss", params={}, miner=None, lr=0.05)
    method = _method(cfg, CLASSES, DIM)
    groups = method.param_groups(lr=1e-3, weight_decay=1e-4)
    assert len(groups) == 1
    (group,) = groups
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.0
    assert len(group["params"]) == 1 and group["params"][0] is method.loss.proxies
    # an optimizer built on these groups moves the proxies at the loss lr
    opt = torch.optim.SGD([{"params": model.parameters()}, *groups], lr=1e-3)
    before = method.loss.proxies.detach().clone()
    _step(method, model, batch)["loss"].backward()
    grad = method.loss.proxies.grad.clone()
    opt.step()
    torch.testing.assert_close(method.loss.proxies.detach(), before - 0.05 * grad)

    margin = _method(LossConfig(name="MarginLoss", params={"learn_beta": True}), CLASSES, DIM)
    (group,) = margin.param_groups(lr=1e-3, weight_decay=1e-4)
    assert group["params"] == [margin.loss.beta] and margin.loss.beta.shape == (3,)
    assert group["lr"] == 1e-3  # no loss lr configured: the model's
    assert _method(LossConfig(), CLASSES, DIM).param_groups(1e-3, 0.0) == []


def test_mdr_part_weight(model, batch):
    off = _method(LossConfig(), CLASSES, DIM, mdr=MDRConfig(weight=0.0))
    out = _step(off, model, batch)
    assert torch.equal(out["loss"], out["metric_loss"])
    assert out["mdr"].item() > 0
    on = _method(LossConfig(), CLASSES, DIM, mdr=MDRConfig(weight=0.5, nu=0.0))
    out = _step(on, model, batch)
    torch.testing.assert_close(out["loss"], out["metric_loss"] + 0.5 * out["mdr"])
    (levels,) = [g for g in on.param_groups(1e-3, 1e-4) if g["name"] == "mdr"]
    assert levels["params"] == [on.mdr.regularizer.levels] and levels["weight_decay"] == 1e-4
    half = _method(LossConfig(), CLASSES, DIM, loss_weight=0.25, mdr=MDRConfig(nu=0.0))
    out = _step(half, model, batch)
    torch.testing.assert_close(out["loss"], 0.25 * out["metric_loss"] + 0.6 * out["mdr"])


def test_logs_report_mdr_levels_and_statistics(model, batch):
    method = _method(LossConfig(), CLASSES, DIM, mdr=MDRConfig(levels=[-2.0, 0.0, 1.0]))
    assert method.logs() == {}
    _step(method, model, batch)
    logs = method.logs()
    assert [logs[f"mdr_levels_{i}"] for i in range(3)] == [-2.0, 0.0, 1.0]
    dist = torch.cdist(model(batch[0]).detach(), model(batch[0]).detach())
    assert logs["mdr_mu"] == pytest.approx(float(dist.mean()), rel=1e-4)
    assert logs["mdr_sigma"] == pytest.approx(float(dist.flatten().std()), rel=1e-4)
    assert {"mdr", "mdr_level_penalty"} <= logs.keys()
    assert all(isinstance(v, float) for v in logs.values())
    assert _method(LossConfig(), CLASSES, DIM).logs() == {}


# ----------------------------------------------------------------- compositions
def _composed_model(shared_dim: int = 4):
    torch.manual_seed(0)
    from dmlkit.config import HeadConfig, ModelConfig
    from dmlkit.models.embedding_model import build_model

    return build_model(ModelConfig(backbone="small_cnn", head=HeadConfig(dim=DIM)), 1,
                       extra_heads={"shared": shared_dim})


def _full(mdr_head: str = "embedding", combined: bool = False) -> ComposedMethod:
    from dmlkit.config import GuidedConfig, SharingConfig

    torch.manual_seed(1)  # the regressor's initialization
    sharing = SharingConfig(shared_dim=4, num_surrogate_labels=5, decorrelation_weight=3.0,
                            regressor_hidden=8, combined_step=combined)
    method = _method(LossConfig(), CLASSES, DIM, loss_weight=0.7,
                     mdr=MDRConfig(head=mdr_head, weight=0.5, nu=0.0),
                     sharing=sharing, guided=GuidedConfig(weight=0.2))
    method.guided.targets = torch.randn(12, DIM, generator=torch.Generator().manual_seed(3))
    return method


def _streams(method: ComposedMethod):
    from dmlkit.config import TrainConfig

    labels = np.repeat(CLASSES, 4)
    samplers = method.batch_samplers(labels, TrainConfig(batch_size=6, m_per_class=2, seed=1))
    assert set(samplers) == {"class", "shared"}
    images = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    out = {}
    for name, sampler in samplers.items():
        sampler.set_epoch(0)
        idx = torch.tensor(next(iter(sampler)))
        out[name] = (images[idx], torch.as_tensor(labels)[idx], idx)
    return out


def test_full_composition_sums_every_part_in_its_step():
    method, model = _full(), _composed_model()
    batches = _streams(method)
    first, second = method.steps(model, batches, 0)
    images, _, index = batches["class"]
    heads = model.embed_heads(images)
    phi_c = heads["embedding"]
    expected_distill = (phi_c - method.guided.targets[index]).norm(dim=1).mean()
    scale = magnitude(*first.values())  # the terms of one step share its scale
    assert_close_scaled(first["distill"], expected_distill, scale=scale)
    assert_close_scaled(first["decorrelation_class"],
                        method.sharing.decorrelation(phi_c, heads["shared"]), scale=scale)
    assert set(first) == {"metric_loss", "mdr", "distill", "decorrelation_class", "loss"}
    total = (0.7 * first["metric_loss"] + 0.5 * first["mdr"] + 0.2 * first["distill"]
             + 3.0 * first["decorrelation_class"])
    assert_close_scaled(first["loss"], total, scale=scale)
    assert first["mdr"] > 0 and first["distill"] > 0
    assert set(second) == {"shared_loss", "decorrelation_shared", "shared_triplets", "loss"}
    assert_whole_close(second["loss"], second["shared_loss"] + 3.0 * second["decorrelation_shared"])
    names = [g["name"] for g in method.param_groups(1e-3, 0.0)]
    assert names == ["mdr", "regressor", "shared_loss"]  # the triplet loss has no parameters
    assert {"mdr.regularizer.mu", "sharing.decorrelation.regressor.0.weight"} <= \
        method.state_dict().keys()
    assert method.retrieval_variants() == {"shared": "shared", "concat": ["embedding", "shared"]}


def test_mdr_on_the_shared_head_goes_to_the_shared_step():
    method, model = _full(mdr_head="shared"), _composed_model()
    batches = _streams(method)
    first, second = method.steps(model, batches, 0)
    assert "mdr" not in first and "mdr" in second
    phi_s = model.embed_heads(batches["shared"][0])["shared"].detach()
    reg = _full(mdr_head="shared").mdr.regularizer  # fresh statistics: this batch's own
    scale = magnitude(second["loss"], second["shared_loss"], second["mdr"])  # the step's terms
    assert_close_scaled(second["mdr"], reg(phi_s), scale=scale)
    assert_close_scaled(second["loss"], second["shared_loss"] + 3.0 *
                        second["decorrelation_shared"] + 0.5 * second["mdr"], scale=scale)


def test_combined_step_is_the_sum_of_both_steps():
    model, separate, combined = _composed_model(), _full(), _full(combined=True)
    torch.manual_seed(2)  # the distance-weighted miner samples negatives
    two = list(separate.steps(model, _streams(separate), 0))
    torch.manual_seed(2)
    (one,) = combined.steps(model, _streams(combined), 0)
    assert_whole_close(one["loss"], two[0]["loss"] + two[1]["loss"])


@pytest.mark.parametrize("loss_weight,parts,message", [
    (1.0, {"mdr": MDRConfig(head="shared")},
     "method.parts.mdr.head 'shared' does not exist: heads are embedding (the shared head "
     "needs method.parts.sharing)"),
    (1.0, {"mdr": MDRConfig(head="class")}, "method.parts.mdr.head 'class' does not exist"),
    (0.0, {"mdr": MDRConfig()}, "method.loss_weight=0 leaves the retrieval head without a loss"),
])
def test_impossible_compositions_are_one_line_errors(loss_weight, parts, message):
    from dmlkit.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        _method(LossConfig(), CLASSES, DIM, loss_weight=loss_weight, **parts)
    assert "\n" not in str(e.value)
