import hashlib

import numpy as np
import pytest

from data.fixtures import make_cub, tar_gz, write_lines
from dmlkit.data import cub
from dmlkit.data.cub import load_cub
from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError


def test_official_layout(tmp_path):
    make_cub(tmp_path, n_classes=4, per_class=2)
    cat = load_catalog("cub200", root=tmp_path)
    assert cat.name == "cub200" and len(cat) == 8
    assert cat.labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert cat.split.tolist() == ["train"] * 4 + ["test"] * 4
    assert cat.class_names == {c: f"Bird_{c}" for c in range(1, 5)}
    # bounding_boxes.txt is written in reverse id order: the loader joins by image id
    expected = np.array([[k, 2 * k, 10 + k, 20 + k] for k in range(1, 9)], dtype=float)
    np.testing.assert_array_equal(cat.bboxes, expected)
    assert cat.paths[2] == tmp_path / "CUB_200_2011/images/002.Bird_2/Bird_2_0000_3.jpg"
    assert all(p.is_file() for p in cat.paths)


def test_split_is_first_half_of_sorted_class_ids(tmp_path):
    make_cub(tmp_path, n_classes=6, per_class=1)
    cat = load_cub(tmp_path / "CUB_200_2011")  # the inner folder works as root too
    assert sorted(cat.labels[cat.split == "train"].tolist()) == [1, 2, 3]


def test_without_bounding_boxes(tmp_path):
    make_cub(tmp_path, bboxes=False)
    assert load_cub(tmp_path).bboxes is None


@pytest.mark.parametrize("missing", ["image_class_labels.txt", "classes.txt"])
def test_missing_annotation_file_is_named(tmp_path, missing):
    make_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / missing).unlink()
    with pytest.raises(DataError, match=f"missing .*{missing}"):
        load_cub(tmp_path)


def test_missing_layout(tmp_path):
    with pytest.raises(DataError, match=r"does not exist"):
        load_cub(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"missing images.txt in .* \(or in CUB_200_2011/\)"):
        load_cub(tmp_path)


def test_missing_image_is_named(tmp_path):
    make_cub(tmp_path)
    gone = tmp_path / "CUB_200_2011/images/003.Bird_3/Bird_3_0001_6.jpg"
    gone.unlink()
    with pytest.raises(DataError, match=f"1 of 8 listed images are missing, first: {gone}"):
        load_cub(tmp_path)


def test_bad_row_names_file_and_line(tmp_path):
    make_cub(tmp_path)
    path = tmp_path / "CUB_200_2011/images.txt"
    lines = path.read_text().splitlines()
    lines[2] = "three 001.Bird_1/x.jpg"
    write_lines(path, lines)
    with pytest.raises(DataError, match=r"images.txt line 3: invalid literal"):
        load_cub(tmp_path)


def test_image_without_label_row(tmp_path):
    make_cub(tmp_path)
    path = tmp_path / "CUB_200_2011/image_class_labels.txt"
    write_lines(path, [ln for ln in path.read_text().splitlines() if not ln.startswith("5 ")])
    with pytest.raises(DataError, match=r"no row for image id 5"):
        load_cub(tmp_path)


def test_download_from_file_url(tmp_path, monkeypatch):
    archive = tar_gz(make_cub(tmp_path / "src"), tmp_path / "CUB_200_2011.tgz")
    monkeypatch.setattr(cub, "URL", archive.as_uri())
    monkeypatch.setattr(cub, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    cat = load_cub(tmp_path / "dl", download=True)
    assert len(cat) == 8 and (tmp_path / "dl/CUB_200_2011.tgz").is_file()
    monkeypatch.setattr(cub, "MD5", "0" * 32)
    with pytest.raises(DataError, match=r"checksum mismatch"):
        load_cub(tmp_path / "dl2", download=True)
