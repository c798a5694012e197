import numpy as np
import pytest

from data.fixtures import make_folder, write_image, write_png_header
from dmlkit.data.catalog import Catalog
from dmlkit.data.folder import load_folder
from dmlkit.data.image_check import check_images, require_files, require_one_size
from dmlkit.errors import DataError


def _catalog(tmp_path):
    make_folder(tmp_path, classes=("a", "b"), per_class=3)
    make_folder(tmp_path, classes=("c",), per_class=2, suffix=".png")
    return load_folder(tmp_path)


def test_good_files_pass(tmp_path):
    cat = _catalog(tmp_path)
    checked = check_images(cat, decode=True, workers=2)
    assert checked.catalog is cat and checked.skipped == []
    assert checked.sizes.tolist() == [[24, 16]] * 8


def test_garbage_file_fails_with_its_path(tmp_path):
    cat = _catalog(tmp_path)
    bad = tmp_path / "b/0001.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    (tmp_path / "a/0002.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=f"unreadable image {tmp_path / 'a/0002.jpg'}.*2 of 8"):
        check_images(cat)
    checked = check_images(cat, on_error="skip")
    kept = checked.catalog
    assert len(checked.skipped) == 2 and len(kept) == 6 and len(checked.sizes) == 6
    assert bad not in kept.paths
    assert kept.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert checked.summary().startswith(
        f"folder: data.on_bad_image=skip dropped 2 of 8 images as unreadable, first: "
        f"unreadable image {tmp_path / 'a/0002.jpg'}")


def test_truncated_images(tmp_path):
    cat = _catalog(tmp_path)
    png = tmp_path / "c/0001.png"
    png.write_bytes(png.read_bytes()[:-40])  # PNG checksums: verify() catches it
    with pytest.raises(DataError, match=f"unreadable image {png}"):
        check_images(cat)
    png.unlink()
    make_folder(tmp_path, classes=("c",), per_class=2, suffix=".png")
    jpg = write_image(tmp_path / "b/0000.jpg", size=(96, 96))
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])
    assert check_images(cat).skipped == []  # headers intact: verify() alone cannot tell
    with pytest.raises(DataError, match=f"unreadable image {jpg} .*truncated"):
        check_images(cat, decode=True)


def test_in_memory_and_bad_option(tmp_path):
    cat = Catalog("x", np.zeros(2, np.int64), np.array(["train"] * 2),
                  images=np.zeros((2, 4, 4, 1), np.uint8))
    checked = check_images(cat)
    assert checked.catalog is cat and checked.sizes is None and checked.skipped == []
    with pytest.raises(DataError, match=r"on_error must be"):
        check_images(cat, on_error="ignore")


def test_require_files(tmp_path):
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"]
    paths[1].write_bytes(b"x")
    with pytest.raises(DataError, match=f"ds: 2 of 3 listed images are missing, first: {paths[0]}"):
        require_files("ds", paths)
    require_files("ds", paths[1:2])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_over_the_pixel_limit_fail_before_decoding(tmp_path):
    cat = _catalog(tmp_path)
    big = write_png_header(tmp_path / "c/0001.png", (12000, 12000))
    with pytest.raises(DataError, match=f"folder: image {big} is 12000x12000 .*1 of 8 bad"):
        check_images(cat)
    write_png_header(big, (30000, 30000))
    with pytest.raises(DataError, match=f"folder: image {big} is over the pixel limit"):
        check_images(cat)
    assert len(check_images(cat, on_error="skip").catalog) == 7


def test_one_size_names_the_odd_image(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    require_one_size("ds", paths, np.array([[8, 8]] * 4))
    with pytest.raises(DataError, match=f"ds: image {paths[2]} is 16x12 but 3 of 4 are 8x8; "
                                        r".*data.image_size \(e.g. 8\)"):
        require_one_size("ds", paths, np.array([[8, 8], [8, 8], [16, 12], [8, 8]]))
