"""Config version 2 (``method.parts``) and the migration of version 1 (``method.name``)."""

from pathlib import Path

import pytest
import yaml

from dmlkit import config
from dmlkit.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "runs_v1"


def v1(method: dict) -> dict:
    return {"method": method}


def test_v1_names_become_parts_and_unused_sections_are_dropped():
    mdr = config.from_dict(v1({"name": "mdr", "mdr": {"weight": 0.3},
                               "sharing": {"shared_dim": 7}, "guided": {"master_epochs": 1}}))
    assert mdr.version == config.CONFIG_VERSION and mdr.method.label == "mdr"
    assert mdr.method.parts.mdr.weight == 0.3 and mdr.method.parts.mdr.head == "embedding"
    assert mdr.method.parts.sharing is None and mdr.method.parts.guided is None
    metric = config.from_dict(v1({"name": "metric", "mdr": {"weight": 0.3}}))
    assert metric.method.label == "metric" and metric.method.loss_weight == 1.0
    sharing = config.from_dict(v1({"name": "sharing"}))
    assert sharing.method.parts.sharing == config.SharingConfig()


def test_v1_guided_metric_weight_becomes_the_loss_weight():
    pure = config.from_dict(v1({"name": "guided"}))
    assert pure.method.loss_weight == 0.0 and pure.method.parts.guided.weight == 1.0
    mixed = config.from_dict(v1({"name": "guided", "guided": {"metric_weight": 0.5}}))
    assert mixed.method.loss_weight == 0.5


def test_v1_run_configs_load_as_written(tmp_path):
    for name in ("metric", "mdr", "sharing", "guided"):
        raw = yaml.safe_load((FIXTURES / name / "config.yaml").read_text())
        assert "version" not in raw and raw["method"]["name"] == name
        cfg = config.load(str(FIXTURES / name / "config.yaml"))
        assert cfg.method.label == name
        section = raw["method"].get(name, {})
        part = getattr(cfg.method.parts, name, None)
        for key, value in section.items():  # every key of the method's section carried over
            if key != "metric_weight":
                assert part.model_dump(mode="json")[key] == value, key
        config.save(cfg, tmp_path / f"{name}.yaml")  # written again in the current version
        again = config.load(str(tmp_path / f"{name}.yaml"))
        assert again == cfg and yaml.safe_load((tmp_path / f"{name}.yaml").read_text())[
            "version"] == config.CONFIG_VERSION


def test_v1_presets_take_v2_overrides():
    cfg = config.load("mdr-small", ["method.parts.mdr.weight=0.3", "method.parts.sharing={}"])
    assert cfg.method.parts.mdr.weight == 0.3 and cfg.method.parts.mdr.nu == 0.01
    assert cfg.method.label == "mdr+sharing"
    off = config.load("mdr-small", ["method.parts.mdr=null"])
    assert off.method.label == "metric"
    legacy = config.load("mdr-small", ["method.name=metric"])  # old benchmark overrides
    assert legacy.method.label == "metric"


def test_v2_rejects_v1_keys_and_unknown_versions():
    with pytest.raises(ConfigError, match=r"unknown key 'method.name'"):
        config.from_dict({"version": 2, "method": {"name": "mdr"}})
    with pytest.raises(ConfigError, match=r"'version' 4 .* a newer dmlkit wrote it"):
        config.from_dict({"version": 4})
    with pytest.raises(ConfigError, match=r"'method.name': one of metric, mdr"):
        config.from_dict(v1({"name": "mdrr"}))


def test_composed_preset_reads_as_parts():
    cfg = config.load("compose-smoke")
    p = cfg.method.parts
    assert (p.mdr.head, p.mdr.weight, p.guided.weight, p.sharing.shared_dim) == (
        "embedding", 0.6, 0.1, 16)
    assert cfg.method.label == "mdr+sharing+guided"


def test_run_configs_before_version_3_keep_their_input_pipeline():
    """A run's config.yaml from before version 3 lacks the input-pipeline keys: it keeps the
    old behaviour (no draft decoding, loader seeds, num_workers 0 where absent); presets and
    hand-written version-1 configs (not every section) take the new defaults."""
    v2 = config.from_dict({"version": 2, "data": {"name": "cub200", "num_workers": 4}})
    assert (v2.data.num_workers, v2.data.jpeg_draft, v2.data.augment_seeds) == (4, False,
                                                                                "loader")
    assert config.from_dict({"version": 2}).data.num_workers == 0
    for name in ("metric", "mdr"):  # version 1, written whole by a run
        old = config.load(str(FIXTURES / name / "config.yaml"))
        assert (old.data.jpeg_draft, old.data.augment_seeds) == (False, "loader")
    new = config.load("mdr-paper-cub")
    assert (new.data.num_workers, new.data.jpeg_draft, new.data.augment_seeds,
            new.data.image_cache) == ("auto", True, "position", "auto")
    assert v2.data.image_cache is False  # a run from before the cache keeps decoding files
    again = config.from_dict(yaml.safe_load(config.to_yaml(v2)))  # saved again: unchanged
    assert again == v2 and again.version == config.CONFIG_VERSION


def test_configs_without_the_issue_31_keys_keep_their_behaviour():
    """Sampler small-class rule, crop ratio and k-means sample: absent keys (any run written
    before them) mean what dmlkit did before."""
    written = [yaml.safe_load((FIXTURES / n / "config.yaml").read_text())
               for n in ("metric", "mdr", "sharing", "guided")]
    for raw in [*written, {"version": 3, "train": {"batch_size": 12, "m_per_class": 3}}]:
        cfg = config.from_dict(raw)
        assert (cfg.train.small_classes, cfg.data.crop_ratio) == ("replace", None)
        assert cfg.eval.kmeans_max_points_per_centroid == 256


def test_overrides_in_every_section_do_not_make_a_preset_a_legacy_run_config():
    """A preset lacks sections; ``--set`` keys that add them must not make it look like a
    version-1 run's config.yaml (written whole), which keeps the old input pipeline."""
    cfg = config.load("mdr-paper-cub", ["data.name=folder", "model.pretrained=false",
                                        "method.loss_weight=1", "optim.lr=0.001",
                                        "train.epochs=1", "eval.recall_ks=[1]", "run.name=x"])
    assert (cfg.data.num_workers, cfg.data.jpeg_draft, cfg.data.augment_seeds,
            cfg.data.image_cache) == ("auto", True, "position", "auto")
    for name in ("metric", "mdr"):  # a run's version-1 config.yaml still keeps its pipeline
        old = config.load(str(FIXTURES / name / "config.yaml"), ["train.epochs=2"])
        assert (old.data.num_workers, old.data.jpeg_draft) == (0, False)
