import csv

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses, miners
from torch import nn

from dmlkit import config as config_mod
from dmlkit.base.files import load_weights, save_weights
from dmlkit.config import (
    Config,
    DataConfig,
    GuidedConfig,
    HeadConfig,
    LossConfig,
    MethodConfig,
    ModelConfig,
    PartsConfig,
    TrainConfig,
)
from dmlkit.data.build import build_data
from dmlkit.data.m_per_class_sampler import MPerClassBatchSampler
from dmlkit.data.random_batch_sampler import RandomBatchSampler
from dmlkit.errors import ConfigError
from dmlkit.methods import guided as guided_mod
from dmlkit.methods.build import build_method
from dmlkit.methods.composed import ComposedMethod
from dmlkit.methods.guided import GuidedPart
from dmlkit.models.embedding_model import build_model
from dmlkit.models.multi_branch_master import MultiBranchMaster
from numeric import assert_close_scaled, assert_whole_close, magnitude

CPU = torch.device("cpu")
DIGITS = DataConfig(name="digits", protocol="closed_set", image_size=28, max_per_class=8)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    # seed 1: with seed 0 the per-class cap draws exactly digits' own test images
    return build_data(DIGITS, seed=1)


def _method(guided: GuidedConfig, loss: LossConfig, classes, dim: int,
                 loss_weight: float = 0.0) -> ComposedMethod:
    """Guided alone (``loss_weight`` 0: the pure student) or with the base metric loss."""
    cfg = MethodConfig(loss=loss, loss_weight=loss_weight, parts=PartsConfig(guided=guided))
    return ComposedMethod(cfg, classes, dim)


def _guided(data, **kw) -> ComposedMethod:
    cfg = GuidedConfig(master_epochs=1, master_batch_size=8, **kw)
    return _method(cfg, LossConfig(), data.splits.train.classes, 2)


def _recording(fn, calls: list):
    """``fn`` that appends its positional arguments to ``calls`` (works as a method too)."""

    def wrapper(*args, **kwargs):
        calls.append(args)
        return fn(*args, **kwargs)

    return wrapper


@pytest.fixture
def calls(monkeypatch):
    """Arguments of every GuidedPart.train_master and compute_master_targets call."""
    train, compute = [], []
    monkeypatch.setattr(GuidedPart, "train_master", _recording(GuidedPart.train_master, train))
    monkeypatch.setattr(guided_mod, "compute_master_targets",
                        _recording(guided_mod.compute_master_targets, compute))
    return train, compute


def test_prepare_trains_the_master_once_and_reuses_it(data, tmp_path, calls):
    train, compute = calls
    first = _guided(data)
    first.prepare(None, data, tmp_path, CPU)
    assert (len(train), len(compute)) == (1, 1)
    assert {p.name for p in (tmp_path / "master").iterdir()} == {"master.json",
                                                                 "master.safetensors"}
    assert (tmp_path / "targets" / "master.safetensors").is_file()
    n = len(data.splits.train)
    assert first.guided.targets.shape == (n, 2) and torch.isfinite(first.guided.targets).all()
    cost = first.summary()
    assert cost["num_targets"] == n and cost["master_seconds"] >= 0
    assert cost["targets_seconds"] >= 0

    # the master saw raw 0-255 pixels (master_raw_pixels), the student data stays normalized
    master_images = train[0][1]  # (self, dataset, ...)
    assert float(master_images[0][0].max()) > 100 and float(data.train[0][0].max()) <= 1

    # targets are the saved master's outputs, each image through its own class's branch
    master = MultiBranchMaster(data.splits.train.classes.tolist(), 1, 28, 2)
    master.load_state_dict(load_weights(tmp_path / "master" / "master.safetensors"))
    master.eval()
    labels = data.splits.train.labels
    with torch.no_grad():
        for i in (0, n // 2, n - 1):
            emb, _ = master(master_images[i][0][None], torch.tensor([labels[i]]))
            # one image alone vs in a batch: rounding at the scale of all the targets
            assert_close_scaled(first.guided.targets[i], emb[0], msg=str(i),
                                scale=magnitude(first.guided.targets))

    second = _guided(data)
    second.prepare(None, data, tmp_path, CPU)
    assert (len(train), len(compute)) == (1, 1)
    assert torch.equal(second.guided.targets, first.guided.targets)  # read back: bitwise

    # another master config: trained again, new targets
    third = _guided(data, master_raw_pixels=False)
    third.prepare(None, data, tmp_path, CPU)
    assert (len(train), len(compute)) == (2, 2)
    assert float(train[1][1][0][0].max()) <= 1
    assert not torch.equal(third.guided.targets, first.guided.targets)


def _student_batch(n: int = 4):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 5, generator=g)
    return images, torch.full((n,), -1), torch.tensor([5, 17, 2, 9][:n])


