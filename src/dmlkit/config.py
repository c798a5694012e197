"""Typed run configuration: validated models, YAML in/out, presets and ``--set`` overrides.

A config key is a constructor argument somewhere: no global option object reaches into classes.
Unknown keys and wrong types are rejected with a one-line ConfigError naming the key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dmlkit import safe_yaml
from dmlkit.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Which dataset, which split protocol, which transforms."""

    name: str = "fashion-mnist"
    root: str | None = None
    download: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    protocol: Literal["zero_shot", "closed_set", "official"] = "zero_shot"
    train_classes: list[int] | None = None
    all_images: bool = False
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    folds: int = Field(
        0, ge=0, description="class-disjoint cross-validation folds of the train classes (0: none)"
    )
    fold: int | None = Field(None, ge=0, description="the fold that validates (with folds)")
    max_per_class: int | None = Field(
        None, ge=2, description="at most this many training images per class and official "
        "split (seeded); test images are never capped")
    transform: str = "small"
    eval_transform: str | None = Field(
        None, description="a different eval transform preset (default: as training)"
    )
    stream_transforms: dict[str, str] = Field(
        default_factory=dict,
        description="training transform preset of a named stream, e.g. {shared: sharing_noflip} "
        "(streams not named: transform)",
    )
    image_size: int | None = Field(None, ge=8)
    crop_ratio: tuple[float, float] | None = Field(
        None, description="aspect-ratio range of the random resized crop (mlrc, mdr, sharing "
        "presets); null: torchvision's (3/4, 4/3); MDR's official code: [0.75, 1.33]"
    )
    on_bad_image: Literal["fail", "skip"] = "fail"
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes; auto: the cores this process may use "
        "(its share under torchrun) less one for on-disk datasets, 0 for in-memory ones "
        "(docs/input-pipeline.md)"
    )
    augment_seeds: Literal["position", "loader"] = Field(
        "position", description="random augmentation of the per-sample path: position: each "
        "sample's draws seeded by (train.seed, stream, epoch, batch, position), the same for any "
        "num_workers, with persistent workers; loader: torch's per-epoch worker seeds from the "
        "global RNG, workers restarted every epoch (configs before version 3)"
    )
    jpeg_draft: bool = Field(
        True, description="decode JPEGs at 1/2, 1/4 or 1/8 scale (libjpeg) when the transform's "
        "first resize needs no more pixels"
    )
    image_cache: bool | Literal["auto"] = Field(
        "auto", description="on-disk datasets: decode every image once into a memory-mapped "
        "uint8 file under <run.cache_dir>/images, pre-resized to image_cache_size; auto: when "
        "the transforms resize and the cache fits in half the free space of its disk "
        "(docs/input-pipeline.md)"
    )
    image_cache_size: int | None = Field(
        None, ge=8, description="shorter side of the cached images (default: what the "
        "transforms' first resize needs; none: the decoded size)"
    )
    device_transforms: bool = Field(
        True, description="in-memory datasets (MNIST family, CIFAR, digits) with the small, "
        "small_aug, cifar or raw255 preset: resize once, augment and normalize whole batches on "
        "the training device (no DataLoader; num_workers unused)"
    )


class HeadConfig(Section):
    """One embedding head: Linear(features -> dim) and its output mode."""

    dim: int = Field(128, ge=1)
    output: Literal["l2", "raw", "mean_distance"] = "l2"
    hidden: int | None = Field(
        None, ge=1, description="MLP head: Linear(features -> hidden), ReLU, then the Linear "
        "(None: one Linear)"
    )


class ModelConfig(Section):
    """Backbone + embedding head(s)."""

    backbone: str = "small_cnn"
    pretrained: bool = False
    weights: str | None = Field(
        None, description="torchvision weights enum name, e.g. IMAGENET1K_V1 (default: DEFAULT)"
    )
    freeze_bn: bool = False
    init: Literal["torchvision", "pytorch_default"] = Field(
        "torchvision",
        description="backbone init: as its constructor (torchvision: kaiming fan-out convs) or "
        "every layer's PyTorch default (Guided DML's official student)",
    )
    head: HeadConfig = Field(default_factory=HeadConfig)
    freeze_backbone: bool = Field(
        False, description="train the heads only, on backbone features computed once with the "
        "eval transform and cached under <run.cache_dir>/features (no augmentation; "
        "docs/frozen-features.md)"
    )


