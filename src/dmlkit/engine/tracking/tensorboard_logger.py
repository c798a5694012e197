"""TensorBoard: event files in ``<run dir>/tensorboard`` (``tensorboard --logdir runs``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmlkit.engine.tracking.logger import Logger, require

TEXT_TAG = "report"
PARAMS_TAG = "config"


def text_tag(tag: str) -> str:
    """The tag under which TensorBoard stores ``add_text(tag, ...)``."""
    return f"{tag}/text_summary"


def read_back(logdir: Path) -> set[tuple[str, int]]:
    """(tag, step) pairs of every scalar, text and image already in ``logdir``, read with
    TensorBoard's own `EventAccumulator`."""
    require("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {(t, e.step) for t in tags["scalars"] for e in acc.Scalars(t)}
    out |= {(t, e.step) for t in tags["tensors"] for e in acc.Tensors(t)}
    out |= {(t, e.step) for t in tags["images"] for e in acc.Images(t)}
    return out


class TensorBoardLogger(Logger):
    """Scalars per epoch (step = epoch), the config and ``report.md`` as text, plots as
    images."""

    def __init__(self, logdir: Path) -> None:
        super().__init__()
        require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        if logdir.is_dir():
            self.logged = read_back(logdir)
        self.writer = SummaryWriter(str(logdir))

    def write(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def log_params(self, params: dict[str, str]) -> None:
        if (text_tag(PARAMS_TAG), 0) not in self.logged:
            table = "\n".join(f"    {k}: {v}" for k, v in params.items())  # preformatted
            self.writer.add_text(PARAMS_TAG, table, 0)
            self.writer.flush()

    def log_files(self, files: list[Path]) -> None:
        from PIL import Image

        for f in files:
            tag = text_tag(TEXT_TAG) if f.suffix == ".md" else f.stem
            if (tag, 0) in self.logged or f.suffix not in (".md", ".png"):
                continue
            if f.suffix == ".md":
                self.writer.add_text(TEXT_TAG, f.read_text(), 0)
            else:
                image = np.asarray(Image.open(f).convert("RGB"))
                self.writer.add_image(tag, image, 0, dataformats="HWC")
            self.logged.add((tag, 0))
        self.writer.flush()

    def close(self, finished: bool) -> None:
        self.writer.close()
