import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from dmlkit import config
from dmlkit.config import (
    Config,
    HeadConfig,
    LossConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    PartsConfig,
    SharingConfig,
    TrainConfig,
)
from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler
from dmlkit.data.surrogate_label_sampler import SurrogateLabelBatchSampler
from dmlkit.data.transforms import build_transform
from dmlkit.engine.trainer import build_optimizer
from dmlkit.methods.build import build_method
from dmlkit.methods.composed import ComposedMethod
from dmlkit.models.embedding_model import build_model

CLASSES = np.array([1, 4, 6, 9])
LABELS = np.repeat(CLASSES, 8)  # 32 images, 8 per class
DISW = 50.0

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(combined: bool = False) -> Config:
    """sharing-small's recipe at toy sizes."""
    loss = LossConfig(
        name="MarginLoss", params={"margin": 0.2, "beta": 1.2, "learn_beta": True},
        miner="dmlkit:DistanceWeightedMiner",
        miner_params={"cutoff": 0.5, "nonzero_loss_cutoff": None, "positives": "one"}, lr=5e-4,
    )
    sharing = SharingConfig(shared_dim=6, num_surrogate_labels=10, decorrelation_weight=DISW,
                            regressor_hidden=16, combined_step=combined)
    return Config(
        model=ModelConfig(backbone="small_cnn", head=HeadConfig(dim=8)),
        method=MethodConfig(loss=loss, parts=PartsConfig(sharing=sharing)),
        optim=OptimConfig(name="adam", lr=1e-3, weight_decay=4e-4),
        train=TrainConfig(batch_size=16, m_per_class=4, seed=3),
    )


class Spy(nn.Module):
    """Wraps a miner and records each call's labels, exclude-labels and output."""

    def __init__(self, miner: nn.Module) -> None:
        super().__init__()
        self.miner, self.calls = miner, []

    def forward(self, embeddings, labels, exclude_labels=None, anchors=None):
        out = self.miner(embeddings, labels, exclude_labels=exclude_labels, anchors=anchors)
        self.calls.append((labels, exclude_labels, out))
        return out


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(len(LABELS), 1, 16, 16, generator=torch.Generator().manual_seed(0))


def _setup(combined: bool = False):
    torch.manual_seed(0)
    cfg = _config(combined)
    method = build_method(cfg, CLASSES)
    assert isinstance(method, ComposedMethod) and method.sharing is not None
    model = build_model(cfg.model, 1, extra_heads={"shared": cfg.method.parts.sharing.shared_dim})
    samplers = method.batch_samplers(LABELS, cfg.train)
    return cfg, method, model, samplers


def _batches(samplers: dict, images: torch.Tensor, b: int = 0) -> dict:
    out = {}
    for name, sampler in samplers.items():
        sampler.set_epoch(0)
        idx = torch.tensor(list(sampler)[b])
        out[name] = (images[idx], torch.as_tensor(LABELS)[idx], idx)
    return out


def _train_iteration(method, model, optimizer, batches, it: int = 0) -> list[dict]:
    """What Trainer.train_epoch does with one iteration's steps."""
    outs = []
    for losses in method.steps(model, batches, it):
        assert torch.isfinite(losses["loss"])
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        outs.append({k: v.detach() for k, v in losses.items()})
    return outs


def test_two_streams(images):
    cfg, method, _, samplers = _setup()
    assert set(samplers) == {"class", "shared"}
    assert isinstance(samplers["class"], MPerClassBatchSampler)
    assert isinstance(samplers["shared"], SurrogateLabelBatchSampler)
    assert samplers["shared"] is method.sharing.shared_sampler
    batches = _batches(samplers, images)
    assert len(batches["shared"][0]) == cfg.train.batch_size
    surrogate = method.sharing.shared_sampler.surrogate_labels(0)
    assert surrogate.view(-1, cfg.train.m_per_class).unique(dim=1).shape[1] == 1  # blocks of m


def test_two_optimizer_steps_change_every_parameter_group(images):
    cfg, method, model, samplers = _setup()
    optimizer = build_optimizer(cfg, model, method)
    names = {g["name"]: g for g in optimizer.param_groups}
    assert set(names) == {"model", "regressor", "loss", "shared_loss"}
    # official main_shared_features.py: the regressor (AdvLoss) trains at the model's lr
    assert names["regressor"]["lr"] == names["model"]["lr"] == 1e-3
    assert names["regressor"]["weight_decay"] == 1e-6
    assert names["loss"]["params"] == [method.loss.beta]
    assert names["shared_loss"]["params"] == [method.sharing.shared_loss.beta]
    for name in ("loss", "shared_loss"):  # the shared loss has no lr of its own: the class one's
        assert names[name]["lr"] == 5e-4 and names[name]["weight_decay"] == 0.0
    assert method.loss.beta.shape == (4,) and method.sharing.shared_loss.beta.shape == (10,)

    tracked = {
        **{f"model.{n}": p for n, p in model.named_parameters()},
        **{f"regressor.{n}": p for n, p in method.sharing.decorrelation.named_parameters()},
        "class_beta": method.loss.beta, "shared_beta": method.sharing.shared_loss.beta,
    }
    before = {n: p.detach().clone() for n, p in tracked.items()}
    outs = _train_iteration(method, model, optimizer, _batches(samplers, images))
    assert len(outs) == 2
    unchanged = [n for n, p in tracked.items() if torch.equal(before[n], p.detach())]
    assert unchanged == []
    assert any(n.startswith("model.heads.shared") for n in tracked)
    # the class step moves only the betas of the batch's classes' anchors; the shared step the
    # betas of the surrogate labels in its batch
    used = method.sharing.shared_sampler.surrogate_labels(0).unique()
    moved = (before["shared_beta"] != method.sharing.shared_loss.beta.detach()).nonzero().flatten()
    assert set(moved.tolist()) <= set(used.tolist())


