"""`build_data`: config -> catalog -> protocol splits -> datasets with their transforms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dmlkit.config import DataConfig
from dmlkit.data.catalog import Catalog
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.feature_dataset import FeatureDataset
from dmlkit.data.image_cache import ImageCache, cache_fits
from dmlkit.data.image_check import check_images, require_one_size
from dmlkit.data.registry import load_catalog
from dmlkit.data.splits import EvalSplit, Splits, make_splits
from dmlkit.data.transforms import (
    build_batch_transform,
    build_transform,
    first_resize,
    fixed_size,
)
from dmlkit.data.workers import available_cores, resolve_workers


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
    images: a teacher's input). ``warnings``: what the run should say before training (how
    many unreadable images ``data.on_bad_image=skip`` dropped).
    """

    splits: Splits
    train: ImageDataset | FeatureDataset
    train_streams: dict[str, ImageDataset]
    train_eval: ImageDataset
    val: EvalData | None
    test: EvalData
    in_channels: int
    image_size: int | None
    warnings: list[str] = field(default_factory=list)  # lines for the run's console

    def stream(self, name: str) -> ImageDataset | FeatureDataset:
        """The training set as the method stream ``name`` sees it (its own transform if any)."""
        return self.train_streams.get(name, self.train)


def _channels(catalog: Catalog) -> int:
    return int(catalog.images.shape[-1]) if catalog.images is not None else 3


def cache_size(transforms: list[Callable]) -> int | None:
    """The shorter side a pre-resized cache needs for ``transforms``: the largest target of
    their first resizes (None: none starts with a resize, the cache keeps decoded sizes).

    >>> cache_size([build_transform("sharing", True), build_transform("sharing", False)])
    256
    """
    sizes = [r.shorter_side for r in map(first_resize, transforms) if r is not None]
    return max(sizes, default=None)


def build_data(cfg: DataConfig, seed: int = 0, cache_folder: Path | None = None) -> DataBundle:
    """Load the dataset named in ``cfg`` and cut it by ``cfg.protocol``.

    With ``data.image_cache`` (true, or auto and `cache_fits`) an on-disk dataset's images are
    read from its `ImageCache` in ``cache_folder`` (``<run.cache_dir>/images``; None: decoded
    from the files), at ``data.image_cache_size`` (default: `cache_size` of the run's
    transforms). Image files are checked (`check_images`) unless a cache of all of them exists:
    it decoded every one; the unreadable ones dropped (``data.on_bad_image=skip``) are counted in
    ``warnings``. Unless every transform gives one size (`fixed_size`), images of different sizes
    are refused here, in one line naming a file (`require_one_size`), not when a batch cannot be
    stacked.
    """
    catalog = load_catalog(cfg.name, cfg.root, cfg.download, **cfg.options)
    channels = _channels(catalog)
    train_tf = build_transform(cfg.transform, True, cfg.image_size, channels, cfg.crop_ratio)
    eval_name = cfg.eval_transform or cfg.transform
    eval_tf = build_transform(eval_name, False, cfg.image_size, channels)
    stream_tfs = {stream: (name, build_transform(name, True, cfg.image_size, channels,
                                                 cfg.crop_ratio))
                  for stream, name in cfg.stream_transforms.items()}
    transforms = [train_tf, eval_tf, *(tf for _, tf in stream_tfs.values())]
    size = cfg.image_cache_size or cache_size(transforms)
    cached = catalog.paths is not None and cache_folder is not None and (
        cfg.image_cache is True or (cfg.image_cache == "auto" and cache_fits(
            len(catalog.paths), size, cache_folder)))
    cache, notes = None, []
    if cached:
        cache = ImageCache.find(cache_folder, catalog.name, catalog.paths, size, cfg.jpeg_draft)
    sizes = None if cache is None else cache.shapes[:, 1::-1]
    if catalog.paths is not None and cache is None:
        checked = check_images(catalog, on_error=cfg.on_bad_image)
        if checked.skipped:
            notes.append(checked.summary())
        catalog, sizes = checked.catalog, checked.sizes
    if sizes is not None and not all(map(fixed_size, transforms)):
        require_one_size(catalog.name, catalog.paths, sizes)
    if cached and cache is None:
        workers = resolve_workers(cfg.num_workers, True, available_cores())
        cache = ImageCache.open(cache_folder, catalog.name, catalog.paths, size,
                                cfg.jpeg_draft, workers)
    splits = make_splits(
        catalog, cfg.protocol, cfg.train_classes, cfg.all_images, cfg.val_fraction,
        cfg.max_per_class, seed, cfg.folds, cfg.fold,
    )
    train_batch_tf = eval_batch_tf = None
    if cfg.device_transforms:
        train_batch_tf = build_batch_transform(cfg.transform, True, cfg.image_size, channels)
        eval_batch_tf = build_batch_transform(eval_name, False, cfg.image_size, channels)

    def dataset(catalog: Catalog, transform: Callable, batch_transform) -> ImageDataset:
        return ImageDataset(catalog, transform, batch_transform, cfg.jpeg_draft, cache)

    def eval_set(catalog) -> ImageDataset:
        return dataset(catalog, eval_tf, eval_batch_tf)
    stream_sets = {
        stream: dataset(splits.train, tf,
                        build_batch_transform(name, True, cfg.image_size, channels)
                        if cfg.device_transforms else None)
        for stream, (name, tf) in stream_tfs.items()}

    def eval_data(split: EvalSplit) -> EvalData:
        ref = None if split.reference is None else eval_set(split.reference)
        return EvalData(eval_set(split.query), ref)

    return DataBundle(
        splits=splits,
        train=dataset(splits.train, train_tf, train_batch_tf),
        train_streams=stream_sets,
        train_eval=eval_set(splits.train),
        val=None if splits.val is None else eval_data(splits.val),
        test=eval_data(splits.test),
        in_channels=channels,
        image_size=cfg.image_size,
        warnings=notes,
    )
