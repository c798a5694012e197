"""Training on an on-disk dataset: the same run with any number of DataLoader workers (kept
across epochs) and resumed mid-epoch; with the image cache, no image decoded after it exists."""

import csv
import json

import pytest
import torch
from PIL import Image
from rich.console import Console

from data.fixtures import make_folder
from dmlkit import config
from dmlkit.base.run_dir import RunDir
from dmlkit.engine.checkpoint import CheckpointFolder
from dmlkit.engine.train import build_components, train
from dmlkit.engine.trainer import Trainer

ARGS = ["data.name=folder", "data.transform=small_aug", "data.image_size=16",
        "data.device_transforms=false", "data.val_fraction=0", "train.batch_size=8",
        "train.m_per_class=2", "train.epochs=2", "train.batches_per_epoch=4",
        "train.checkpoint_every=3", "eval.evaluate_untrained=false", "eval.nmi=false"]


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("img"), classes=tuple("abcdefghij"),
                       per_class=4, size=(40, 30))


def run_config(tmp_path, images, name, *extra):
    return config.load("digits-smoke", [f"data.root={images}", f"run.root={tmp_path}",
                                        f"run.name={name}", *ARGS, *extra])


def outcome(run):
    with (run / "metrics.csv").open() as f:
        rows = [{k: v for k, v in r.items() if k not in ("train_seconds", "train_img_per_s")}
                for r in csv.DictReader(f)]
    return json.loads((run / "metrics.json").read_text())["final"], rows


def test_workers_persistence_and_resume_train_the_same_run(tmp_path, images, monkeypatch):
    reference = outcome(train(run_config(tmp_path, images, "w0", "data.num_workers=0")).path)
    assert outcome(train(run_config(tmp_path, images, "w2", "data.num_workers=2")).path) \
        == reference
    save = CheckpointFolder.save

    def dying_save(self, weights, state, epoch, batch=0):
        path = save(self, weights, state, epoch, batch)
        if (epoch, batch) == (1, 2):  # iteration 6 of 2 x 4: mid-epoch 2
            raise Killed
        return path

    monkeypatch.setattr(CheckpointFolder, "save", dying_save)
    with pytest.raises(Killed):
        train(run_config(tmp_path, images, "cut", "data.num_workers=1"))
    monkeypatch.undo()
    assert outcome(train(None, resume=tmp_path / "cut").path) == reference


def test_a_cached_dataset_trains_and_evaluates_without_decoding(tmp_path, images, monkeypatch):
    first = train(run_config(tmp_path, images, "a", "data.image_cache=true",
                             "train.epochs=1")).path
    assert len(list((tmp_path / "cache" / "images").glob("*.u8"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image file was opened")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = train(run_config(tmp_path, images, "b", "data.image_cache=true", "train.epochs=1"))
    assert outcome(again.path) == outcome(first)



def test_workers_hand_uint8_images_normalized_on_the_device(tmp_path, images):
    """The per-sample transform stops at the uint8 image (a quarter of the bytes through shared
    memory and to the device); the trainer makes the float32, normalized batch on the device:
    the same values as the whole transform."""
    cfg = run_config(tmp_path, images, "u8", "data.num_workers=0")
    data, method, model = build_components(cfg)
    trainer = Trainer(cfg, data, model, method, RunDir.create(cfg), torch.device("cpu"),
                      Console(quiet=True))
    loader = trainer._loaders()["class"]
    seeded = next(iter(loader.batch_sampler))  # (index, seed) of the first batch's samples
    raw, _, _ = next(iter(loader))
    whole = data.stream("class")  # the whole transform
    expected = torch.stack([whole[item][0] for item in seeded])
    assert raw.dtype == torch.uint8 and expected.dtype == torch.float32
    assert torch.equal(trainer._to_float["class"](raw), expected)