class LossConfig(Section):
    """A pytorch-metric-learning loss and miner, by class name, with their parameters."""

    name: str = "TripletMarginLoss"
    params: dict[str, Any] = Field(default_factory=lambda: {"margin": 0.1})
    distance: str | None = None
    distance_params: dict[str, Any] = Field(default_factory=dict)
    reducer: str | None = Field(None, description="PML reducer class name (default: the loss's)")
    miner: str | None = "TripletMarginMiner"
    miner_params: dict[str, Any] = Field(
        default_factory=lambda: {"margin": 0.1, "type_of_triplets": "semihard"}
    )
    lr: float | None = Field(None, gt=0, description="lr of loss parameters (default: optim.lr)")


class MDRConfig(Section):
    """Multi-level Distance Regularization (Kim & Park, AAAI 2021) on one embedding head."""

    head: str = Field(
        "embedding", description="the regularized head: embedding (the retrieval head, also the "
        "Guided student) or shared (Sharing Matters' shared head)",
    )
    weight: float = Field(0.6, ge=0, description="lambda")
    nu: float = Field(0.01, ge=0)
    levels: list[float] = Field(default_factory=lambda: [-3.0, 0.0, 3.0])
    momentum: float = Field(0.9, ge=0, lt=1)
    include_diagonal: bool = True


class SharingConfig(Section):
    """Sharing Matters (Milbich, Roth et al., TPAMI 2020)."""

    shared_dim: int = Field(128, ge=1)
    num_surrogate_labels: int = Field(196, ge=3)
    shared_loss: LossConfig = Field(
        default_factory=lambda: LossConfig(
            name="MarginLoss", params={"margin": 0.2, "beta": 1.2, "learn_beta": True},
            miner=None, miner_params={},
        )
    )
    decorrelation_weight: float = Field(500.0, ge=0, description="disw")
    regressor_hidden: int = Field(512, ge=1)
    regressor_lr: float | None = Field(
        None, gt=0, description="regressor lr (default: optim.lr, as the official code)"
    )
    regressor_weight_decay: float = Field(1e-6, ge=0)
    combined_step: bool = False
    retrieval: Literal["class", "concat"] = "class"
    cutoff: float = 0.5


class GuidedConfig(Section):
    """Guided DML (Gonzalez-Zapata et al., 2022): master -> targets -> student."""

    teacher: Literal["master", "run"] = "master"
    teacher_run: str | None = None
    master_epochs: int = Field(10, ge=0)
    master_lr: float = Field(1e-3, gt=0)
    master_margin: float = 3.0
    master_beta: float = Field(0.005, ge=0, le=1)
    master_batch_size: int = Field(64, ge=2)
    master_raw_pixels: bool = Field(
        True, description="feed the master raw 0-255 pixels, as the official code"
    )
    master_image_size: int | None = Field(
        None, ge=8, description="side of the master's raw-pixel input (default: data.image_size; "
        "e.g. 32 for CIFAR under a student at 224 px on cached features)"
    )
    weight: float = Field(1.0, ge=0, description="weight of the distillation term")
    student_val_fraction: float = Field(
        0.0, ge=0, lt=1,
        description="random fraction of the training images held out of the student's training; "
        "their distillation loss is logged each epoch as val_loss (official: 0.1)",
    )
    student_drop_last: bool = Field(
        True, description="drop the last partial student batch (official: keep it, false)"
    )


class PartsConfig(Section):
    """The parts added to the base metric loss; a part is on when its section is present."""

    mdr: MDRConfig | None = None
    sharing: SharingConfig | None = None
    guided: GuidedConfig | None = None


class MethodConfig(Section):
    """What a training step computes: ``loss_weight * loss`` on the retrieval head plus the
    terms of each part (docs/methods.md)."""

    loss: LossConfig = Field(default_factory=LossConfig)
    loss_weight: float = Field(
        1.0, ge=0,
        description="weight of the base metric loss (0: none, e.g. a pure Guided student)",
    )
    parts: PartsConfig = Field(default_factory=PartsConfig)

    @property
    def label(self) -> str:
        """Short name: the parts joined by ``+`` (``metric`` without parts)."""
        on = [k for k, v in self.parts if v is not None]
        return "+".join(on) or "metric"


