import numpy as np
import pytest

from dmlkit import config
from dmlkit.errors import ConfigError


def test_defaults_validate():
    cfg = config.Config()
    assert cfg.data.name == "fashion-mnist" and cfg.method.loss.name == "TripletMarginLoss"


@pytest.mark.parametrize("name", config.preset_names())
def test_every_preset_validates(name):
    cfg = config.load(name)
    if cfg.train.small_classes == "replace":  # "all" cuts its last class
        assert cfg.train.batch_size % cfg.train.m_per_class == 0


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epochz'"):
        config.from_dict({"train": {"epochz": 3}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"'train.epochs'"):
        config.load("digits-smoke", ["train.epochs=three"])


def test_overrides_and_extends():
    cfg = config.load("mdr-paper-cars", ["optim.lr=1e-3", "eval.recall_ks=[1, 10]"])
    assert cfg.method.parts.mdr.weight == 0.2  # from mdr-paper-cars
    assert cfg.method.loss.reducer == "MeanReducer"  # inherited from mdr-paper-cub
    assert cfg.optim.lr == 1e-3 and cfg.eval.recall_ks == [1, 10]


def test_yaml_file_roundtrip(tmp_path):
    cfg = config.load("sharing-small", ["train.seed=7"])
    path = tmp_path / "c.yaml"
    config.save(cfg, path)
    again = config.load(str(path))
    assert again == cfg and again.digest() == cfg.digest()


def test_missing_file_and_preset(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="no preset"):
        config.load("no-such-preset")


def test_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(str(path))


def test_set_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        config.load("digits-smoke", ["train.epochs"])


@pytest.mark.parametrize("name", config.preset_names())
def test_every_preset_builds_its_method(name):
    from dmlkit.methods.build import build_method

    cfg = config.load(name)
    build_method(cfg, np.arange(10))


def test_parameter_dicts_are_replaced_not_merged():
    cfg = config.load("margin-small")
    assert "margin" not in cfg.method.loss.miner_params  # parent used TripletMarginMiner


@pytest.mark.parametrize("name", config.preset_names())
def test_bn_inception_presets_feed_it_bgr_255(name):
    cfg = config.load(name)
    if name.startswith("mdr-paper-") or name == "mlrc":  # the papers' trunk
        assert cfg.model.backbone == "bninception"
        assert cfg.model.pretrained and cfg.model.freeze_bn
    if cfg.model.backbone == "bninception":
        assert cfg.data.transform.endswith("_bninception")
        assert (cfg.data.eval_transform or "_bninception").endswith("_bninception")
