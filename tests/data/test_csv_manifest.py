import numpy as np
import pytest

from data.fixtures import write_image
from dmlkit.data.csv_manifest import load_csv
from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError


def _manifest(tmp_path, text, name="manifest.csv"):
    for i in range(4):
        write_image(tmp_path / f"img/{i}.jpg", seed=i)
    path = tmp_path / name
    path.write_text(text)
    return path


FULL = """path,label,split,is_query,is_gallery,extra
img/0.jpg,3,train,0,0,x
img/1.jpg,3,train,false,no,x
img/2.jpg,7,test,1,0,x
img/3.jpg,7,test,False,True,x
"""


def test_all_columns(tmp_path):
    path = _manifest(tmp_path, FULL, name="data.csv")
    cat = load_catalog("csv", root=path)
    assert cat.labels.tolist() == [3, 3, 7, 7]
    assert cat.split.tolist() == ["train", "train", "test", "test"]
    assert cat.is_query.tolist() == [False, False, True, False]
    assert cat.is_gallery.tolist() == [False, False, False, True]
    assert cat.paths[2] == tmp_path / "img/2.jpg"


def test_minimal_columns_and_folder_root(tmp_path):
    _manifest(tmp_path, "path,label\nimg/1.jpg,0\n\nimg/0.jpg,5\n")
    cat = load_csv(tmp_path)  # a folder means its manifest.csv
    assert cat.labels.tolist() == [0, 5] and set(cat.split) == {"train"}
    assert cat.is_query is None and cat.is_gallery is None
    absolute = _manifest(tmp_path, f"path,label\n{tmp_path / 'img/3.jpg'},1\n", "abs.csv")
    assert load_csv(absolute).paths == [tmp_path / "img/3.jpg"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("img/0.jpg,1\n", r"line 1: the header lacks column\(s\) path, label"),
        ("path,class\nimg/0.jpg,1\n", r"line 1: the header lacks column\(s\) label"),
        ("path,label,is_query\nimg/0.jpg,1,1\n", "line 1: is_query and is_gallery must both"),
        ("path,label\nimg/0.jpg,1\nimg/1.jpg,cat\n", "line 3: label 'cat' is not an integer"),
        ("path,label\nimg/0.jpg,1\nimg/9.jpg,1\n", "line 3: image file 'img/9.jpg' not found"),
        ("path,label\nimg/0.jpg\n", "line 2: fewer fields than the header's 2"),
        ("path,label\nimg/0.jpg,1,2\n", "line 2: more fields than the header's 2"),
        ("path,label,split\nimg/0.jpg,1,val\n", "line 2: split 'val' is not one of train, test"),
        ("path,label,is_query,is_gallery\nimg/0.jpg,1,2,0\n", "line 2: is_query '2' is not a"),
        ("path,label\n", "no rows below the header"),
    ],
)
def test_bad_manifests_name_the_line(tmp_path, text, message):
    path = _manifest(tmp_path, text)
    with pytest.raises(DataError, match=message):
        load_csv(path)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match=r"missing .*manifest.csv"):
        load_csv(tmp_path)
    with pytest.raises(DataError, match=r"set data.root"):
        load_csv(None)


def test_labels_dtype(tmp_path):
    cat = load_csv(_manifest(tmp_path, "path,label\nimg/0.jpg,-2\n"))
    assert cat.labels.dtype == np.int64 and cat.labels.tolist() == [-2]
