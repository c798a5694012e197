"""Cost of the MDR regularizer alone (forward + backward), to set against a training step.

    OMP_NUM_THREADS=1 python benchmarks/bench_mdr_regularizer.py

Compare with the median step time of ``bench_method_step.py`` (triplet vs triplet+MDR): the
regularizer's share of a step is its time here divided by the step time.
"""

from __future__ import annotations

import statistics
import time

import torch

from dmlkit.losses.mdr import MDRRegularizer


def main() -> None:
    print(f"{'batch':>6}{'dim':>6}{'median ms':>12}   threads={torch.get_num_threads()}")
    for n, d in ((60, 128), (128, 512), (256, 512)):
        reg = MDRRegularizer()
        x = torch.randn(n, d, requires_grad=True)
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            reg(x).backward()
            times.append(time.perf_counter() - t0)
        print(f"{n:>6}{d:>6}{1000 * statistics.median(times[50:]):>12.3f}")


if __name__ == "__main__":
    main()
