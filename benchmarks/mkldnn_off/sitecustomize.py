"""On PYTHONPATH, every Python process (pytest, its ``dmlkit train`` subprocesses, the
spawned ranks) runs with oneDNN off from its first ``import torch`` on, as if each test ran in
``torch.backends.mkldnn.flags(enabled=False)``: convolutions take ATen's own kernels instead
of the ones oneDNN picks for the host CPU. torch itself is not imported any earlier.

    PYTHONPATH=benchmarks/mkldnn_off:src python -m pytest tests/engine
"""

import importlib.abc
import importlib.util
import sys


class _OneDNNOff(importlib.abc.MetaPathFinder):
    """Finds torch once: runs its import as usual, then turns oneDNN off."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            import torch.backends.mkldnn

            torch.backends.mkldnn.enabled = False

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _OneDNNOff())
