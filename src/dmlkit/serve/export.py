"""Exporting a run's model to TorchScript or ONNX, checked against the eager model.

The exported graph maps the *transformed* image batch (float32 B x C x H x W, batch size free)
to embeddings; the preprocessing (channels, eval transform) is recorded as metadata
(TorchScript: the extra file ``dmlkit.json``; ONNX: ``metadata_props``). The model is traced on
two example images in eval mode, then the exported model and the eager one embed three images
(so a batch size baked into the graph fails the check): ``max |exported - eager|`` must be at
most ``tolerance``, else nothing is written. ONNX needs the ``onnx`` and ``onnxruntime``
packages; it uses torch's TorchScript-based exporter (``dynamo=False``), which needs nothing else.
torch 2.14 deprecates ``torch.jit`` (its FutureWarnings are silenced here); both formats still
load in current runtimes (``torch.jit.load``, onnxruntime).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmlkit.base.atomic_write import atomic_write_bytes
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.registry import load_catalog
from dmlkit.errors import CheckpointError, ConfigError, DataError
from dmlkit.serve.embed import EmbeddingInputs
from dmlkit.serve.load import LoadedRun
from dmlkit.version import __version__

FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-4
_EXAMPLES = 3


@dataclass(frozen=True)
class ExportReport:
    """Where the model went, and how closely it reproduces the eager model."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float


def example_batch(run: LoadedRun, image_size: int | None = None, n: int = _EXAMPLES):
    """``n`` transformed example images: random ``image_size`` squares, else the first images
    of the run's dataset."""
    if image_size is not None:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, run.in_channels, image_size, image_size),
                               generator=g, dtype=torch.uint8)
    else:
        d = run.cfg.data
        try:
            catalog = load_catalog(d.name, d.root, False, **d.options)
        except DataError as e:
            raise DataError(f"no example images ({e}); pass an image size") from None
        images = ImageDataset(catalog.subset(np.arange(min(n, len(catalog)))))
    inputs = EmbeddingInputs(images, run.in_channels, run.transform)
    return torch.stack([inputs[i] for i in range(len(inputs))])


def export_metadata(run: LoadedRun, input_shape: tuple[int, ...]) -> dict[str, str]:
    """What a consumer needs to reproduce the inputs and compare models."""
    d, ev = run.cfg.data, run.cfg.eval
    return {
        "dmlkit_version": __version__, "fingerprint": run.fingerprint,
        "transform": run.transform_name, "image_size": json.dumps(d.image_size),
        "in_channels": str(run.in_channels), "input_shape": json.dumps(list(input_shape)),
        "distance": ev.distance, "normalize": json.dumps(ev.normalize),
    }


def _torchscript(model: torch.nn.Module, x: torch.Tensor, meta: dict[str, str]):
    """(file bytes, outputs of the reloaded module on ``x``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        traced = torch.jit.trace(model, x[:2])
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={"dmlkit.json": json.dumps(meta)})
        reloaded = torch.jit.load(io.BytesIO(buf.getvalue()), map_location="cpu")
    return buf.getvalue(), reloaded(x)


def _onnx(model: torch.nn.Module, x: torch.Tensor, meta: dict[str, str]):
    """(file bytes, outputs of onnxruntime on ``x``)."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra: pip install 'dmlkit[onnx]'") from None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(
            model, (x[:2],), buf, dynamo=False, input_names=["images"],
            output_names=["embeddings"], opset_version=17,
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    blob = proto.SerializeToString()
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": x.numpy()})
    return blob, torch.from_numpy(out)


@torch.no_grad()
def export_model(
    run: LoadedRun,
    fmt: str,
    out: str | Path,
    image_size: int | None = None,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Export ``run``'s model (eval mode, CPU) to ``out`` after checking it against eager."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model = run.model.cpu().eval()
    x = example_batch(run, image_size)
    meta = export_metadata(run, tuple(x.shape[1:]))
    blob, exported = (_torchscript if fmt == "torchscript" else _onnx)(model, x, meta)
    diff = float((exported.float() - model(x)).abs().max())
    if not diff <= tolerance:
        raise CheckpointError(
            f"the {fmt} export differs from the eager model by {diff:.3g} > {tolerance:g}; "
            "not written"
        )
    atomic_write_bytes(Path(out), blob)
    return ExportReport(Path(out), fmt, tuple(x.shape[1:]), diff)
