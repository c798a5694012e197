"""A self-contained HTML page of search results: thumbnails embedded as base64 PNG data URIs."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from dmlkit.serve.index import Hit

_STYLE = """
body { font-family: sans-serif; margin: 1em; }
.query { display: flex; gap: 8px; align-items: flex-start; margin-bottom: 1.5em; }
figure { margin: 0; width: 136px; font-size: 11px; word-break: break-all; }
figure.q { border-right: 3px solid #444; padding-right: 8px; }
img { width: 128px; height: 128px; object-fit: contain; background: #eee;
      image-rendering: pixelated; }
.missing { display: flex; width: 128px; height: 128px; background: #eee; align-items: center;
           justify-content: center; color: #a00; }
"""


def thumbnail_uri(path: Path, size: int = 128) -> str | None:
    """``data:image/png;base64,...`` of a thumbnail of ``path``, or None if it cannot be read."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
    except (OSError, ValueError):
        return None
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(path: Path, caption: str, cls: str = "") -> str:
    uri = thumbnail_uri(path)
    img = (f'<img src="{uri}" alt="{html.escape(path.name)}">' if uri
           else '<div class="missing">unreadable</div>')
    return f'<figure class="{cls}">{img}<figcaption>{html.escape(caption)}</figcaption></figure>'


def search_page(
    queries: list[Path], hits: list[list[Hit]], gallery_root: Path, score_name: str,
    title: str = "dmlkit search",
) -> str:
    """The HTML of one row per query: the query image, then its ranked neighbours."""
    rows = []
    for query, row in zip(queries, hits, strict=True):
        figures = [_figure(query, f"query: {query.name}", "q")]
        for h in row:
            label = f" [{h.label}]" if h.label is not None else ""
            caption = f"#{h.rank} {h.path}{label} {score_name} {h.score:.4f}"
            figures.append(_figure(gallery_root / h.path, caption))
        rows.append(f'<div class="query">{"".join(figures)}</div>')
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
            + "\n".join(rows) + "\n</body></html>\n")

