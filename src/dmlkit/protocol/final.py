"""Test evaluation of the K fold models of one configuration (MLRC's two readings).

- **separated**: each fold model embeds the test set on its own and is evaluated alone; a
  seed's value is the mean over its K fold models.
- **concatenated**: the K embeddings of one seed are L2-normalized and concatenated,
  ``z = [f_1/||f_1||, ..., f_K/||f_K||]`` (K x d dims), and evaluated as one embedding.

Either way the report's mean and 95% CI are over seeds (`dmlkit.protocol.statistics`): the
fold models of one seed are not independent samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dmlkit.config import Config, EvalConfig
from dmlkit.data.build import DataBundle
from dmlkit.engine.feature_cache import use_feature_cache, weights_digest
from dmlkit.engine.precision import inference_view
from dmlkit.engine.seed import resolve_device
from dmlkit.engine.train import build_components
from dmlkit.evaluation import concatenate_normalized, evaluate
from dmlkit.evaluation.extract import extract_embeddings
from dmlkit.models.embedding_model import EmbeddingModel
from dmlkit.models.heads import NormalizedFeatures
from dmlkit.serve.load import load_run

EMBEDDINGS = "test-embeddings-seed0.safetensors"  # per method: concatenated seed-0 test queries


def eval_options(e: EvalConfig) -> dict[str, Any]:
    """`evaluate` options of a run's eval config (the metrics the trainer reports)."""
    metrics = ["precision_at_1", "recall_at_k", "r_precision", "map_at_r"]
    return {"recall_ks": tuple(e.recall_ks), "distance": e.distance, "normalize": e.normalize,
            "metrics": metrics + (["nmi", "ami"] if e.nmi else []),
            "kmeans_seed": e.kmeans_seed,
            "kmeans_max_points_per_centroid": e.kmeans_max_points_per_centroid}


def ensemble_metrics(
    queries: Sequence[torch.Tensor],
    query_labels: Any,
    references: Sequence[torch.Tensor] | None = None,
    reference_labels: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """{"separated": [metrics of model i], "concatenated": metrics of the normalized concat}.

    ``queries[i]`` (and ``references[i]``) are model i's embeddings of the same items;
    ``options`` go to `evaluate`.
    """
    refs = list(references) if references is not None else [None] * len(queries)
    separated = [evaluate(q, query_labels, r, reference_labels, **options)
                 for q, r in zip(queries, refs, strict=True)]
    concat_r = None if references is None else concatenate_normalized(references)
    concatenated = evaluate(concatenate_normalized(queries), query_labels, concat_r,
                            reference_labels, **options)
    return {"separated": separated, "concatenated": concatenated}


def best_weights(run_dir: Path) -> str:
    """The validation-selected weights when the run validated, else its final weights."""
    return "best.safetensors" if (Path(run_dir) / "best.safetensors").is_file() \
        else "model.safetensors"


def _fold_ensemble(
    cfg: Config, data: DataBundle, models: Sequence[EmbeddingModel | NormalizedFeatures]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`ensemble_metrics` of fold ``models`` on ``data``'s test split, and the concatenated
    test query embeddings and labels (for the report's figures)."""
    test = data.test
    device = resolve_device(cfg.train.device)
    e = cfg.eval

    def embed(model, dataset):  # the training forward's precision and memory format
        view = inference_view(model.to(device), cfg.train.precision, device,
                              cfg.train.channels_last)
        return extract_embeddings(view, dataset, e.batch_size, device, cfg.data.num_workers,
                                  e.bn_train_mode)

    queries, references = [], []
    for model in models:
        q, q_labels = embed(model, test.query)
        queries.append(q)
        if test.reference is not None:
            r, r_labels = embed(model, test.reference)
            references.append(r)
    result = ensemble_metrics(
        queries, q_labels, references or None,
        r_labels if test.reference is not None else None, **eval_options(e),
    )
    return result, {"embeddings": concatenate_normalized(queries), "labels": q_labels}


def evaluate_fold_models(run_dirs: Sequence[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`ensemble_metrics` of the runs' (best) models on the test split of the first run.

    Also returns the concatenated test query embeddings and labels (for the report's figures).
    """
    loaded = [load_run(p, best_weights(p)) for p in run_dirs]
    cfg, data, models = loaded[0].cfg, loaded[0].data, [run.model for run in loaded]
    if cfg.model.freeze_backbone and len({weights_digest(m.backbone) for m in models}) == 1:
        # one frozen backbone: the heads embed its cached test features (no image is read)
        data = use_feature_cache(cfg, data, models[0], resolve_device(cfg.train.device))
        for model in models[1:]:
            model.freeze_backbone(cached=True)
    return _fold_ensemble(cfg, data, models)


def evaluate_anchors(cfgs: Sequence[Config]) -> dict[str, Any]:
    """The baselines a result is read against, on the test split of the first config:
    ``untrained``, the `ensemble_metrics` of the fold models of ``cfgs`` at initialization
    (each built exactly as `dmlkit.engine.train.train` builds it before the first step, with
    its own seed: `build_components`); with ``model.freeze_backbone`` also
    ``pretrained_features``, the metrics of the backbone's L2-normalized features themselves
    (the zero-training anchor), read from the feature cache."""
    built = [build_components(cfg) for cfg in cfgs]
    data = built[0][0]
    out = {"untrained": _fold_ensemble(cfgs[0], data,
                                       [model.eval() for _, _, model in built])[0]}
    if cfgs[0].model.freeze_backbone:
        out["pretrained_features"] = _fold_ensemble(
            cfgs[0], data, [NormalizedFeatures()])[0]["concatenated"]
    return out
