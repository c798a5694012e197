"""Training on an on-disk dataset: the same run with any number of DataLoader workers (kept
across epochs) and resumed mid-epoch; with the image cache, no image decoded after it exists."""

import csv
import json

import pytest
from PIL import Image

from data.fixtures import make_folder
from dmlkit import config
from dmlkit.engine.checkpoint import CheckpointFolder
from dmlkit.engine.train import train

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
