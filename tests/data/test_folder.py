import pytest

from data.fixtures import make_folder, write_image
from dmlkit.data.folder import load_folder
from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError


def test_flat_layout_sorted_class_ids(tmp_path):
    make_folder(tmp_path, classes=("cat", "ant", "bee"), per_class=2)
    write_image(tmp_path / "bee/deeper/extra.png", seed=9)  # any depth below the class folder
    (tmp_path / "ant/notes.txt").write_text("not an image")
    write_image(tmp_path / "ant/.hidden.jpg")
    write_image(tmp_path / ".cache/x.jpg")
    (tmp_path / "empty").mkdir()
    cat = load_catalog("folder", root=tmp_path)
    assert cat.class_names == {0: "ant", 1: "bee", 2: "cat"}
    assert cat.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert set(cat.split) == {"train"}
    assert [p.relative_to(tmp_path).as_posix() for p in cat.paths[2:5]] == [
        "bee/0000.jpg", "bee/0001.jpg", "bee/deeper/extra.png",
    ]


def test_train_test_layout(tmp_path):
    make_folder(tmp_path, classes=("b", "c"), per_class=2, splits=True)
    write_image(tmp_path / "test/a/0000.jpg")  # a class only in test still gets its sorted id
    cat = load_folder(tmp_path)
    assert cat.class_names == {0: "a", 1: "b", 2: "c"}
    assert cat.split.tolist() == ["train"] * 4 + ["test"] * 5
    assert cat.labels.tolist() == [1, 1, 2, 2, 0, 1, 1, 2, 2]


def test_errors(tmp_path):
    with pytest.raises(DataError, match=r"set data.root"):
        load_folder(None)
    with pytest.raises(DataError, match=r"does not exist"):
        load_folder(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no images in class folders"):
        load_folder(tmp_path)
    with pytest.raises(DataError, match=r"cannot be downloaded"):
        load_folder(tmp_path, download=True)