CONFIG_VERSION = 3
SECTIONS = ("data", "model", "method", "optim", "train", "eval", "run")
# what the input pipeline did before version 3: keys absent from an older run's config.yaml
LEGACY_INPUT = {"num_workers": 0, "augment_seeds": "loader", "jpeg_draft": False,
                "image_cache": False}
LEGACY_PARTS = ("mdr", "sharing", "guided")


def migrate_v1_method(method: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (``name: metric|mdr|sharing|guided`` + one section per method) -> parts.

    The named method's section becomes its part; the other sections were unused and are dropped.
    Guided's ``metric_weight`` becomes ``loss_weight`` (0 by default: the pure student). Keys
    already in the version-2 form (``parts``, ``loss_weight``) win over migrated ones.
    """
    if not any(k in method for k in ("name", *LEGACY_PARTS)):
        return method
    out = {k: v for k, v in method.items() if k not in ("name", *LEGACY_PARTS)}
    name = method.get("name", "metric")
    if name not in ("metric", *LEGACY_PARTS):
        raise ConfigError(f"config: 'method.name': one of metric, mdr, sharing, guided "
                          f"(got {name!r})")
    parts: dict[str, Any] = {}
    if name != "metric":
        section = dict(method.get(name) or {})
        if name == "guided":
            out.setdefault("loss_weight", section.pop("metric_weight", 0.0))
        parts[name] = section
    out["parts"] = _deep_merge(parts, out.get("parts") or {})
    return out


def migrate(data: dict[str, Any], whole: bool | None = None) -> dict[str, Any]:
    """A raw config dict of any version -> the current version (``version`` absent: 1).

    A run's config.yaml from before version 3 (``version: 2``, or version 1 written whole:
    every section present) keeps its input pipeline: the `LEGACY_INPUT` values of the keys it
    lacks. Version-1 presets and hand-written configs (some sections) take the new defaults.
    ``whole``: whether a version-1 dict was written whole by a run (default: every section is
    present; `load` decides it before ``--set`` overrides add sections to a preset).
    """
    version = data.get("version", 1)
    if not isinstance(version, int) or version > CONFIG_VERSION or version < 1:
        raise ConfigError(f"config: 'version' {version!r} is not one this dmlkit reads "
                          f"(1..{CONFIG_VERSION}): a newer dmlkit wrote it")
    data = dict(data)
    if version == 1 and isinstance(data.get("method"), dict):
        data["method"] = migrate_v1_method(data["method"])
    if whole is None:
        whole = all(k in data for k in SECTIONS)
    if version == 2 or (version == 1 and whole):
        data["data"] = {**LEGACY_INPUT, **(data.get("data") or {})}
    data["version"] = CONFIG_VERSION
    return data


class OptimConfig(Section):
    """Optimizer and learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0)
    schedule: Literal["none", "multistep", "cosine", "plateau"] = "none"
    milestones: list[float] = Field(
        default_factory=lambda: [0.4, 0.6, 0.8], description="fractions of training"
    )
    gamma: float = Field(0.2, gt=0)
    plateau_patience: int = Field(3, ge=0)
    grad_clip_value: float | None = Field(None, gt=0)


class TrainConfig(Section):
    """Loop settings."""

    epochs: int = Field(3, ge=0)
    batch_size: int = Field(64, ge=2)
    m_per_class: int = Field(4, ge=1)
    small_classes: Literal["replace", "all"] = Field(
        "replace", description="a class with fewer than m_per_class images: replace: m images "
        "drawn with replacement, single-image classes never drawn, batch_size a multiple of "
        "m_per_class; all: all its images, single-image classes included, classes added until "
        "batch_size images and the last one cut (MDR's official sampler)"
    )
    batches_per_epoch: int | None = Field(None, ge=1)
    eval_every: int = Field(1, ge=0, description="validate every N epochs (0: never)")
    seed: int = Field(0, ge=0, lt=2**32, description="0 <= seed < 2**32 (NumPy's range)")
    device: str = "auto"
    deterministic: bool | None = Field(
        None, description="deterministic kernels (unset: on for the CPU, off for CUDA); an op "
        "without one warns; on CUDA also cuDNN's deterministic convolutions and "
        "CUBLAS_WORKSPACE_CONFIG (slower; docs/gpu.md)"
    )
    keep_checkpoints: int = Field(2, ge=1)
    checkpoint_every: int = Field(
        200, ge=0, description="also checkpoint every N iterations mid-epoch (0: epoch ends only)"
    )
    skip_nonfinite: bool = Field(
        False, description="skip (and count) optimizer steps with a non-finite loss or gradient"
    )
    patience: int | None = Field(None, ge=1, description="early stop on validation MAP@R")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast dtype of the model's forward (losses stay float32)"
    )
    channels_last: bool = Field(False, description="channels_last memory format (CNNs on GPU)")
    sync_bn: bool = Field(
        True, description="SyncBatchNorm across ranks on CUDA (BatchNorm over the global batch)"
    )
    log_every: int = Field(
        20, ge=1, description="read the running loss from the device for the progress bar "
        "every N iterations (each read waits for the device)"
    )


