"""Floating-point comparisons whose tolerance scales with the magnitude of the WHOLE thing compared.

Another CPU's kernels (ATEN_CPU_CAPABILITY default / avx2 / avx512, oneDNN's own choice of code
path from the host CPU), another thread count or another batch split sum in another order, and
float32 results move by a few units in the last place *of the values summed*, not of the result.
So a fixed ``atol`` is wrong both ways, and so is a tensor's own magnitude: a bias whose true
gradient (or value) is ~0 holds rounding noise of the size of its neighbours, not of itself. Here

    |actual - expected| <= rel * scale + rel * |expected|

elementwise, with ``scale`` the largest magnitude of the whole thing compared:

- ``assert_trees_close``: a whole tree (a state dict, an optimizer state, the gradients of one
  step, the losses of one step): one scale, the largest magnitude over every floating leaf.
- ``assert_whole_close``: one tensor that is the whole result (a model's outputs for a batch, a
  set of embeddings, a loss): its own largest magnitude.
- ``assert_close_scaled``: a piece of something larger; the caller names the scale (``magnitude``
  of the whole), there is no default.

Setting ``DMLKIT_MARGIN_LOG=/path`` appends one line per comparison: the test id, the label and
the worst ``|err| / allowed`` ratio (1 = at the tolerance; benchmarks/tolerance_margins.py).
"""

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch

# float32 carries 24 bits (eps 1.2e-7); 1e-5 is ~100 units in the last place of the scale.
F32_REL = 1e-5
# A conv net's outputs along two kernel paths (another batch split, oneDNN or ATen's kernels):
# each convolution sums K = 9 x C_in terms of both signs (576 in the small CNN) and rounds at
# ~sqrt(K) = 24 units of its output's last place; 0.34 of 1e-5 (<= 7e-6 of the scale) seen
# (docs/results/tolerance-margins.md): 1e-4.
CONV_REL = 1e-4


def _tensor(x) -> torch.Tensor:
    return (x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).detach()


def magnitude(*tensors) -> float:
    """The largest absolute value over all given tensors/arrays (0 for empty or all-zero)."""
    values = [_tensor(t).double() for t in tensors]  # bool/int state too
    return max((float(v.abs().max()) for v in values if v.numel()), default=0.0)


def _log_margin(a: torch.Tensor, e: torch.Tensor, atol: float, rtol: float, label: str) -> None:
    path = os.environ.get("DMLKIT_MARGIN_LOG")
    if not path or not e.numel():
        return
    err = (a.double() - e.double()).abs()
    allowed = atol + rtol * e.double().abs()
    ratio = torch.where(err == 0, 0.0, err / allowed)  # 0/0 is a match, x/0 is inf
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
    with open(path, "a") as f:
        f.write(f"{test}\t{label or '-'}\t{float(ratio.max()):.6g}\n")


def assert_close_scaled(actual, expected, *, scale: float, rel: float = F32_REL,
                        msg: str = "") -> None:
    """Assert ``actual`` ~ ``expected`` (tensors, arrays or numbers) within ``rel * scale`` plus
    ``rel`` relative; ``scale`` is the magnitude of the whole the two are a piece of."""
    a, e = _tensor(actual), _tensor(expected)
    e = e.to(a.dtype) if a.is_floating_point() else e
    _log_margin(a, e, rel * scale, rel, msg)
    torch.testing.assert_close(a, e, rtol=rel, atol=rel * scale, check_dtype=False,
                               msg=(lambda m: f"{msg}: {m} (scale {scale:.3g}, rel {rel:g})"))


def assert_whole_close(actual, expected, rel: float = F32_REL, msg: str = "") -> None:
    """``assert_close_scaled`` at the largest magnitude of ``expected``, for a tensor that is the
    whole result (a batch of outputs, embeddings, a loss), never one piece of a tree."""
    assert_close_scaled(actual, expected, scale=magnitude(expected), rel=rel, msg=msg)


def spread_amplification(embeddings) -> float:
    """``E / sigma`` (at least 1), E the embeddings' largest magnitude and sigma the spread (std)
    of their pairwise distances: a loss on distances normalized by their spread (MDR's
    ``(d - mu) / sigma``) sees a rounding of the embeddings at E magnified by this."""
    e = _tensor(embeddings).double().flatten(1)
    return max(1.0, magnitude(e) / float(torch.pdist(e).std()))


@contextmanager
def batch_sum_scale(module: torch.nn.Module) -> Iterator[list[float]]:
    """Record (in the yielded one-element list) the scale of the batch sums that the gradients of
    every ``nn.Linear`` in ``module`` are: the largest of ``sum_i |g_i|`` (the bias) and
    ``|G|^T |X|`` (the weight) over the backward passes run inside. A gradient that is a sum over
    the batch rounds at this scale: a bias whose per-sample terms cancel (MDR is translation
    invariant) holds noise of their size, not of its own or of the step's largest gradient."""
    scale = [0.0]

    def forward(_, inputs, out):
        x = inputs[0].detach().flatten(0, -2).abs()
        if out.requires_grad:
            out.register_hook(lambda grad: record(grad.detach().flatten(0, -2).abs(), x))

    def record(g, x):
        scale[0] = max(scale[0], float(g.sum(0).max()), float((g.T @ x).max()))

    handles = [m.register_forward_hook(forward) for m in module.modules()
               if isinstance(m, torch.nn.Linear)]
    try:
        yield scale
    finally:
        for h in handles:
            h.remove()


def _leaves(tree, prefix: str = "") -> dict:
    """name -> leaf of nested mappings/sequences of tensors, arrays and numbers."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, Sequence) and not isinstance(tree, str):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out = {}
    for k, v in items:
        out |= _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _is_float(x) -> bool:
    return isinstance(x, float) or (
        (torch.is_tensor(x) or isinstance(x, np.ndarray)) and _tensor(x).is_floating_point())


def assert_trees_close(actual, expected, rel: float = F32_REL,
                       scale: float | None = None) -> None:
    """Assert two trees (nested mappings/sequences: state dicts, optimizer states, the gradients
    of one step) agree: floating leaves within ``rel`` of one scale, by default the largest
    magnitude over every floating leaf of ``expected``; other leaves (step counts, flags,
    integer state, hyperparameters) equal."""
    got, want = _leaves(actual), _leaves(expected)
    assert got.keys() == want.keys(), sorted(got.keys() ^ want.keys())
    floats = {k for k, v in want.items() if _is_float(v)}
    s = magnitude(*(want[k] for k in floats)) if scale is None else scale
    for k, v in want.items():
        if k in floats:
            assert_close_scaled(got[k], v, scale=s, rel=rel, msg=k)
        elif torch.is_tensor(v) or isinstance(v, np.ndarray):
            assert torch.equal(_tensor(got[k]), _tensor(v)), k
        else:
            assert got[k] == v, k
