"""``data.num_workers: auto``: the cores for datasets of files, none for in-memory ones."""

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from data.fixtures import make_folder
from dmlkit import config
from dmlkit.data import workers
from dmlkit.data.catalog import Catalog
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.feature_dataset import FeatureDataset
from dmlkit.data.registry import load_catalog
from dmlkit.errors import ConfigError


def test_auto_gives_the_cores_to_files_only(tmp_path, monkeypatch):
    assert 1 <= workers.available_cores() <= (torch.multiprocessing.cpu_count() or 1)
    monkeypatch.setattr(workers, "available_cores", lambda: 12)
    files = ImageDataset(load_catalog("folder", make_folder(tmp_path / "img")))
    memory = ImageDataset(Catalog("m", np.array([0, 1]), np.array(["train", "test"]),
                                  images=np.zeros((2, 4, 4, 3), np.uint8)))
    features = FeatureDataset(memory.catalog, torch.zeros(2, 3))
    assert workers.loader_workers("auto", files) == 11  # one core for the training process
    assert workers.loader_workers("auto", Subset(files, [0, 1])) == 11
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks on this machine share its cores
    assert workers.loader_workers("auto", files) == 5
    assert workers.loader_workers("auto", memory) == workers.loader_workers("auto", features) == 0
    assert workers.loader_workers(3, memory) == 3


@pytest.mark.parametrize("value", ["-1", "many"])
def test_num_workers_is_a_count_or_auto(value):
    with pytest.raises(ConfigError, match=r"'data\.num_workers"):
        config.load("digits-smoke", [f"data.num_workers={value}"])
    assert config.load("digits-smoke", ["data.num_workers=2"]).data.num_workers == 2
