"""The benchmark report's figures, as PNG bytes: learning curves, a t-SNE map of test
embeddings, and a retrieval gallery (query, then its top-k with hits and misses coloured)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from dmlkit.evaluation.knn import knn

HIT, MISS, QUERY = "#1a9850", "#d73027", "#222222"
MAP_LEGEND = 20  # t-SNE maps name their classes in a legend up to this many


@dataclass(frozen=True)
class Figure:
    """One report figure: file stem, heading, caption and the PNG itself."""

    name: str
    title: str
    caption: str
    png: bytes


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # legends outside the axes
    plt.close(fig)
    return buf.getvalue()


def _curve(run_dir: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of ``metrics.csv`` where ``column`` was logged."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return np.empty(0), np.empty(0)
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get(column) not in (None, "")]
    return (np.array([float(r["epoch"]) for r in rows]),
            np.array([float(r[column]) for r in rows]))


def learning_curves(runs: dict[str, list[Path]]) -> bytes:
    """Validation MAP@R and training loss per epoch; one colour per method, a line per fold."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = plt.get_cmap("tab10")
    for i, (method, dirs) in enumerate(runs.items()):
        for j, d in enumerate(dirs):
            for ax, column in zip(axes, ("val_map_at_r", "train_loss"), strict=True):
                x, y = _curve(d, column)
                ax.plot(x, y, marker=".", color=colours(i % 10), alpha=0.8,
                        label=method if j == 0 else None)
    for ax, title in zip(axes, ("validation MAP@R", "training loss"), strict=True):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _png(fig)


def embedding_map(
    embeddings: dict[str, tuple[torch.Tensor, np.ndarray]], points: int, seed: int = 0
) -> bytes:
    """t-SNE (seeded, PCA init) of a seeded subsample of each method's test embeddings; one
    colour per class in every panel, named in a legend beside them (up to `MAP_LEGEND`
    classes)."""
    from sklearn.manifold import TSNE

    classes = np.unique(np.concatenate([np.asarray(lab) for _, lab in embeddings.values()]))
    palette = plt.get_cmap("tab20")
    colours = {c: palette(i % 20) for i, c in enumerate(classes)}  # the same in every panel
    n = len(embeddings)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (method, (emb, labels)) in zip(axes.flat, embeddings.items(), strict=False):
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(emb), min(points, len(emb)), replace=False))
        x = emb[idx].numpy()
        perplexity = min(30.0, (len(idx) - 1) / 3)
        xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
        for c in np.unique(labels[idx]):
            at = labels[idx] == c
            ax.scatter(xy[at, 0], xy[at, 1], color=colours[c], s=6, label=str(c))
        ax.set_title(method, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    if len(classes) <= MAP_LEGEND:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[c]) for c in classes]
        fig.legend(handles, [str(c) for c in classes], title="class", loc="upper left",
                   bbox_to_anchor=(1.0, 0.95), fontsize=7, title_fontsize=8, frameon=False)
    return _png(fig)


def gallery_queries(n_items: int, count: int, seed: int = 0) -> np.ndarray:
    """Seeded choice of the query items shown in every method's gallery."""
    return np.sort(np.random.default_rng(seed).choice(n_items, min(count, n_items),
                                                      replace=False))


def retrieval_gallery(
    embeddings: torch.Tensor, labels: np.ndarray, image: Callable[[int], np.ndarray],
    queries: np.ndarray, k: int, title: str,
) -> bytes:
    """Rows: a query (dark frame) and its k nearest test items (green: same class, red: not).

    ``image(i)`` is test item i as an H x W x C uint8 array; neighbours exclude the query.
    """
    top = knn(embeddings[queries], embeddings, k, exclude=queries).numpy()
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.3 * (k + 1), 1.4 * len(queries)),
                             squeeze=False)
    for r, q in enumerate(queries):
        cells = [(q, QUERY, f"query ({labels[q]})")]
        cells += [(j, HIT if labels[j] == labels[q] else MISS, f"#{i + 1} ({labels[j]})")
                  for i, j in enumerate(top[r])]
        for ax, (item, colour, caption) in zip(axes[r], cells, strict=True):
            img = image(item)
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(4)
            ax.set_title(caption, fontsize=7, color=colour)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)
