import shutil

import numpy as np
import pytest

from data.fixtures import make_inshop, write_lines
from dmlkit.data.inshop import load_inshop
from dmlkit.data.registry import load_catalog
from dmlkit.errors import DataError


def test_official_layout(tmp_path):
    make_inshop(tmp_path)
    cat = load_catalog("inshop", root=tmp_path)
    assert cat.name == "inshop" and len(cat) == 10
    assert cat.labels.tolist() == [1, 1, 2, 2, 3, 3, 3, 4, 4, 4]
    assert cat.split.tolist() == ["train"] * 4 + ["test"] * 6
    assert np.flatnonzero(cat.is_query).tolist() == [4, 7]
    assert np.flatnonzero(cat.is_gallery).tolist() == [5, 6, 8, 9]
    assert not (cat.is_query & cat.is_gallery).any()
    assert cat.paths[0] == tmp_path / "img/WOMEN/Dresses/id_00000001/00_1_front.jpg"


def test_list_in_root_and_images_without_img_folder(tmp_path):
    make_inshop(tmp_path, in_eval_dir=False)
    for p in (tmp_path / "img").iterdir():
        shutil.move(p, tmp_path / p.name)
    cat = load_inshop(tmp_path)
    assert cat.paths[0] == tmp_path / "WOMEN/Dresses/id_00000001/00_1_front.jpg"
    assert all(p.is_file() for p in cat.paths)


def _edit(tmp_path, number, text):
    path = tmp_path / "Eval/list_eval_partition.txt"
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    write_lines(path, lines)


@pytest.mark.parametrize(
    ("line", "text", "message"),
    [
        (1, "11", "line 1: says '11' images but 10"),
        (2, "image item status", "line 2: expected the header"),
        (4, "img/x.jpg id_00000001 val", "line 4: evaluation status 'val'"),
        (5, "img/x.jpg item7 train", "line 5: item id 'item7'"),
    ],
)
def test_bad_lines_are_named(tmp_path, line, text, message):
    make_inshop(tmp_path)
    _edit(tmp_path, line, text)
    with pytest.raises(DataError, match=message):
        load_inshop(tmp_path)


def test_download_explains_manual_steps(tmp_path):
    with pytest.raises(DataError, match=r"Google Drive.*img.zip and Eval/list_eval_partition"):
        load_inshop(tmp_path, download=True)
    with pytest.raises(DataError, match=r"missing list_eval_partition.txt .*\(or in Eval/\)"):
        load_inshop(tmp_path)
