import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dmlkit
from dmlkit import config
from dmlkit.data.dataset import ImageDataset
from dmlkit.data.digits import load_digits
from dmlkit.data.transforms import build_transform
from dmlkit.errors import DataError
from dmlkit.evaluation.extract import extract_embeddings
from dmlkit.serve.embed import to_channels
from dmlkit.serve.image_listing import list_images
from dmlkit.serve.load import load_run
from numeric import CONV_REL, assert_close_scaled, assert_whole_close, magnitude


@pytest.fixture(scope="module")
def loaded(run_dir):
    return dmlkit.load(run_dir)


@pytest.fixture(scope="module")
def reference(loaded, digits_indices):
    """The trainer's evaluation path: ImageDataset + the preset's eval transform + extract."""
    cat = load_digits().subset(digits_indices)
    tf = build_transform("small", False, None, 1)
    emb, _ = extract_embeddings(loaded.model, ImageDataset(cat, tf))
    return cat, emb


def test_load_is_lazy_and_is_load_run():
    assert dmlkit.load is load_run
    code = "import sys, dmlkit; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_loading_a_run_imports_no_training_or_plotting_packages(loaded):
    """A web service's ``dmlkit.load(run).embed(...)`` must not pay for matplotlib, sklearn,
    scipy or faiss (evaluation, reports and search import them on use)."""
    heavy = ("matplotlib", "sklearn", "scipy", "faiss")
    code = (
        "import sys, dmlkit, numpy as np\n"
        f"run = dmlkit.load({str(loaded.path)!r})\n"
        "run.embed(np.zeros((2, 8, 8), dtype=np.uint8), progress=False)\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_files_arrays_tensors_and_datasets_match_the_evaluation_path(
    loaded, reference, digits_folder, digits_indices
):
    cat, ref = reference
    listing = list_images(digits_folder)
    assert [int(p.stem) for p in listing.paths] == digits_indices.tolist()
    from_files = loaded.embed(listing.paths, progress=False)
    assert_whole_close(from_files, ref, rel=CONV_REL)
    nhwc = cat.images
    assert_whole_close(loaded.embed(nhwc, progress=False), ref, rel=CONV_REL)
    nchw = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    assert_whole_close(loaded.embed(nchw, progress=False), ref, rel=CONV_REL)
    grey = torch.from_numpy(nhwc[..., 0])  # N x H x W
    assert_whole_close(loaded.embed(grey, progress=False), ref, rel=CONV_REL)
    ds = ImageDataset(cat, build_transform("small_aug", True, 16, 1))  # its transform is ignored
    assert_whole_close(loaded.embed(ds, progress=False), ref, rel=CONV_REL)


def test_batching_keeps_order_and_restores_training_mode(loaded, reference):
    cat, ref = reference
    loaded.model.train()
    try:
        out = loaded.embed(cat.images, batch_size=7, progress=False)
        assert loaded.model.training
    finally:
        loaded.model.eval()
    assert_whole_close(out, ref, rel=CONV_REL)


def test_rgb_inputs_are_converted_to_the_runs_channels(loaded, reference):
    cat, ref = reference
    rgb = np.repeat(cat.images[:5], 3, axis=3)
    pil = [Image.fromarray(a) for a in rgb]
    # five rows of the reference set, at its scale
    assert_close_scaled(loaded.embed(pil, progress=False), ref[:5], scale=magnitude(ref),
                        rel=CONV_REL)
    assert_close_scaled(loaded.embed(rgb, progress=False), ref[:5], scale=magnitude(ref),
                        rel=CONV_REL)


def test_to_channels_hand_cases():
    red = torch.zeros(3, 1, 1, dtype=torch.uint8)
    red[0] = 255
    assert to_channels(red, 1).item() == round(0.299 * 255)  # ITU-R 601 luma
    assert to_channels(Image.new("RGB", (1, 1), (255, 0, 0)), 1).getpixel((0, 0)) == 76
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pixels[0, :] = np.arange(16, dtype=np.uint8)[:, None] * 17  # grey: R = G = B
    from_pil = np.asarray(Image.fromarray(pixels).convert("L"))
    from_tensor = to_channels(torch.from_numpy(pixels).permute(2, 0, 1), 1)[0].numpy()
    np.testing.assert_array_equal(from_tensor, from_pil)  # same integer luma as PIL
    grey = torch.full((1, 2, 2), 9, dtype=torch.uint8)
    assert to_channels(grey, 3).shape == (3, 2, 2) and (to_channels(grey, 3) == 9).all()
    rgba = torch.cat([red, torch.full((1, 1, 1), 7, dtype=torch.uint8)])
    assert to_channels(rgba, 3).tolist() == [[[255]], [[0]], [[0]]]
    with pytest.raises(DataError, match="5-channel"):
        to_channels(torch.zeros(5, 1, 1, dtype=torch.uint8), 3)


def test_rgb_run_gets_three_channels(run_dir):
    run = load_run(run_dir)
    seen = []
    run.in_channels = 3
    run.__dict__["transform"] = lambda x: seen.append(x) or torch.zeros(1, 8, 8)
    run.embed([Image.new("L", (8, 8)), torch.zeros(1, 8, 8, dtype=torch.uint8)], progress=False)
    assert seen[0].mode == "RGB" and seen[1].shape == (3, 8, 8)


@pytest.mark.parametrize("images,message", [
    (torch.zeros(2, 1, 8, 8), "must be uint8"),
    (np.zeros((2, 8), dtype=np.uint8), "3-D or 4-D"),
    ([], "no images"),
    ([1, 2], "cannot embed a int"),
    ([torch.zeros(1, 8, 8)], "uint8 C x H x W"),
    ({"a": 1}, "cannot embed a dict"),
    ([Image.new("L", (8, 8)), Image.new("L", (9, 9))], "differ in size"),
])
def test_bad_inputs_are_data_errors(loaded, images, message):
    with pytest.raises(DataError, match=message):
        loaded.embed(images, progress=False)


def test_unreadable_file_is_a_data_error(loaded, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    for workers in (0, 1):
        with pytest.raises(DataError, match="cannot decode image") as err:
            loaded.embed([bad], num_workers=workers, progress=False)
        assert str(err.value).startswith("cannot decode image") and "\n" not in str(err.value)
    with pytest.raises(DataError, match="batch_size"):
        loaded.embed([bad], batch_size=0)


def test_the_eval_transform_override_is_used(run_dir):
    run = load_run(run_dir)
    assert run.transform_name == "small"
    run.cfg.data.eval_transform = "raw255"
    x = torch.full((1, 8, 8), 200, dtype=torch.uint8)
    assert run.transform_name == "raw255" and run.transform(x).max().item() == 200.0


def test_fingerprint_is_the_weights_sha256(loaded, run_dir):
    import hashlib

    assert loaded.fingerprint == hashlib.sha256(
        (run_dir / "model.safetensors").read_bytes()).hexdigest()


def test_loading_a_run_fetches_no_imagenet_weights(run_dir, tmp_path):
    """A run's own weights replace the backbone's: ``model.pretrained`` is not acted upon."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = config.load(str(copy / "config.yaml"), ["model.pretrained=true"])
    config.save(cfg, copy / "config.yaml")  # small_cnn would raise "has no pretrained weights"
    run = load_run(copy)
    assert run.cfg.model.pretrained
    assert all(torch.equal(a, b) for a, b in zip(
        run.model.state_dict().values(), load_run(run_dir).model.state_dict().values(),
        strict=True))
