"""`build_data`: config -> catalog -> protocol splits -> datasets with their transforms."""

from __future__ import annotations

from dataclasses import dataclass

from dmlkit.config import DataConfig
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.feature_dataset import FeatureDataset
from dmlkit.data.registry import load_catalog
from dmlkit.data.splits import EvalSplit, Splits, make_splits
from dmlkit.data.transforms import build_batch_transform, build_transform


@dataclass
class EvalData:
    """Datasets of one retrieval evaluation (reference None: compared to self)."""

    query: ImageDataset | FeatureDataset
    reference: ImageDataset | FeatureDataset | None


@dataclass
class DataBundle:
    """Everything a run reads: training set (train transform), and the evaluation sets.

    ``train_streams``: the training images under another transform, for the method streams
    named in ``data.stream_transforms`` (see `stream`). ``train_eval``: the training images
    under the eval transform. With ``model.freeze_backbone`` the engine replaces ``train``
    and the evaluation sets by `FeatureDataset` s of cached features (``train_eval`` stays
    images: a teacher's input).
    """

    splits: Splits
    train: ImageDataset | FeatureDataset
    train_streams: dict[str, ImageDataset]
    train_eval: ImageDataset
    val: EvalData | None
    test: EvalData
    in_channels: int
    image_size: int | None

    def stream(self, name: str) -> ImageDataset | FeatureDataset:
        """The training set as the method stream ``name`` sees it (its own transform if any)."""
        return self.train_streams.get(name, self.train)


def _channels(splits: Splits) -> int:
    cat = splits.train
    return int(cat.images.shape[-1]) if cat.images is not None else 3


def build_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Load the dataset named in ``cfg`` and cut it by ``cfg.protocol``."""
    catalog = load_catalog(cfg.name, cfg.root, cfg.download, **cfg.options)
    if catalog.paths is not None:
        from dmlkit.data.image_check import check_images

        catalog, _ = check_images(catalog, on_error=cfg.on_bad_image)
    splits = make_splits(
        catalog, cfg.protocol, cfg.train_classes, cfg.all_images, cfg.val_fraction,
        cfg.max_per_class, seed, cfg.folds, cfg.fold,
    )
    channels = _channels(splits)
    train_tf = build_transform(cfg.transform, True, cfg.image_size, channels)
    eval_name = cfg.eval_transform or cfg.transform
    eval_tf = build_transform(eval_name, False, cfg.image_size, channels)
    train_batch_tf = eval_batch_tf = None
    if cfg.device_transforms:
        train_batch_tf = build_batch_transform(cfg.transform, True, cfg.image_size, channels)
        eval_batch_tf = build_batch_transform(eval_name, False, cfg.image_size, channels)

    def eval_set(catalog) -> ImageDataset:
        return ImageDataset(catalog, eval_tf, eval_batch_tf)
    stream_sets = {
        stream: ImageDataset(
            splits.train, build_transform(name, True, cfg.image_size, channels),
            build_batch_transform(name, True, cfg.image_size, channels)
            if cfg.device_transforms else None)
        for stream, name in cfg.stream_transforms.items()}

    def eval_data(split: EvalSplit) -> EvalData:
        ref = None if split.reference is None else eval_set(split.reference)
        return EvalData(eval_set(split.query), ref)

    return DataBundle(
        splits=splits,
        train=ImageDataset(splits.train, train_tf, train_batch_tf),
        train_streams=stream_sets,
        train_eval=eval_set(splits.train),
        val=None if splits.val is None else eval_data(splits.val),
        test=eval_data(splits.test),
        in_channels=channels,
        image_size=cfg.image_size,
    )
