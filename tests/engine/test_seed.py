"""Seeding, determinism settings, per-rank CUDA RNG states and the multi-rank BatchNorm check
(CUDA faked: the functions are monkeypatched, no GPU needed)."""

import os

import pytest
import torch

from dmlkit import config
from dmlkit.engine import seed
from dmlkit.engine.train import check_ranks
from dmlkit.errors import ConfigError


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two fake devices whose generator states are byte tensors; records every set."""
    states = {0: torch.tensor([10], dtype=torch.uint8), 1: torch.tensor([11], dtype=torch.uint8)}
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state",
                        lambda device="cuda": states[torch.device(device).index or 0].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda s, device="cuda": calls.append((torch.device(device), s.tolist())))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda ss: calls.append(("all", ss)))
    return calls


@pytest.fixture
def restore_determinism():
    yield
    seed.seed_everything(0)


def test_each_rank_restores_its_own_device_state(fake_cuda):
    per_rank = [seed.cuda_rng_state(f"cuda:{r}") for r in range(2)]  # what each rank sends
    state = seed.rng_state(per_rank)
    for rank in range(2):
        seed.set_rng_state(state, rank, torch.device("cuda", rank))
    assert fake_cuda == [(torch.device("cuda", 0), [10]), (torch.device("cuda", 1), [11])]


def test_single_process_state_holds_the_training_device(fake_cuda):
    assert [s.tolist() for s in seed.rng_state(device="cuda:1")["cuda_ranks"]] == [[11]]
    assert seed.rng_state(device="cpu")["cuda_ranks"] == []


def test_a_rank_without_a_saved_state_takes_rank_0s(fake_cuda):
    """Resumed on more ranks than saved: every rank draws as rank 0 (the miners' draws agree)."""
    state = seed.rng_state([seed.cuda_rng_state("cuda:0")])  # saved by a 1-rank run
    for rank in range(2):
        seed.set_rng_state(state, rank, torch.device("cuda", rank))
    assert fake_cuda == [(torch.device("cuda", 0), [10]), (torch.device("cuda", 1), [10])]


def test_old_checkpoints_restore_all_devices_in_one_process_only(fake_cuda):
    old = {"torch": torch.get_rng_state(), "cuda": ["a", "b"]}
    seed.set_rng_state(old, 1, "cuda:1")
    assert fake_cuda == []
    seed.set_rng_state(old, 0, "cuda:0")
    assert fake_cuda == [("all", ["a", "b"])]


def test_determinism_defaults_per_device(monkeypatch, restore_determinism):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed.seed_everything(0, None, "cpu")
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    seed.seed_everything(0, None, "cuda")
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    seed.seed_everything(0, True, "cuda")  # runs on CUDA: an op without a kernel warns
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
def test_backbones_pool_without_nondeterministic_kernels(backbone):
    """AdaptiveAvgPool2d has no deterministic CUDA backward: the backbones pool with a mean,
    the same values."""
    from dmlkit.models.backbones import build_backbone

    net = build_backbone(backbone, 3)
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in net.modules())
    x = torch.randn(2, 3, 32, 32)
    pooled = torch.nn.functional.adaptive_avg_pool2d(x, 1)
    assert torch.allclose(net.avgpool(x) if hasattr(net, "avgpool") else pooled, pooled)


@pytest.mark.parametrize("overrides,refused", [
    (["train.sync_bn=false"], True),
    (["train.sync_bn=false", "model.freeze_bn=true"], False),
    (["train.sync_bn=false", "model.freeze_backbone=true"], False),
    ([], False),
    (["train.sync_bn=false", "train.device=cpu"], False),
])
def test_bn_without_sync_on_several_cuda_ranks_is_refused(fake_cuda, overrides, refused):
    cfg = config.load("digits-smoke", ["train.device=cuda", *overrides])
    check_ranks(cfg, 1)
    if refused:
        with pytest.raises(ConfigError, match="sync_bn=false on 2 CUDA ranks"):
            check_ranks(cfg, 2)
    else:
        check_ranks(cfg, 2)


def test_cpu_and_auto_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert seed.resolve_device("auto") == torch.device("cpu") == seed.resolve_device("cpu")


@pytest.mark.parametrize("name,count,message", [
    ("cuda", 0, "CUDA is not available on this machine; use cpu or auto"),
    ("cuda:1", 0, "CUDA is not available"),
    ("cuda:2", 2, "this machine has 2 GPU(s) (cuda:0 to cuda:1)"),
    ("gpu", 0, "unknown device 'gpu'"),
])
def test_devices_this_machine_lacks_are_config_errors(monkeypatch, name, count, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    with pytest.raises(ConfigError) as e:
        seed.resolve_device(name)
    assert message in str(e.value)
