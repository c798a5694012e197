import pytest
import torch

from dmlkit.errors import ConfigError, DataError
from dmlkit.models.multi_branch_master import MultiBranchMaster, branch_output_size
from numeric import assert_close_scaled, magnitude

CLASSES = [7, -2, 11]


@pytest.fixture
def master() -> MultiBranchMaster:
    torch.manual_seed(0)
    return MultiBranchMaster(CLASSES, in_channels=1, image_size=28, out_dim=3)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.rand(9, 1, 28, 28) * 255, torch.tensor([11, 7, -2, 7, 11, 11, -2, 7, 7])


@pytest.mark.parametrize(
    ("channels", "size", "flat"),
    [(3, 32, 64 * 5 * 5), (1, 28, 64 * 4 * 4), (1, (32, 28), 64 * 5 * 4)],
)
def test_flat_size_is_inferred(channels, size, flat):
    m = MultiBranchMaster([0, 1], in_channels=channels, image_size=size)
    hw = (size, size) if isinstance(size, int) else size
    emb, feats = m(torch.zeros(2, channels, *hw), torch.tensor([0, 1]))
    assert m.flat_dim == flat
    assert feats.shape == (2, flat) and emb.shape == (2, 2)
    assert m.head[0].in_features == flat


def test_branch_output_size_too_small():
    assert branch_output_size(16) == (1, 1)
    with pytest.raises(ConfigError):
        branch_output_size(15)
    with pytest.raises(ConfigError):
        MultiBranchMaster([0, 1], in_channels=1, image_size=(28, 28, 1))


def test_routing_matches_per_sample_loop(master, batch):
    images, labels = batch
    emb, feats = master(images, labels)
    for i, y in enumerate(labels.tolist()):
        branch = master.branches[CLASSES.index(y)]
        ref_feats = branch(images[i : i + 1])
        # one image alone vs in the batch: rounding at the scale of the whole batch's outputs
        assert_close_scaled(feats[i : i + 1], ref_feats, scale=magnitude(feats),
                            msg=f"features {i}")
        assert_close_scaled(emb[i : i + 1], master.head(ref_feats), scale=magnitude(emb),
                            msg=f"embedding {i}")


def test_constant_branch_changes_only_its_class(master, batch):
    images, labels = batch
    before, _ = master(images, labels)
    with torch.no_grad():
        for p in master.branches[CLASSES.index(-2)].parameters():
            p.zero_()
    after, feats = master(images, labels)
    mine = labels == -2
    assert torch.all(feats[mine] == 0)
    torch.testing.assert_close(
        after[mine], master.head(torch.zeros(1, master.flat_dim)).expand(2, 3)
    )
    torch.testing.assert_close(after[~mine], before[~mine])
    assert not torch.allclose(after[mine], before[mine])


def test_gradients_reach_only_used_branches(master, batch):
    images, labels = batch
    keep = labels != 7
    emb, _ = master(images[keep], labels[keep])
    emb.sum().backward()
    for k, c in enumerate(CLASSES):
        grads = [p.grad for p in master.branches[k].parameters()]
        if c == 7:
            assert all(g is None for g in grads)
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_single_class_batch(master, batch):
    images, _ = batch
    labels = torch.full((len(images),), 11)
    emb, _ = master(images, labels)
    torch.testing.assert_close(emb, master.head(master.branches[2](images)))


def test_unknown_label_and_bad_config(master, batch):
    images, labels = batch
    labels[3] = 5
    with pytest.raises(DataError, match=r"\[5\]"):
        master(images, labels)
    with pytest.raises(DataError):
        master(images, labels[:4])
    with pytest.raises(ConfigError):
        MultiBranchMaster([1, 1], in_channels=1, image_size=28)
    with pytest.raises(ConfigError):
        MultiBranchMaster([], in_channels=1, image_size=28)
