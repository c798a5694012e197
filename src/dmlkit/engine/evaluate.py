"""Evaluation of a model during and after training: embed the query (and reference) set on the
device, compute the metrics on rank 0, give every rank the result."""

from __future__ import annotations

import torch
from torch import nn

from dmlkit.base import process_group
from dmlkit.base.progress import bar, phase
from dmlkit.config import Config
from dmlkit.data.build import EvalData
from dmlkit.engine.precision import inference_view
from dmlkit.errors import TrainingError
from dmlkit.evaluation import evaluate
from dmlkit.evaluation.extract import extract_sharded, shard_size


def evaluation_device(device: torch.device) -> torch.device:
    """Where evaluation keeps the embeddings and ranks / clusters them: the training device
    when it is CUDA (the kNN's topk and the torch k-means run there), else the CPU (numpy
    selection, faiss k-means)."""
    return device if device.type == "cuda" else torch.device("cpu")


def evaluate_model(
    model: nn.Module, data: EvalData, cfg: Config, device: torch.device,
    describe: str | None = None,
) -> dict[str, float]:
    """Embed the query (and reference) set and compute every metric from one ranking.

    The forward runs as in training (`inference_view`: ``train.precision`` autocast,
    ``train.channels_last``), the embeddings stay on `evaluation_device`. Under
    torch.distributed each rank embeds a block of samples, rank 0 computes the metrics
    and every rank returns them. ``describe`` (e.g. "final evaluation") shows the evaluation on
    stderr: a bar over the embedded images, then the metric computation. Non-finite embeddings:
    TrainingError (the model diverged).
    """
    e, t = cfg.eval, cfg.train
    view = inference_view(model, t.precision, device, t.channels_last)
    out = evaluation_device(device)

    def batch(dataset) -> int:  # eval.batch_divisor: Guided DML's official len(dataset) // 30
        return max(1, len(dataset) // e.batch_divisor) if e.batch_divisor else e.batch_size

    sets = [data.query] if data.reference is None else [data.query, data.reference]
    show = describe is not None
    total = sum(shard_size(len(s)) for s in sets)
    with bar(f"{describe}: embedding", total, show) as advance:
        (q, ql), *ref = [extract_sharded(view, s, batch(s), device, cfg.data.num_workers,
                                         e.bn_train_mode, advance, out) for s in sets]
    r, rl = ref[0] if ref else (None, None)
    if not all(bool(torch.isfinite(x).all()) for x in (q, r) if x is not None):
        raise TrainingError("the model diverged: its embeddings are not finite (NaN or "
                            "infinite); lower optim.lr (train.skip_nonfinite skips bad steps "
                            "but cannot undo a diverged model)")
    metrics = ["precision_at_1", "recall_at_k", "r_precision", "map_at_r"]
    if e.nmi:
        metrics += ["nmi", "ami"]
    if e.classification:
        metrics.append("nn_classification")
    result = None
    if process_group.info().is_main:
        with phase(f"{describe}: metrics", show):
            result = evaluate(q, ql, r, rl, recall_ks=tuple(e.recall_ks), metrics=metrics,
                              distance=e.distance, normalize=e.normalize,
                              kmeans_seed=e.kmeans_seed,
                              kmeans_max_points_per_centroid=e.kmeans_max_points_per_centroid)
    return process_group.broadcast_object(result)
