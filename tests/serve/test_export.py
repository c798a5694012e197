import json
import sys
import warnings

import pytest
import torch

from dmlkit.errors import CheckpointError, ConfigError
from dmlkit.serve.export import example_batch, export_model
from dmlkit.serve.load import load_run
from numeric import assert_whole_close


@pytest.fixture(scope="module")
def loaded(run_dir):
    return load_run(run_dir)


def fresh_inputs(loaded, n=5):
    g = torch.Generator().manual_seed(1)
    return loaded.transform(torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8))


def test_example_batch_is_the_runs_transformed_dataset_images(loaded):
    from dmlkit.data.digits import load_digits

    x = example_batch(loaded)
    images = torch.from_numpy(load_digits().images[:3]).permute(0, 3, 1, 2)
    torch.testing.assert_close(x, (images.float() / 255 - 0.5) / 0.5)  # "small": HALF stats
    assert example_batch(loaded, image_size=12).shape == (3, 1, 12, 12)


def test_torchscript_export_reproduces_the_eager_model(loaded, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # torch.jit's deprecation is silenced
        report = export_model(loaded, "torchscript", tmp_path / "m.pt")
    assert report.max_abs_diff <= 1e-4 and report.input_shape == (1, 8, 8)
    extra = {"dmlkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    meta = json.loads(extra["dmlkit.json"])
    assert meta["fingerprint"] == loaded.fingerprint and meta["transform"] == "small"
    x = fresh_inputs(loaded)  # a batch size the trace never saw
    with torch.no_grad():
        assert_whole_close(module(x), loaded.model(x), rel=1e-4)


def test_onnx_export_reproduces_the_eager_model(loaded, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    report = export_model(loaded, "onnx", tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-4
    proto = onnx.load(str(tmp_path / "m.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["fingerprint"] == loaded.fingerprint and props["in_channels"] == "1"
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = fresh_inputs(loaded, 7)
    (out,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        assert_whole_close(out, loaded.model(x), rel=1e-4)


def test_a_failed_check_writes_nothing(loaded, tmp_path):
    with pytest.raises(CheckpointError, match="differs from the eager model"):
        export_model(loaded, "torchscript", tmp_path / "m.pt", tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_missing_onnx(loaded, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown export format"):
        export_model(loaded, "tflite", tmp_path / "m")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r"pip install 'dmlkit\[onnx\]'"):
        export_model(loaded, "onnx", tmp_path / "m.onnx")