def test_regressor_lr_of_its_own():
    cfg = _config()
    cfg.method.parts.sharing.regressor_lr = 1e-5
    groups = {g["name"]: g for g in build_method(cfg, CLASSES).param_groups(1e-3, 0.0)}
    assert groups["regressor"]["lr"] == 1e-5


def test_shared_loss_lr():
    cfg = _config()
    cfg.method.parts.sharing.shared_loss.lr = 2e-3
    groups = {g["name"]: g for g in build_method(cfg, CLASSES).param_groups(1e-3, 0.0)}
    assert groups["loss"]["lr"] == 5e-4 and groups["shared_loss"]["lr"] == 2e-3
    cfg.method.loss.lr = None
    groups = {g["name"]: g for g in build_method(cfg, CLASSES).param_groups(1e-3, 0.0)}
    assert groups["loss"]["lr"] == 1e-3 and groups["shared_loss"]["lr"] == 2e-3


def test_steps_and_their_losses(images):
    _, method, model, samplers = _setup()
    batches = _batches(samplers, images)
    first, second = method.steps(model, batches, 0)
    assert set(first) == {"metric_loss", "decorrelation_class", "loss"}
    assert set(second) == {"shared_loss", "decorrelation_shared", "shared_triplets", "loss"}
    torch.testing.assert_close(
        first["loss"], first["metric_loss"] + DISW * first["decorrelation_class"])
    torch.testing.assert_close(
        second["loss"], second["shared_loss"] + DISW * second["decorrelation_shared"])
    for out in (first, second):
        assert all(torch.isfinite(v) for v in out.values())
    assert second["shared_triplets"] > 0

    _, combined, model, samplers = _setup(combined=True)
    (only,) = combined.steps(model, _batches(samplers, images), 0)
    parts = {"metric_loss", "shared_loss", "decorrelation_class", "decorrelation_shared"}
    assert parts <= only.keys()
    torch.testing.assert_close(
        only["loss"],
        only["metric_loss"] + only["shared_loss"]
        + DISW * (only["decorrelation_class"] + only["decorrelation_shared"]),
    )


def test_decorrelation_trains_the_regressor_in_both_steps(images):
    _, method, model, samplers = _setup()
    regressor = list(method.sharing.decorrelation.parameters())
    for out in method.steps(model, _batches(samplers, images), 0):
        for p in regressor:
            p.grad = None
        out["loss"].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in regressor)


def test_shared_negatives_differ_in_surrogate_label_and_true_class(images):
    _, method, model, samplers = _setup()
    method.sharing.shared_miner = spy = Spy(method.sharing.shared_miner)
    for b in range(2):
        batches = _batches(samplers, images, b)
        list(method.steps(model, batches, b))
        surrogate, true, (a, p, n) = spy.calls[-1]
        assert torch.equal(surrogate, method.sharing.shared_sampler.surrogate_labels(b))
        assert torch.equal(true, batches["shared"][1])
        assert len(a) > 0
        assert torch.all(a != p) and torch.all(surrogate[a] == surrogate[p])
        assert torch.all(surrogate[n] != surrogate[a])
        assert torch.all(true[n] != true[a])
    assert len(spy.calls) == 2


def test_shared_batch_of_one_true_class_gives_a_finite_loss(images):
    _, method, model, samplers = _setup()
    batches = _batches(samplers, images)
    shared_images, _, idx = batches["shared"]
    batches["shared"] = (shared_images, torch.full_like(idx, 4), idx)
    sharing = method.sharing  # the true classes of the training set: the anchors come from them
    sharing.train_labels = np.full_like(sharing.train_labels, 4)
    _, second = method.steps(model, batches, 0)
    assert second["shared_triplets"] == 0
    assert second["shared_loss"] == 0
    assert torch.isfinite(second["loss"])
    second["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("preset", ["sharing-paper-cub", "sharing-paper-cars", "sharing-small",
                                    "cifar10-sharing-zero-shot"])
def test_sharing_presets_follow_the_official_code(preset):
    """Official: margin loss / triplets with an active term in both streams (losses.py), no flip
    on the shared stream (datasets.py RandomizedDataset_wLabel), regressor lr = model lr."""
    cfg = config.load(preset)
    sharing = cfg.method.parts.sharing
    assert cfg.method.loss.reducer == sharing.shared_loss.reducer == "AvgNonZeroReducer"
    assert cfg.method.parts.sharing.shared_loss.name == "MarginLoss"
    assert cfg.method.parts.sharing.regressor_lr is None
    shared = cfg.data.stream_transforms.get("shared", cfg.data.transform)
    ops = build_transform(shared, True, 32, 3).transforms
    assert not any(isinstance(op, v2.RandomHorizontalFlip) for op in ops)
