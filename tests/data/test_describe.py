import numpy as np
from typer.testing import CliRunner

from data.fixtures import make_cub, make_inshop, make_sop, write_image
from dmlkit.cli.app import app
from dmlkit.data.catalog import Catalog
from dmlkit.data.cub import load_cub
from dmlkit.data.describe import describe_catalog
from dmlkit.data.folder import load_folder
from dmlkit.data.inshop import load_inshop
from dmlkit.data.sop import load_sop


def test_size_stats_of_files(tmp_path):
    sizes = [(10, 40), (30, 20), (20, 30), (50, 10)]
    for i, size in enumerate(sizes):
        write_image(tmp_path / f"k{i % 2}/{i}.png", seed=i, size=size)
    (tmp_path / "k1/9.png").write_bytes(b"broken")
    d = describe_catalog(load_folder(tmp_path))
    assert d["images"] == 5 and d["classes"] == 2 and d["train"]["images"] == 5
    stats = d["image_stats"]
    assert stats["sampled"] == 5 and stats["unreadable"] == 1 and stats["modes"] == {"RGB": 4}
    [line] = stats["unreadable_files"]
    assert str(tmp_path / "k1/9.png") in line and "identify" in line
    assert stats["width"] == {"min": 10, "median": 25.0, "max": 50}
    assert stats["height"] == {"min": 10, "median": 25.0, "max": 40}
    assert describe_catalog(load_folder(tmp_path), sample_images=2)["image_stats"]["sampled"] == 2
    res = CliRunner().invoke(app, ["datasets", "--describe", "folder", "--root", str(tmp_path)])
    assert res.exit_code == 0 and str(tmp_path / "k1" / "9.png") in res.output


def test_query_gallery_super_labels_and_boxes(tmp_path):
    d = describe_catalog(load_inshop(make_inshop(tmp_path / "i")))
    assert (d["query"], d["gallery"], d["test"]["images"]) == (2, 4, 6)
    assert describe_catalog(load_sop(make_sop(tmp_path / "s")))["super_classes"] == 2
    assert describe_catalog(load_cub(make_cub(tmp_path / "c")))["bboxes"] is True


def test_in_memory_shape():
    cat = Catalog("x", np.arange(3), np.array(["train", "test", "test"]),
                  images=np.zeros((3, 5, 7, 3), np.uint8))
    stats = describe_catalog(cat)["image_stats"]
    assert stats["width"]["max"] == 7 and stats["height"]["min"] == 5
    assert stats["modes"] == {"RGB": 3} and stats["sampled"] == 3
