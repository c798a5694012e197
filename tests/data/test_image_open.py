import pytest
from PIL import Image

from data.fixtures import write_image, write_png_header
from dmlkit.data.image_open import open_image
from dmlkit.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def size_of(path):
    with open_image(path) as im:
        return im.size


def test_an_image_opens(tmp_path):
    assert size_of(write_image(tmp_path / "a.png", size=(24, 16))) == (24, 16)


def test_over_the_pixel_limit_is_one_line_naming_the_file(tmp_path):
    warned = write_png_header(tmp_path / "big.png", (12000, 12000))  # PIL: a warning only
    bomb = write_png_header(tmp_path / "bomb.png", (30000, 30000))  # PIL: DecompressionBombError
    with pytest.raises(DataError, match=rf"image {warned} is 12000x12000 \(144,000,000 pixels\)"):
        size_of(warned)
    with pytest.raises(DataError, match=rf"image {bomb} is over the pixel limit") as e:
        size_of(bomb)
    assert "\n" not in str(e.value)


def test_the_limit_is_pils(tmp_path, monkeypatch):
    path = write_image(tmp_path / "a.png", size=(24, 16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 24 * 16 - 1)
    with pytest.raises(DataError, match="24x16"):
        size_of(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert size_of(write_png_header(tmp_path / "big.png", (12000, 12000))) == (12000, 12000)


def test_a_decoding_error_in_the_block_names_the_file(tmp_path):
    path = write_png_header(tmp_path / "short.png", (64, 64))  # 64 bytes of pixel data
    with pytest.raises(DataError, match=f"cannot decode image {path}"), open_image(path) as im:
        im.load()
