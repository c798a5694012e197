"""The benchmark report: ``report.md`` (+ ``figures/*.png``) and a self-contained
``report.html``, both from ``results.json`` and the runs and test embeddings it points to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dmlkit import config as config_mod
from dmlkit.base.files import load_weights
from dmlkit.data.build import build_data
from dmlkit.protocol.final import EMBEDDINGS
from dmlkit.protocol.report.figures import (
    Figure,
    embedding_map,
    gallery_queries,
    learning_curves,
    retrieval_gallery,
)
from dmlkit.protocol.report.html import render_html
from dmlkit.protocol.report.markdown import render_markdown


def _raw_image(dataset, i: int) -> np.ndarray:
    """Test item ``i`` as H x W x C uint8."""
    img = dataset.raw(int(i))
    return img.permute(1, 2, 0).numpy() if hasattr(img, "permute") else np.asarray(img)


def benchmark_figures(results: dict[str, Any]) -> list[Figure]:
    """Learning curves (seed-0 fold runs), the t-SNE map and one gallery per method."""
    out = Path(results["benchmark"]["output"])
    spec = results["benchmark"]["report"]
    seed = results["benchmark"]["seed"]
    methods = results["methods"]
    runs = {m: [out / p for p in r["final"]["runs"]] for m, r in methods.items()}
    figures = [Figure("learning-curves", "Learning curves",
                      "Final seed-0 runs, one line per fold: validation MAP@R (the search and "
                      "early-stopping criterion) and training loss per epoch.",
                      learning_curves(runs))]
    embeddings = {}
    for m in methods:
        state = load_weights(out / m / EMBEDDINGS)
        embeddings[m] = (state["embeddings"], state["labels"].numpy())
    figures.append(Figure(
        "embedding-map", "Test embeddings (t-SNE)",
        f"Concatenated seed-0 test embeddings of each method, t-SNE (seed {seed}) of a seeded "
        f"subsample of {spec['map_points']} items, coloured by class.",
        embedding_map(embeddings, spec["map_points"], seed)))
    for m, (emb, labels) in embeddings.items():
        cfg = config_mod.load(str(runs[m][0] / "config.yaml"))
        test = build_data(cfg.data, cfg.train.seed).test.query
        queries = gallery_queries(len(emb), spec["gallery_queries"], seed)
        png = retrieval_gallery(emb, labels, lambda i, ds=test: _raw_image(ds, i), queries,
                                spec["gallery_k"], m)
        figures.append(Figure(
            f"gallery-{m}", f"Retrieval gallery: {m}",
            f"Seeded test queries and their {spec['gallery_k']} nearest test items by the "
            "concatenated embedding: green = same class (hit), red = other class (miss).",
            png))
    return figures


def write_report(folder: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.md``, ``figures/`` and ``report.html`` into ``folder``; returns the
    report paths."""
    figures = benchmark_figures(results)
    fig_dir = Path(folder) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for f in figures:
        (fig_dir / f"{f.name}.png").write_bytes(f.png)
    md, page = Path(folder) / "report.md", Path(folder) / "report.html"
    md.write_text(render_markdown(results, figures, "figures"))
    page.write_text(render_html(results, figures))
    return md, page
