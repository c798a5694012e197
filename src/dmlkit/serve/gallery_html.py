"""A self-contained HTML page of search results: thumbnails embedded as base64 PNG data URIs."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from dmlkit.data.image_open import open_image
from dmlkit.errors import DataError
from dmlkit.serve.index import Hit

_STYLE = """
body { font-family: sans-serif; margin: 1em; }
.query { display: grid; grid-template-columns: repeat(auto-fill, 136px); gap: 12px 8px;
         margin-bottom: 1.5em; padding-bottom: 1em; border-bottom: 1px solid #ccc; }
figure { margin: 0; width: 136px; font-size: 11px; }
figure.q img { outline: 3px solid #444; }
figure.same img { outline: 3px solid #2a2; }
figure.other img { outline: 3px solid #c22; }
figcaption span { white-space: nowrap; }
figcaption .path { display: block; white-space: normal; word-break: break-all; color: #555; }
img { width: 128px; height: 128px; object-fit: contain; background: #eee;
      image-rendering: pixelated; }
.missing { display: flex; width: 128px; height: 128px; background: #eee; align-items: center;
           justify-content: center; color: #a00; }
"""


def thumbnail_uri(path: Path, size: int = 128) -> str | None:
    """``data:image/png;base64,...`` of a thumbnail of ``path``, or None if it cannot be read."""
    try:
        with open_image(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
    except DataError:  # unreadable, or over the pixel limit
        return None
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(path: Path, caption: list[tuple[str, str]], cls: str = "") -> str:
    """A thumbnail with a caption of ``(css class, text)`` pieces: numbers and labels never
    break inside (``white-space: nowrap``), paths break anywhere."""
    uri = thumbnail_uri(path)
    img = (f'<img src="{uri}" alt="{html.escape(path.name)}">' if uri
           else '<div class="missing">unreadable</div>')
    text = " ".join(f'<span class="{c}">{html.escape(t)}</span>' for c, t in caption)
    return f'<figure class="{cls}">{img}<figcaption>{text}</figcaption></figure>'


def search_page(
    queries: list[Path], hits: list[list[Hit]], gallery_root: Path, score_name: str,
    title: str = "dmlkit search", query_labels: list[str | None] | None = None,
) -> str:
    """The HTML of one block per query: the query image (with its label when known), then
    its ranked neighbours in a grid that wraps at the window's width; with a query label,
    hits of the same label are framed green, others red."""
    rows = []
    labels = query_labels or [None] * len(queries)
    for query, row, label in zip(queries, hits, labels, strict=True):
        head = [("", "query"), *([("", f"[{label}]")] if label is not None else []),
                ("path", query.name)]
        figures = [_figure(query, head, "q")]
        for h in row:
            cls = "" if label is None or h.label is None else (
                "same" if h.label == label else "other")
            caption = [("", f"#{h.rank}"), *([("", f"[{h.label}]")] if h.label is not None
                                              else []),
                       ("", f"{score_name} {h.score:.4f}"), ("path", h.path)]
            figures.append(_figure(gallery_root / h.path, caption, cls))
        rows.append(f'<div class="query">{"".join(figures)}</div>')
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
            + "\n".join(rows) + "\n</body></html>\n")
