import pytest

from dmlkit import config as config_mod
from dmlkit.base.files import save_weights
from dmlkit.base.run_dir import RunDir
from dmlkit.models.embedding_model import build_model
from dmlkit.models.run_model import load_run_model


@pytest.mark.parametrize("backbone, channels", [("efficientnet_lite0", 3), ("small_cnn", 1),
                                                ("small_cnn", 3)])
def test_input_channels_come_from_the_stem_not_the_files_first_convolution(
        tmp_path, backbone, channels):
    """safetensors files list tensors alphabetically: EfficientNet's depthwise block
    convolutions (1 input channel each) come before its stem there."""
    pytest.importorskip("efficientnet_lite_pytorch")
    cfg = config_mod.load("digits-smoke", [f"model.backbone={backbone}",
                                           f"run.root={tmp_path}", "run.name=r"])
    model = build_model(cfg.model, channels)
    run = RunDir.create(cfg)
    save_weights(model.state_dict(), run.path / "model.safetensors")
    _, loaded, in_channels = load_run_model(run.path)
    assert in_channels == channels
    assert all((a == b).all() for a, b in zip(model.state_dict().values(),
                                               loaded.state_dict().values(), strict=True))
