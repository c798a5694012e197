"""Image folders a run cannot batch or should not decode: refused in one line naming the file,
before the run directory exists (issue 30: mixed sizes, images over the pixel limit)."""

import pytest

from data.fixtures import write_png_header
from engine.test_crash_safety import cli, image_folder, one_line, png, train_folder

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def test_mixed_sizes_without_a_resize_are_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    root = image_folder(tmp_path / "images")
    odd = root / "c" / "9.png"
    png(odd, seed=9, size=16)
    code, _, err = train_folder(monkeypatch, capsys, tmp_path, root, "--set",
                                "data.image_size=null")
    assert code == 2 and one_line(err) and f"image {odd} is 16x16" in err, err
    assert "data.image_size" in err and not (tmp_path / "runs" / "f").exists()
    code, _, err = train_folder(monkeypatch, capsys, tmp_path, root)  # data.image_size=8
    assert code == 0, err


@pytest.mark.parametrize("size,message", [((12000, 12000), "is 12000x12000"),
                                          ((30000, 30000), "is over the pixel limit")])
def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch, capsys,
                                                                 size, message):
    root = image_folder(tmp_path / "images")
    big = write_png_header(root / "a" / "big.png", size)
    code, _, err = train_folder(monkeypatch, capsys, tmp_path, root)
    assert code == 2 and one_line(err) and f"image {big} {message}" in err, err
    assert not (tmp_path / "runs" / "f").exists()
    code, out, err = cli(monkeypatch, capsys, "datasets", "--describe", "folder", "--root",
                         str(root))
    assert code == 0 and str(big) in out and "Traceback" not in out + err


def test_skipped_unreadable_images_are_counted(tmp_path, monkeypatch, capsys):
    root = image_folder(tmp_path / "images", ("broken.png", b"\x89PNG not really"))
    code, out, err = train_folder(monkeypatch, capsys, tmp_path, root, "--set",
                                  "data.on_bad_image=skip")
    assert code == 0, err
    [line] = [x for x in out.splitlines() if "on_bad_image" in x]
    assert line.startswith("warning: folder: data.on_bad_image=skip dropped 1 of 34 images as "
                           f"unreadable, first: unreadable image {root / 'a' / 'broken.png'}")