class EvalConfig(Section):
    """Evaluation settings (see docs/metrics.md)."""

    recall_ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    distance: Literal["euclidean", "cosine", "dot"] = "euclidean"
    normalize: bool = True
    batch_size: int = Field(512, ge=1)
    batch_divisor: int | None = Field(
        None, ge=1,
        description="extract in batches of len(dataset) // N instead of batch_size "
        "(Guided DML's official code: 30; matters with bn_train_mode)",
    )
    nmi: bool = True
    kmeans_seed: int = Field(0, description="seed of the NMI/AMI k-means (PML's default: 1234)")
    kmeans_max_points_per_centroid: int | None = Field(
        256, ge=1, description="k-means trains on at most this many random points per cluster "
        "(faiss's default, as PML >= 1.0); null: on every point (PML before 1.0, Sharing "
        "Matters' official code)"
    )
    classification: bool = Field(
        False, description="add 1-NN classification accuracy and macro precision/recall/F1"
    )
    test: bool = Field(
        True, description="test the model at the end (and, with evaluate_untrained, at "
        "initialization); benchmark runs skip it: the protocol tests the selected models"
    )
    evaluate_untrained: bool = Field(
        True, description="also test the model at initialization (and, with a frozen "
        "backbone, its features themselves: pretrained_features)"
    )
    bn_train_mode: bool = Field(
        False, description="extract with BatchNorm in training mode (Guided DML's official code)"
    )


class RunConfig(Section):
    """Where the run directory goes, and where else the run is logged (docs/tracking.md)."""

    name: str | None = None
    root: str = "runs"
    cache_dir: str | None = Field(
        None, description="caches shared by runs, e.g. frozen-backbone features "
        "(default: <root>/cache)"
    )
    loggers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="experiment trackers that also receive the run"
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default: sqlite:///<root>/mlflow.db)"
    )
    experiment: str = Field("dmlkit", description="MLflow experiment / W&B project")
    group: str | None = Field(
        None, description="MLflow parent run / W&B group (a benchmark: <name>/<method>)"
    )

    @property
    def cache_path(self) -> Path:
        """``cache_dir``, or ``<root>/cache``."""
        return Path(self.cache_dir) if self.cache_dir else Path(self.root) / "cache"


