"""Checks of a run's config that need neither torch nor the data: run before any work, so a
mistake costs well under a second and leaves no run directory behind."""

from __future__ import annotations

from pathlib import Path

from dmlkit import config as config_mod
from dmlkit.base.run_dir import open_run
from dmlkit.config import Config
from dmlkit.data.epoch_sampler import check_blocks, check_shardable
from dmlkit.errors import ConfigError


def check_new_run(cfg: Config, world_size: int = 1) -> None:
    """ConfigError (one line) if ``cfg`` cannot train: fewer than one epoch, a batch that does
    not split into the samplers' blocks of ``train.m_per_class`` images, or into equal slices
    of ``world_size`` ranks."""
    t = cfg.train
    if t.epochs < 1:
        raise ConfigError(f"train.epochs={t.epochs}: a run trains at least 1 epoch (its "
                          "untrained model is tested too, eval.evaluate_untrained)")
    parts = cfg.method.parts
    # blocks: the class stream's M per class (a pure Guided student draws random batches
    # instead; train.small_classes "all" cuts a batch's last class short, as MDR's official
    # sampler) and Sharing's surrogate-label blocks of m_per_class
    random_student = parts.guided is not None and cfg.method.loss_weight == 0
    class_blocks = not random_student and t.small_classes == "replace"
    if class_blocks or parts.sharing is not None:
        check_blocks(t.batch_size, t.m_per_class, ("train.batch_size=", "train.m_per_class="))
    check_shardable(t.batch_size, world_size)


def resumed_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """The config a resumed run continues with: the run's own, where ``overrides`` may only
    raise ``train.epochs`` (to train longer), and only under a learning-rate schedule that
    does not depend on it (``none``, ``plateau``): anything else would make the run a different
    experiment than its config.yaml says. ConfigError (one line) otherwise."""
    cfg = open_run(Path(run_dir)).read_config()
    epochs = cfg.train.epochs
    for item in overrides or []:
        keys, value = config_mod.parse_override(item)
        if keys != ["train", "epochs"]:
            raise ConfigError(f"--resume continues {run_dir} with its own config: --set "
                              f"{'.'.join(keys)} cannot change (only train.epochs can be raised, "
                              "to train longer); start a new run instead")
        epochs = value
    if epochs == cfg.train.epochs:
        return cfg
    if not isinstance(epochs, int) or epochs < cfg.train.epochs:
        raise ConfigError(f"--resume: train.epochs={epochs!r}: a run can only be extended "
                          f"beyond its {cfg.train.epochs} epochs")
    if cfg.optim.schedule not in ("none", "plateau"):
        raise ConfigError(f"--resume: {run_dir}'s {cfg.optim.schedule} learning-rate schedule is "
                          f"fixed to its {cfg.train.epochs} epochs; start a new run to train "
                          "longer")
    cfg.train.epochs = epochs
    return cfg
