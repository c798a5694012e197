"""The Guided DML paper presets carry the official scripts' values (G-DML/Guided-Deep-Metric-
Learning, MyModel_CIFAR10.py, MyModel_MNIST.py, MyModel_Fashion.py, read at commit 41f7a3a)."""

import pytest

from dmlkit import config
from dmlkit.config import Config, GuidedConfig, MethodConfig, PartsConfig

# (dataset, master batch, master epochs, beta, student batch, plateau factor, plateau patience)
OFFICIAL = {
    "guided-paper-cifar10": ("cifar10", 64, 12, 0.003, 32, 0.20, 3),
    "guided-paper-mnist": ("mnist", 32, 10, 0.005, 128, 0.80, 1),
    "guided-paper-fashion-mnist": ("fashion-mnist", 64, 10, 0.005, 32, 0.60, 1),
}

# the official `preprocess` Normalize of each script (dmlkit's cifar: rounded to 4 decimals)
EVAL_TRANSFORM = {"cifar10": "cifar", "mnist": "mnist", "fashion-mnist": "fashion_mnist"}


@pytest.mark.parametrize("name", [*OFFICIAL, "guided-fashion-mnist"])
def test_paper_presets_have_the_official_values(name):
    cfg = config.load(name)
    key = "guided-paper-fashion-mnist" if name == "guided-fashion-mnist" else name
    data, master_batch, master_epochs, beta, batch, factor, patience = OFFICIAL[key]
    g = cfg.method.parts.guided
    assert cfg.data.name == data and cfg.data.protocol == "closed_set"
    assert cfg.data.transform == "raw255" and g.master_raw_pixels  # 0-255 pixels, both stages
    assert (g.master_batch_size, g.master_epochs, g.master_beta) == (master_batch,
                                                                   master_epochs, beta)
    assert (g.master_lr, g.master_margin, cfg.model.head.dim) == (1e-3, 3.0, 2)
    assert cfg.model.head.output == "raw" and cfg.model.backbone == "resnet18_cifar"
    assert cfg.model.init == "pytorch_default" and not cfg.model.pretrained
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.grad_clip_value) == ("sgd", 0.1, 0.0,
                                                                            1e-4, 0.1)
    assert (o.schedule, o.gamma, o.plateau_patience) == ("plateau", factor, patience)
    assert (cfg.train.epochs, cfg.train.batch_size) == (50, batch)
    assert (g.student_val_fraction, g.student_drop_last) == (0.1, False)
    e = cfg.eval
    assert (e.normalize, e.batch_divisor, e.classification, e.kmeans_seed) == (False, 30, True,
                                                                               1234)
    # the official extraction: BatchNorm in training mode, normalized inputs, k-means on all
    assert e.bn_train_mode and cfg.data.eval_transform == EVAL_TRANSFORM[data]
    assert e.kmeans_max_points_per_centroid is None


@pytest.mark.parametrize("name", ["guided-small", "guided-cifar10-cpu"])
def test_cpu_presets_keep_dmlkit_defaults(name):
    cfg = config.load(name)
    g = cfg.method.parts.guided
    assert (cfg.model.init, g.student_val_fraction, g.student_drop_last) == ("torchvision", 0.0,
                                                                             True)
    assert (cfg.eval.batch_divisor, cfg.eval.kmeans_seed) == (None, 0)
    assert (cfg.data.eval_transform, cfg.eval.bn_train_mode) == (None, False)
    assert cfg.eval.kmeans_max_points_per_centroid == 256


def test_configs_without_the_new_keys_keep_the_old_behaviour():
    old = Config(method=MethodConfig(parts=PartsConfig(guided=GuidedConfig()),
                                     loss_weight=0.0)).to_dict()
    for section, key in (("model", "init"), ("eval", "batch_divisor"), ("eval", "kmeans_seed"),
                         ("eval", "classification")):
        del old[section][key]
    del old["method"]["parts"]["guided"]["student_val_fraction"]
    del old["method"]["parts"]["guided"]["student_drop_last"]
    cfg = config.from_dict(old)
    assert cfg.model.init == "torchvision" and cfg.method.parts.guided.student_val_fraction == 0.0
    assert cfg.method.parts.guided.student_drop_last and cfg.eval.batch_divisor is None
    assert cfg.eval.kmeans_seed == 0 and not cfg.eval.classification
