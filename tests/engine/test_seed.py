import pytest
import torch

from dmlkit.engine.seed import resolve_device
from dmlkit.errors import ConfigError


def test_cpu_and_auto_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")


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
        resolve_device(name)
    assert message in str(e.value)
