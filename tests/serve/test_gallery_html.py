import base64
import io
import re

from PIL import Image

from dmlkit.serve.gallery_html import search_page, thumbnail_uri
from dmlkit.serve.index import Hit


def test_page_is_self_contained_with_decodable_thumbnails(tmp_path):
    Image.new("RGB", (300, 200), (10, 20, 30)).save(tmp_path / "q.png")
    Image.new("L", (8, 8), 200).save(tmp_path / "g<1>.png")
    hits = [[Hit(1, 0, "g<1>.png", "a&b", 0.0), Hit(2, 1, "gone.png", None, 1.5)]]
    page = search_page([tmp_path / "q.png"], hits, tmp_path, "distance")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    sizes = [Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).size for s in sources]
    assert sizes == [(128, 85), (8, 8)]  # thumbnails keep the aspect ratio, never upscale
    assert ('<span class="">[a&amp;b]</span> <span class="">distance 0.0000</span> '
            '<span class="path">g&lt;1&gt;.png</span>') in page and "<1>" not in page
    assert ('<span class="">#2</span> <span class="">distance 1.5000</span> '
            '<span class="path">gone.png</span>') in page and "unreadable" in page
    assert "http" not in page


def test_hits_wrap_in_a_grid_numbers_never_break_and_the_query_label_shows(tmp_path):
    Image.new("L", (8, 8), 100).save(tmp_path / "q.png")
    hits = [[Hit(r, r, f"3/{r}.png", "3" if r % 2 else "5", 0.33 * r) for r in range(1, 13)]]
    page = search_page([tmp_path / "q.png"], hits, tmp_path, "distance", query_labels=["3"])
    assert "grid-template-columns: repeat(auto-fill" in page
    assert "figcaption span { white-space: nowrap; }" in page
    assert '<span class="">query</span> <span class="">[3]</span>' in page
    assert page.count('<figure class="same">') == 6 and page.count('<figure class="other">') == 6


def test_thumbnail_of_a_broken_file_is_none(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    assert thumbnail_uri(tmp_path / "x.png") is None
