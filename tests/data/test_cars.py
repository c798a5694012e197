import numpy as np
import pytest
from scipy.io import savemat

from data.fixtures import make_cars_annos, make_cars_devkit
from dmlkit.data import cars
from dmlkit.data.cars import load_cars
from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError


def test_cars_annos_layout(tmp_path):
    make_cars_annos(tmp_path, n_classes=4, per_class=2)
    cat = load_catalog("cars196", root=tmp_path)
    assert len(cat) == 8 and cat.name == "cars196"
    assert cat.labels.tolist() == [1, 2, 3, 4, 1, 2, 3, 4]
    # DML split by class (1-2 train), not the official per-image "test" flag
    assert cat.split.tolist() == ["train", "train", "test", "test"] * 2
    assert cat.class_names == {c: f"Make{c} Model {2000 + c}" for c in range(1, 5)}
    assert cat.paths[4] == tmp_path / "car_ims/000005.jpg"
    # x1, y1, x2, y2 = k, k + 1, k + 10, k + 21  ->  x, y, w, h
    expected = np.array([[k, k + 1, 10, 20] for k in range(1, 9)], dtype=float)
    np.testing.assert_array_equal(cat.bboxes, expected)


def test_196_classes_split_98_98(tmp_path):
    make_cars_annos(tmp_path, n_classes=196, per_class=1)
    cat = load_cars(tmp_path)
    assert set(cat.labels[cat.split == "train"]) == set(range(1, 99))
    assert set(cat.labels[cat.split == "test"]) == set(range(99, 197))


@pytest.mark.parametrize("in_root", [False, True])
def test_devkit_layout(tmp_path, in_root):
    make_cars_devkit(tmp_path, n_classes=4, per_class=2, test_annos_in_root=in_root)
    cat = load_cars(tmp_path)
    assert len(cat) == 16
    assert cat.labels.tolist() == [1, 2, 3, 4] * 4
    assert cat.paths[0] == tmp_path / "cars_train/00001.jpg"
    assert cat.paths[8] == tmp_path / "cars_test/00001.jpg"
    # all images of classes 1-2 are train, whichever official folder they come from
    assert set(cat.split[np.isin(cat.labels, [1, 2])]) == {"train"}
    assert set(cat.split[np.isin(cat.labels, [3, 4])]) == {"test"}
    assert cat.class_names[3] == "Make3 Model 2003"


def test_devkit_without_test_labels(tmp_path):
    make_cars_devkit(tmp_path)
    src = tmp_path / "devkit/cars_test_annos_withlabels.mat"
    src.rename(tmp_path / "devkit/cars_test_annos.mat")
    with pytest.raises(DataError, match=r"missing cars_test_annos_withlabels.mat"):
        load_cars(tmp_path)


def test_no_layout(tmp_path):
    with pytest.raises(DataError, match=r"missing cars_annos.mat .* devkit/cars_train_annos.mat"):
        load_cars(tmp_path)


def test_missing_field_is_named(tmp_path):
    make_cars_annos(tmp_path)
    ann = np.zeros((1, 1), dtype=[("relative_im_path", "O"), ("test", "O")])
    ann[0, 0] = ("car_ims/000001.jpg", np.array([[0]]))
    savemat(tmp_path / "cars_annos.mat", {"annotations": ann})
    with pytest.raises(DataError, match=r"lack field.*class"):
        load_cars(tmp_path)


def test_corrupt_mat_file(tmp_path):
    make_cars_annos(tmp_path)
    (tmp_path / "cars_annos.mat").write_bytes(b"not a MATLAB file at all" * 10)
    with pytest.raises(DataError, match=r"cannot read .*cars_annos.mat"):
        load_cars(tmp_path)


def test_missing_image_is_named(tmp_path):
    make_cars_annos(tmp_path)
    (tmp_path / "car_ims/000003.jpg").unlink()
    with pytest.raises(DataError, match=r"first: .*car_ims/000003.jpg"):
        load_cars(tmp_path)


def test_dead_download_explains(tmp_path, monkeypatch):
    monkeypatch.setattr(cars, "IMAGES_URL", (tmp_path / "gone/car_ims.tgz").as_uri())
    with pytest.raises(DataError, match=r"download of .* failed.*Stanford host is gone"):
        load_cars(tmp_path / "dl", download=True)
