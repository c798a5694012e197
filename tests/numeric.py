"""Floating-point comparisons whose tolerance scales with the magnitude compared.

Another CPU's kernels (ATEN_CPU_CAPABILITY default / avx2 / avx512), another thread count or
another batch split sum in another order, and float32 results move by a few units in the last
place *of the values summed*, not of the result. So a fixed ``atol`` is wrong both ways: too
tight for a gradient that is a near-cancellation (a bias whose true gradient is 0 holds rounding
noise of the size of the summands), and meaningless for values far below it. Here

    |actual - expected| <= rel * scale + rel * |expected|

elementwise, with ``scale`` the largest magnitude of the expected tensor (or of a whole tree of
tensors: the gradients of one optimizer step share one scale).
"""

from collections.abc import Mapping

import numpy as np
import torch

# float32 carries 24 bits (eps 1.2e-7); 1e-5 is ~100 units in the last place of the scale.
F32_REL = 1e-5


def magnitude(*tensors) -> float:
    """The largest absolute value over all given tensors/arrays (0 for empty or all-zero)."""
    return max((float(torch.as_tensor(t).double().abs().max()) for t in tensors
                if torch.as_tensor(t).numel()), default=0.0)


def assert_close_scaled(actual, expected, rel: float = F32_REL, scale: float | None = None,
                        msg: str = "") -> None:
    """Assert ``actual`` ~ ``expected`` (tensors, arrays or numbers) within ``rel`` of
    ``scale`` (default: the largest magnitude of ``expected``) plus ``rel`` relative."""
    a = torch.as_tensor(np.asarray(actual) if not torch.is_tensor(actual) else actual)
    e = torch.as_tensor(np.asarray(expected) if not torch.is_tensor(expected) else expected)
    s = magnitude(e) if scale is None else scale
    torch.testing.assert_close(a, e.to(a.dtype), rtol=rel, atol=rel * s, check_dtype=False,
                               msg=(lambda m: f"{msg}: {m} (scale {s:.3g}, rel {rel:g})"))


def assert_trees_close(actual: Mapping, expected: Mapping, rel: float = F32_REL) -> None:
    """Assert two name -> tensor maps agree, every entry within ``rel`` of the largest
    magnitude in the whole expected map (e.g. all gradients of one step)."""
    assert actual.keys() == expected.keys()
    scale = magnitude(*expected.values())
    for k in expected:
        assert_close_scaled(actual[k], expected[k], rel, scale=scale, msg=k)
