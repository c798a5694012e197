import pytest

from data.fixtures import make_sop, write_lines
from dmlkit.data.registry import load_catalog
from dmlkit.data.sop import load_sop
from dmlkit.errors import DataError


def test_official_layout(tmp_path):
    make_sop(tmp_path / "Stanford_Online_Products", n_classes=4, per_class=2)
    cat = load_catalog("sop", root=tmp_path)  # the zip's inner folder is found
    assert cat.name == "sop" and len(cat) == 8
    assert cat.labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert cat.split.tolist() == ["train"] * 4 + ["test"] * 4
    assert cat.super_labels.tolist() == [1, 1, 2, 2, 1, 1, 2, 2]
    assert cat.paths[3] == tmp_path / "Stanford_Online_Products/chair_final/102_1.JPG"


def test_bad_header(tmp_path):
    make_sop(tmp_path)
    path = tmp_path / "Ebay_test.txt"
    write_lines(path, path.read_text().splitlines()[1:])
    with pytest.raises(DataError, match=r"Ebay_test.txt line 1: expected the header"):
        load_sop(tmp_path)


def test_bad_row(tmp_path):
    make_sop(tmp_path)
    path = tmp_path / "Ebay_train.txt"
    lines = path.read_text().splitlines()
    lines[2] = "2 1 bicycle_final/101_1.JPG"
    write_lines(path, lines)
    with pytest.raises(DataError, match=r"Ebay_train.txt line 3: expected 4 fields, got 3"):
        load_sop(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"missing Ebay_train.txt"):
        load_sop(tmp_path)
    make_sop(tmp_path)
    (tmp_path / "Ebay_test.txt").unlink()
    with pytest.raises(DataError, match=r"missing .*Ebay_test.txt"):
        load_sop(tmp_path)
