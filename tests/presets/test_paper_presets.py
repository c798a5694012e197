"""The paper presets carry the official codes' sampler, crop and k-means values (issue 31;
docs/faithfulness.md cites the official file and line of each)."""

import pytest

from dmlkit import config

MDR = ["mdr-paper-cub", "mdr-paper-cars", "mdr-paper-sop", "mdr-paper-inshop"]
SHARING = ["sharing-paper-cub", "sharing-paper-cars"]
GUIDED = ["guided-paper-cifar10", "guided-paper-mnist", "guided-paper-fashion-mnist"]
PAPER = [n for n in config.preset_names() if "-paper-" in n]


def test_every_paper_preset_is_covered():
    assert sorted(PAPER) == sorted(MDR + SHARING + GUIDED)


@pytest.mark.parametrize(("name", "batch", "m"), [
    ("mdr-paper-cub", 128, 4), ("mdr-paper-cars", 128, 4),
    ("mdr-paper-sop", 256, 3), ("mdr-paper-inshop", 256, 3),  # README: --batch 256
])
def test_mdr_sampler_and_crop_are_the_official_ones(name, batch, m):
    cfg = config.load(name)
    t = cfg.train
    assert (t.batch_size, t.m_per_class, t.batches_per_epoch) == (batch, m, 100)
    assert t.small_classes == "all"  # metric/batchsampler.py: min(m, n) images, cut at batch
    assert cfg.data.crop_ratio == (0.75, 1.33)  # utils/common.py RandomResizedCrop


@pytest.mark.parametrize("name", SHARING + GUIDED)
def test_kmeans_is_faiss_default_seed_on_every_point(name):
    e = config.load(name).eval
    assert (e.kmeans_seed, e.kmeans_max_points_per_centroid) == (1234, None)


@pytest.mark.parametrize("name", SHARING)
def test_sharing_keeps_torchvision_crop_and_exact_batches(name):
    cfg = config.load(name)  # datasets.py: RandomResizedCrop(size=224), torchvision's ratio
    assert cfg.data.crop_ratio is None and cfg.train.small_classes == "replace"


@pytest.mark.parametrize("name", [n for n in config.preset_names() if "-paper-" not in n
                                  and n not in ("guided-fashion-mnist",)])
def test_other_presets_keep_the_defaults(name):
    cfg = config.load(name)
    assert (cfg.train.small_classes, cfg.data.crop_ratio) == ("replace", None)
    assert cfg.eval.kmeans_max_points_per_centroid == 256 and not cfg.eval.bn_train_mode