def test_runs_share_a_cached_master_and_their_rng_continues_alike(data, tmp_path, calls):
    """With a cache folder the master is trained once per master config, whichever run asks;
    a run that loads it continues with the random numbers of the run that trained it."""
    train, _ = calls
    guided = GuidedConfig(master_epochs=1, master_batch_size=8)
    cfg = MethodConfig(loss=LossConfig(), loss_weight=0.0, parts=PartsConfig(guided=guided))

    def prepared(run: str, seed: int = 0):
        method = ComposedMethod(cfg, data.splits.train.classes, 2, seed,
                                cache_dir=tmp_path / "cache")
        torch.manual_seed(123)
        method.prepare(None, data, tmp_path / run, CPU)
        return method.guided.targets, torch.rand(3)

    (targets_a, after_a), (targets_b, after_b) = prepared("a"), prepared("b")
    # one cached master, its targets computed twice in this process: bitwise
    assert len(train) == 1 and torch.equal(targets_a, targets_b)
    assert torch.equal(after_a, after_b)
    assert not (tmp_path / "a" / "master").exists()
    assert len(list((tmp_path / "cache" / "guided-masters").iterdir())) == 1
    prepared("c", seed=1)  # another seed: another master
    assert len(train) == 2


def test_master_image_size_sizes_the_masters_raw_pixels(data, tmp_path, calls):
    train, _ = calls
    method = _guided(data, master_image_size=20)
    method.prepare(None, data, tmp_path, CPU)
    master_images = train[0][1]
    assert master_images[0][0].shape == (1, 20, 20) and float(master_images[0][0].max()) > 100
    assert method.guided.targets.shape == (len(data.splits.train), 2)
    with pytest.raises(ConfigError, match="master_image_size"):
        _guided(data, master_image_size=12, master_raw_pixels=False)


def test_student_step_regresses_targets_by_sample_index_without_labels(data):
    method = _guided(data)
    method.guided.targets = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    images, labels, index = _student_batch()
    (out,) = method.steps(model, {"class": (images, labels, index)}, 0)
    assert set(out) == {"distill", "loss"}
    emb = model(images)
    expected = np.mean([(emb[k] - method.guided.targets[i]).norm().item()
                        for k, i in enumerate(index.tolist())])
    assert_whole_close(out["loss"], expected)
    assert torch.equal(out["loss"], out["distill"])
    out["loss"].backward()
    assert model.weight.grad.abs().sum() > 0
    # no labels needed anywhere in this stage
    assert method.param_groups(1e-3, 0.0) == []
    samplers = method.batch_samplers(np.full(40, -1), TrainConfig(batch_size=8))
    assert set(samplers) == {"class"} and isinstance(samplers["class"], RandomBatchSampler)


