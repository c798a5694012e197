"""On PYTHONPATH, every Python process (pytest, its ``dmlkit train`` subprocesses, the
spawned ranks) starts with oneDNN off, as if each test ran in
``torch.backends.mkldnn.flags(enabled=False)``: convolutions take ATen's own kernels instead
of the ones oneDNN picks for the host CPU.

    PYTHONPATH=benchmarks/mkldnn_off:src python -m pytest tests/engine
"""

import torch

torch.backends.mkldnn.enabled = False
