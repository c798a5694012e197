"""Configs parsed safely (issue 30, item 4): plain JSON types only, alias expansion bounded."""

import resource
import time

import pytest

from dmlkit import config as config_mod
from dmlkit import safe_yaml
from dmlkit.errors import ConfigError
from dmlkit.protocol.benchmark_config import load_benchmark_config

BOMB = "\n".join(
    ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]"
       for i in range(10)]  # 11 levels of 10x: 10**11 strings once expanded
) + "\n"


def test_dates_stay_the_strings_they_were_written_as(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extends: digits-smoke\nrun: {name: 2024-01-01}\n")
    cfg = config_mod.load(str(path), ["run.group=2024-01-02 10:00:00"])
    assert cfg.run.name == "2024-01-01" and cfg.run.group == "2024-01-02 10:00:00"
    assert cfg.digest()  # JSON-serializable (the reported TypeError)


@pytest.mark.parametrize("value", ["!!binary aGVsbG8=", "!!set {a: null}",
                                   "!!timestamp 2024-01-01"])
def test_other_tags_are_one_line_errors(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"extends: digits-smoke\nrun: {{name: {value}}}\n")
    with pytest.raises(ConfigError, match=r"'run.name' is a YAML .* config holds") as e:
        config_mod.load(str(path))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"--set run.name=.*is a YAML"):
        config_mod.load("digits-smoke", [f"run.name={value}"])


def test_non_string_keys_are_refused():
    with pytest.raises(ConfigError, match=r"key 1 under 'data\.options' is not a string"):
        safe_yaml.load("data: {options: {1: a}}", "c.yaml")


def test_alias_bomb_is_refused_quickly_and_without_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "extends: digits-smoke\n")
    rss, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100000 values"):
        config_mod.load(str(path))
    with pytest.raises(ConfigError, match="expands to more than"):
        load_benchmark_config(str(path))
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000  # KiB


def test_self_referring_alias_is_refused():
    with pytest.raises(ConfigError, match="refers to itself"):
        safe_yaml.load("a: &a [1, *a]\n", "c.yaml")


def test_shared_aliases_within_the_bound_load():
    data = safe_yaml.load("x: &x {margin: 0.1}\ny: *x\nz: [*x, *x]\n", "c.yaml")
    assert data == {"x": {"margin": 0.1}, "y": {"margin": 0.1}, "z": [{"margin": 0.1}] * 2}


def test_seed_and_dataset_options_are_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"'train.seed': .*less than 4294967296"):
        config_mod.load("digits-smoke", ["train.seed=99999999999999999999999"])
    with pytest.raises(ConfigError, match=r"'train\.seed'"):
        config_mod.load("digits-smoke", ["train.seed=-1"])
    from dmlkit.data.registry import load_catalog

    with pytest.raises(ConfigError, match=r"dataset digits has no option 'classes' "
                                          r"\(its options: seed, test_fraction\)"):
        load_catalog("digits", classes=1)