class Config(Section):
    """A full, resolved run configuration (``version``: its form; older forms are migrated)."""

    version: int = CONFIG_VERSION
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self, exclude: tuple[str, ...] = ()) -> str:
        """sha256 of the canonical JSON form (identifies a configuration), without the
        sections named in ``exclude``."""
        data = {k: v for k, v in self.to_dict().items() if k not in exclude}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"a.b.c": value}``; parameter dicts stay whole values.

    >>> dotted({"train": {"epochs": 2}, "method": {"loss": {"params": {"margin": 0.1}}}})
    {'train.epochs': 2, 'method.loss.params': {'margin': 0.1}}
    """
    out: dict[str, Any] = {}
    for k, v in tree.items():
        whole = k.endswith("params") or k == "options"
        if isinstance(v, dict) and v and not whole:
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean 'PREFIXx'?)`` for the closest of ``choices`` to a mistyped ``word``,
    else ``""``.

    >>> did_you_mean("epoch", ["epochs", "seed"], "train.")
    " (did you mean 'train.epochs'?)"
    >>> did_you_mean("zzz", ["epochs", "seed"])
    ''
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _known_keys(loc: tuple) -> list[str]:
    """The keys the config section at ``loc`` (a pydantic error location) accepts."""
    model: Any = Config
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = fields[part].annotation
        # ``X | None``: the model inside
        model = next((a for a in getattr(model, "__args__", ()) if hasattr(a, "model_fields")),
                     model)
    return list(getattr(model, "model_fields", {}))


def format_validation_error(err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "<root>"
    if e["type"] == "extra_forbidden":
        *section, name = map(str, e["loc"])
        prefix = "".join(f"{s}." for s in section)
        return (f"config: unknown key '{key}'"
                + did_you_mean(name, _known_keys(tuple(section)), prefix))
    return f"config: '{key}': {e['msg']} (got {e.get('input')!r})"


def from_dict(data: dict[str, Any], whole: bool | None = None) -> Config:
    """Validate a nested dict into a Config (`migrate`d, ``whole`` as there); one-line
    ConfigError on the first problem."""
    try:
        return Config.model_validate(migrate(data, whole))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def _deep_merge(base: dict, over: dict) -> dict:
    """Sections merge key by key; parameter dicts (``*params``, ``options``) are replaced whole,
    so a preset that switches loss or miner does not inherit the parent's arguments."""
    out = dict(base)
    for k, v in over.items():
        whole = k.endswith("params") or k == "options"
        mergeable = isinstance(v, dict) and isinstance(out.get(k), dict) and not whole
        out[k] = _deep_merge(out[k], v) if mergeable else v
    return out


def preset_names() -> list[str]:
    """Names of the presets shipped with dmlkit."""
    files = resources.files("dmlkit.presets").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    """The ``description:`` line of a shipped preset (empty if it has none)."""
    text = (resources.files("dmlkit.presets") / f"{name}.yaml").read_text()
    return str(_read_yaml(text, f"preset {name}").get("description", ""))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = safe_yaml.load(text, source) or {}
    except yaml.YAMLError as e:
        raise yaml_error(source, e) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a YAML mapping")
    return data


def yaml_error(source: str, err: yaml.YAMLError) -> ConfigError:
    """One line for a YAML syntax error: ``source:LINE:COLUMN: not valid YAML: PROBLEM``."""
    mark = getattr(err, "problem_mark", None)
    place = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return ConfigError(f"{place}: not valid YAML: {problem}")


def load_raw(name_or_path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config file or preset as a dict, with ``extends: OTHER`` resolved (recursively)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = _read_yaml(path.read_text(), str(path))
    else:
        res = resources.files("dmlkit.presets") / f"{name_or_path}.yaml"
        if not res.is_file():
            if path.is_file():
                raise ConfigError(f"{path} is not a YAML config (.yaml or .yml)")
            raise ConfigError(f"no preset or config file {name_or_path!r}"
                              f"{did_you_mean(name_or_path, preset_names())}; 'dmlkit presets' "
                              "lists the presets")
        data = _read_yaml(res.read_text(), f"preset {name_or_path}")
    data.pop("description", None)  # a one-line summary (``dmlkit presets``), not a setting
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if parent in seen:
        raise ConfigError(f"config: 'extends' cycle through {parent!r}")
    return _deep_merge(load_raw(str(parent), (*seen, str(parent))), data)


_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.epochs=5"`` -> (["train", "epochs"], 5); the value is parsed as YAML.

    >>> parse_override("optim.lr=1e-3")
    (['optim', 'lr'], 0.001)
    >>> parse_override("eval.recall_ks=[1, 10]")
    (['eval', 'recall_ks'], [1, 10])
    """
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    try:
        parsed = safe_yaml.load(value, f"--set {item}") if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    # YAML 1.1 reads "1e-3" as a string: accept it as the float the user meant.
    if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed.strip()):
        parsed = float(parsed)
    return key.strip().split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set key=value`` overrides to a raw config dict."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{k}' is not a section")
        node[keys[-1]] = value
    return data


def load(name_or_path: str, overrides: list[str] | None = None) -> Config:
    """Load a preset name or YAML path, apply overrides, validate. Whether the file is a run's
    config written whole (`migrate`) is read from the file, not from what the overrides add."""
    raw = load_raw(name_or_path)
    whole = "version" in raw or all(k in raw for k in SECTIONS)
    return from_dict(apply_overrides(raw, overrides or []), whole)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (the form of a run's ``config.yaml``)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(to_yaml(cfg))