def test_loss_weight_adds_a_metric_loss(data):
    classes = np.array([3, 5, 8])
    method = _method(GuidedConfig(), LossConfig(), classes, 2, loss_weight=0.5)
    method.guided.targets = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    images = torch.randn(9, 5, generator=torch.Generator().manual_seed(2))
    labels, index = torch.tensor([3, 5, 8] * 3), torch.arange(9) * 3
    (out,) = method.steps(model, {"class": (images, labels, index)}, 0)
    emb = model(images).detach()
    y = torch.tensor([0, 1, 2] * 3)
    metric = losses.TripletMarginLoss(margin=0.1)(
        emb, y, miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard")(emb, y))
    assert float(metric) > 0
    torch.testing.assert_close(out["metric_loss"], metric)
    torch.testing.assert_close(out["loss"], out["distill"] + 0.5 * metric)
    samplers = method.batch_samplers(np.repeat(classes, 8), TrainConfig(batch_size=6,
                                                                       m_per_class=2))
    assert isinstance(samplers["class"], MPerClassBatchSampler)
    proxies = _method(GuidedConfig(),
                           LossConfig(name="ProxyAnchorLoss", params={}, miner=None),
                           classes, 2, loss_weight=1.0)
    (group,) = proxies.param_groups(1e-3, 0.0)
    assert group["params"] == [proxies.loss.proxies]


def test_teacher_run_needs_a_run_directory():
    with pytest.raises(ConfigError, match="teacher_run"):
        _method(GuidedConfig(teacher="run"), LossConfig(), np.arange(3), 2)


def _teacher_run(path, dim: int):
    cfg = Config(data=DIGITS, model=ModelConfig(backbone="small_cnn", head=HeadConfig(dim=dim)))
    path.mkdir()
    config_mod.save(cfg, path / "config.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, 1)
    save_weights(model.state_dict(), path / "model.safetensors")
    return model.eval()


def test_teacher_run_gives_the_targets(data, tmp_path):
    teacher = _teacher_run(tmp_path / "teacher", dim=2)
    method = _guided(data, teacher="run", teacher_run=str(tmp_path / "teacher"))
    method.prepare(None, data, tmp_path / "student", CPU)
    assert (tmp_path / "student" / "targets" / "teacher.safetensors").is_file()
    with torch.no_grad():
        expected = teacher(torch.stack([data.train_eval[i][0] for i in range(3)]))
    assert_close_scaled(method.guided.targets[:3], expected, rel=1e-4,
                        scale=magnitude(method.guided.targets))


def test_mismatched_dims_are_config_errors(data, tmp_path):
    _teacher_run(tmp_path / "teacher", dim=3)
    method = _guided(data, teacher="run", teacher_run=str(tmp_path / "teacher"))
    with pytest.raises(ConfigError, match=r"dim 3 .* has 2: set model.head.dim=3"):
        method.prepare(None, data, tmp_path / "student", CPU)
    # a student head of another size than the method's targets
    method = _guided(data)
    method.guided.targets = torch.zeros(20, 2)
    images, labels, index = _student_batch()
    with pytest.raises(ConfigError, match="embedding dim"):
        next(method.steps(nn.Linear(5, 3), {"class": (images, labels, index)}, 0))


def test_build_method_wires_the_guided_config():
    cfg = Config(model=ModelConfig(head=HeadConfig(dim=2)), train=TrainConfig(seed=5),
                 method=MethodConfig(loss_weight=0.0,
                                     parts=PartsConfig(guided=GuidedConfig(master_margin=2.0))))
    method = build_method(cfg, np.array([0, 1, 2]))
    assert isinstance(method, ComposedMethod) and isinstance(method.guided, GuidedPart)
    g = method.guided
    assert g.dim == 2 and g.seed == 5 and g.cfg.master_margin == 2.0
    assert method.guided.master_config(1, (28, 28))["seed"] == 5


def test_master_cache_is_keyed_by_the_training_set(data):
    from dmlkit.methods.guided import training_set_key

    train = data.splits.train
    assert training_set_key(train) == training_set_key(train.subset(np.arange(len(train))))
    assert training_set_key(train.subset(np.arange(len(train) - 1))) != training_set_key(train)
    flipped = train.subset(np.arange(len(train)))
    flipped.images[0, 0, 0, 0] ^= 1  # same labels and size, one pixel differs
    assert training_set_key(flipped) != training_set_key(train)


def test_student_split_and_validation_loss(data, tmp_path):
    """The official student: random_split 90/10 of the targets' dataset, training batches from
    the 90 %, and per epoch ``evaluate_step``: eval mode, unshuffled batches of the training
    batch size, the mean of the per-batch mean L2 distances."""
    method = _guided(data, student_val_fraction=0.1)
    method.guided.batch_size = 3
    n = len(data.splits.train)
    val_size = int(n * 0.10)
    sampler = method.batch_samplers(data.splits.train.labels,
                                    TrainConfig(batch_size=4, seed=2))["class"]
    sampler.set_epoch(0)
    trained = sorted(i for b in sampler for i in b)
    assert sampler.drop_last and len(trained) == (n - val_size) // 4 * 4
    method.prepare(None, data, tmp_path, CPU)
    held = list(method.guided.held_out.indices)
    assert len(held) == val_size and not set(held) & set(trained)
    assert sorted(held + list(method.guided.student_split(n)[0])) == list(range(n))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 8), nn.BatchNorm1d(8),
                          nn.Linear(8, 2))
    model.train()
    with torch.no_grad():  # BatchNorm running statistics that differ from a batch's
        model(torch.stack([data.train[i][0] for i in range(n)]) * 3 + 1)
    logs = method.validation_logs(model, CPU)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        batch_means = []
        for start in range(0, val_size, 3):
            idx = held[start : start + 3]
            out = model(torch.stack([data.train[i][0] for i in idx]))
            batch_means.append((out - method.guided.targets[idx]).norm(dim=1).mean().item())
    assert len(batch_means) == -(-val_size // 3)
    assert logs == {"val_loss": pytest.approx(float(np.mean(batch_means)), rel=1e-5)}
    # without a held-out set: all images train, nothing is logged
    plain = _guided(data)
    plain.prepare(None, data, tmp_path, CPU)
    assert plain.guided.held_out is None and plain.validation_logs(model, CPU) == {}


def test_student_drop_last_false_keeps_the_partial_batch(data):
    method = _guided(data, student_drop_last=False)
    sampler = method.batch_samplers(np.zeros(10), TrainConfig(batch_size=4))["class"]
    sampler.set_epoch(0)
    assert [len(b) for b in sampler] == [4, 4, 2]


def test_official_student_options_need_random_batches():
    for kw in ({"student_val_fraction": 0.1}, {"student_drop_last": False}):
        with pytest.raises(ConfigError, match="loss_weight > 0"):
            _method(GuidedConfig(**kw), LossConfig(), np.arange(3), 2, loss_weight=1.0)


def test_val_loss_is_logged_per_epoch_in_metrics_csv(tmp_path):
    from dmlkit.engine.train import train

    cfg = config_mod.load("guided-small", [
        f"run.root={tmp_path}", "data.name=digits", "data.image_size=16",
        "data.max_per_class=30", "model.head.dim=2", "train.epochs=2", "eval.nmi=false",
        "eval.evaluate_untrained=false", "method.parts.guided.master_epochs=1",
        "method.parts.guided.master_batch_size=8",
        "method.parts.guided.student_val_fraction=0.1",
        "method.parts.guided.student_drop_last=false", "train.batch_size=32",
        "eval.batch_divisor=30",
    ])
    run = train(cfg)
    rows = list(csv.DictReader((run.path / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["val_loss"]) > 0 for r in rows)
    final = run.read_json("metrics.json")["final"]
    assert {"nn_accuracy", "nn_macro_f1"} <= final.keys()  # guided-small sets classification


def test_master_training_reads_batches_and_the_loss_once_per_epoch(data, monkeypatch):
    """Batched images train the master exactly as sample-by-sample images; the labels reach the
    master on the host (its routing needs no device read) and the epoch's loss is read once."""
    from dmlkit.data.dataset import ImageDataset
    from dmlkit.data.transforms import build_batch_transform, build_transform

    cfg = GuidedConfig(master_epochs=2, master_batch_size=8)
    part = _method(cfg, LossConfig(), data.splits.train.classes, 2).guided
    size, channels = data.image_size, data.in_channels
    raw = build_transform("raw255", False, size, channels)
    per_sample = ImageDataset(data.splits.train, raw)
    batched = ImageDataset(data.splits.train, raw,
                           build_batch_transform("raw255", False, size, channels))
    assert batched.batched and not per_sample.batched
    labels = data.splits.train.labels
    master_cfg = part.master_config(channels, (size, size))
    want_log, got_log = [], []
    want = part.train_master(per_sample, labels, master_cfg, CPU, log=want_log.append)

    reads, label_devices = [], []
    for name in ("item", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda t, *a, _o=original, _n=name:
                            reads.append(_n) or _o(t, *a))
    forward = MultiBranchMaster.forward
    monkeypatch.setattr(MultiBranchMaster, "forward", lambda self, x, y:
                        label_devices.append(y.device.type) or forward(self, x, y))
    got = part.train_master(batched, labels, master_cfg, CPU, log=got_log.append)
    monkeypatch.undo()
    assert reads == ["__float__", "__float__"]  # one per epoch
    assert label_devices and set(label_devices) == {"cpu"}
    assert got_log == want_log and len(got_log) == 2
    for key, value in want.state_dict().items():  # same kernels, same inputs: bitwise
        assert torch.equal(got.state_dict()[key], value), key
