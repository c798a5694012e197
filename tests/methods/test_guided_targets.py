import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from dmlkit.errors import ConfigError, DataError
from dmlkit.losses.distill import EmbeddingDistillationLoss
from dmlkit.methods.guided_targets import (
    TargetCache,
    compute_master_targets,
    load_or_compute,
    targets_from_model,
    weights_hash,
)
from dmlkit.models.multi_branch_master import MultiBranchMaster
from numeric import assert_close_scaled, assert_whole_close, magnitude

CLASSES = [4, 1, 8]
CONFIG = {"classes": CLASSES, "in_channels": 1, "image_size": 28, "out_dim": 2}


@pytest.fixture
def master() -> MultiBranchMaster:
    torch.manual_seed(0)
    return MultiBranchMaster(**CONFIG)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 28, 28, 1), dtype=np.uint8)
    return images, np.array([8, 4, 1, 1, 4, 8, 8, 1, 4, 4])


class Counter:
    """compute_fn wrapper that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self):
        self.calls += 1
        return self.fn()


def test_master_targets_route_each_image_through_its_branch(master, data):
    images, labels = data
    master.train()
    targets = compute_master_targets(master, images, labels, batch_size=3)
    assert targets.shape == (10, 2) and targets.dtype == torch.float32
    assert not targets.requires_grad and master.training  # mode restored
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # raw 0-255 pixels
    with torch.no_grad():
        for i, y in enumerate(labels):
            ref = master.head(master.branches[CLASSES.index(y)](x[i : i + 1]))
            # one image alone vs in a batch of 3: rounding at the scale of all the targets
            assert_close_scaled(targets[i : i + 1], ref, scale=magnitude(targets), msg=str(i))


def test_master_targets_from_dataset_and_transform(master, data):
    images, labels = data
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    from_array = compute_master_targets(master, images, labels, transform=lambda b: b / 255)
    dataset = TensorDataset(x, torch.from_numpy(labels))
    from_dataset = compute_master_targets(master, dataset, labels, transform=lambda b: b / 255)
    torch.testing.assert_close(from_array, from_dataset)
    assert not torch.allclose(from_array, compute_master_targets(master, images, labels))


def test_input_errors(master, data):
    images, labels = data
    with pytest.raises(DataError):
        compute_master_targets(master, images, labels[:5])
    with pytest.raises(DataError):
        compute_master_targets(master, images.astype(np.float32), labels)
    with pytest.raises(DataError):
        compute_master_targets(master, images, np.where(labels == 8, 3, labels))
    with pytest.raises(ConfigError):
        compute_master_targets(master, images, labels, batch_size=0)


def test_cache_is_reused(tmp_path, master, data):
    images, labels = data
    compute = Counter(lambda: compute_master_targets(master, images, labels))
    first = load_or_compute(tmp_path, master, CONFIG, compute)
    second = load_or_compute(tmp_path, master, CONFIG, compute)
    assert compute.calls == 1
    torch.testing.assert_close(first, second)
    files = sorted(p.name for p in (tmp_path / "targets").iterdir())
    assert files == ["master.safetensors"]  # no temporary file left behind


def test_cache_stores_indices_and_checks_them(tmp_path, master, data):
    images, labels = data
    compute = Counter(lambda: compute_master_targets(master, images, labels))
    idx = np.arange(100, 110)
    load_or_compute(tmp_path, master, CONFIG, compute, indices=idx)
    load_or_compute(tmp_path, master, CONFIG, compute, indices=idx)
    assert compute.calls == 1
    load_or_compute(tmp_path, master, CONFIG, compute, indices=idx[::-1].copy())
    assert compute.calls == 2
    with pytest.raises(DataError):
        load_or_compute(tmp_path, master, CONFIG, compute, indices=idx[:3])


def test_cache_invalidated_by_weights_and_config(tmp_path, master, data):
    images, labels = data
    compute = Counter(lambda: compute_master_targets(master, images, labels))
    before = load_or_compute(tmp_path, master, CONFIG, compute)
    old_hash = weights_hash(master)
    with torch.no_grad():
        master.head[-1].bias.add_(1.0)
    assert weights_hash(master) != old_hash
    after = load_or_compute(tmp_path, master, CONFIG, compute)
    assert compute.calls == 2
    torch.testing.assert_close(after, before + 1.0)
    load_or_compute(tmp_path, master, {**CONFIG, "lr": 0.1}, compute)
    assert compute.calls == 3
    load_or_compute(tmp_path, master, {**CONFIG, "lr": 0.1}, compute)  # overwritten, then reused
    assert compute.calls == 3


def test_weights_hash_depends_on_values_only(master):
    torch.manual_seed(0)
    twin = MultiBranchMaster(**CONFIG)
    assert weights_hash(twin) == weights_hash(master)
    torch.manual_seed(1)
    assert weights_hash(MultiBranchMaster(**CONFIG)) != weights_hash(master)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_cache_is_recomputed(tmp_path, master, data, damage):
    images, labels = data
    compute = Counter(lambda: compute_master_targets(master, images, labels))
    good = load_or_compute(tmp_path, master, CONFIG, compute)
    path = TargetCache(tmp_path).path
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"{" * 40)
    else:  # flip one byte of the stored data: only the checksum can tell
        raw = bytearray(raw)
        raw[-5] ^= 0xFF
        path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="recomputing"):
        again = load_or_compute(tmp_path, master, CONFIG, compute)
    assert compute.calls == 2
    torch.testing.assert_close(again, good)
    assert path.read_bytes() != b"{" * 40
    load_or_compute(tmp_path, master, CONFIG, compute)
    assert compute.calls == 2


def test_any_model_as_teacher_without_labels(tmp_path, data):
    images, _ = data
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 4), nn.BatchNorm1d(4))
    teacher.train()
    compute = Counter(lambda: targets_from_model(teacher, images, batch_size=4))
    targets = load_or_compute(tmp_path, teacher, {"arch": "mlp"}, compute, key="teacher")
    load_or_compute(tmp_path, teacher, {"arch": "mlp"}, compute, key="teacher")
    assert compute.calls == 1 and teacher.training
    assert (tmp_path / "targets" / "teacher.safetensors").exists()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        assert_whole_close(targets, teacher.eval()(x))  # eval mode: running BN stats
    # the student stage needs only images and targets
    student = torch.zeros(10, 4, requires_grad=True)
    EmbeddingDistillationLoss()(student, targets).backward()
    assert student.grad is not None


def test_bad_teacher_output_and_key(tmp_path, data):
    images, _ = data
    with pytest.raises(ConfigError):
        targets_from_model(nn.Flatten(0), images)
    with pytest.raises(ConfigError):
        TargetCache(tmp_path, key="../escape")
