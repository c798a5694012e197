from pathlib import Path

import pytest
from PIL import Image

from dmlkit.errors import DataError
from dmlkit.serve.image_listing import expand_image_args, list_images


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)
    return path


def test_class_folders_give_labels(tmp_path):
    for rel in ("cat/b.png", "cat/a.jpg", "dog/deep/x.png", "dog/.hidden.png", ".git/y.png"):
        _img(tmp_path / rel)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    listing = list_images(tmp_path)
    assert listing.relative == ["cat/a.jpg", "cat/b.png", "dog/deep/x.png"]
    assert listing.labels.tolist() == [0, 0, 1]
    assert listing.class_names == {0: "cat", 1: "dog"}


def test_train_test_layout_is_read_like_a_training_folder(tmp_path):
    for rel in ("train/a/1.png", "test/b/2.png"):
        _img(tmp_path / rel)
    listing = list_images(tmp_path)
    assert listing.relative == ["train/a/1.png", "test/b/2.png"]
    assert listing.labels.tolist() == [0, 1]


def test_top_level_images_mean_an_unlabeled_recursive_listing(tmp_path):
    for rel in ("z.png", "a.png", "sub/c.png", "sub/deeper/d.png", ".h.png"):
        _img(tmp_path / rel)
    listing = list_images(tmp_path)
    assert listing.relative == ["a.png", "z.png", "sub/c.png", "sub/deeper/d.png"]
    assert listing.labels is None and listing.class_names == {}


def test_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        list_images(tmp_path / "empty")


def test_expand_image_args(tmp_path):
    a = _img(tmp_path / "q" / "a.png")
    b = _img(tmp_path / "folder" / "b.png")
    assert expand_image_args([a, tmp_path / "folder"]) == [a, b]
    with pytest.raises(DataError, match="does not exist"):
        expand_image_args([tmp_path / "missing.png"])


def test_query_folders_list_in_numeric_order(tmp_path):
    for n in (0, 1, 2, 10, 11):
        Image.new("L", (4, 4)).save(tmp_path / f"{n}.png")
    assert [p.name for p in expand_image_args([tmp_path])] == [
        "0.png", "1.png", "2.png", "10.png", "11.png"]
