"""Tolerance margins of the numeric tests under other CPU kernels, thread counts and oneDNN off.

Runs the Makefile's KERNEL_TESTS (``-m "not slow"``) once per combination of
ATEN_CPU_CAPABILITY, OMP_NUM_THREADS and oneDNN on/off, with ``DMLKIT_MARGIN_LOG`` set so that
every comparison of tests/numeric.py logs its worst ``|err| / allowed`` ratio; then prints, per
combination, the test outcome and the worst ratio (margin = 1 / ratio), and the tightest
comparisons over all combinations (of every log in ``--out``).

    nice -n 10 python benchmarks/tolerance_margins.py --out /tmp/margins \\
        --combo default/1/on --combo avx2/2/on --combo avx512/1/off
    python benchmarks/tolerance_margins.py --out /tmp/margins   # the table alone

Exit status 1 when a run failed or (``--min-margin 10``) a margin is below the given one.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MKLDNN_OFF = ROOT / "benchmarks" / "mkldnn_off"  # its sitecustomize turns oneDNN off


def kernel_tests() -> list[str]:
    """The Makefile's KERNEL_TESTS (one list, kept there)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    return re.search(r"^KERNEL_TESTS\s*:=(.*)$", text, re.M).group(1).split()


def run_combo(combo: str, out: Path, pytest_args: list[str]) -> bool:
    """Run the tests under ``combo``; True when they all passed."""
    cap, threads, mkldnn = combo.split("/")
    log = out / f"{combo.replace('/', '-')}.log"
    log.unlink(missing_ok=True)
    paths = [str(MKLDNN_OFF)] if mkldnn == "off" else []
    env = {**os.environ, "ATEN_CPU_CAPABILITY": cap, "OMP_NUM_THREADS": threads,
           "DMLKIT_MARGIN_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-m", "not slow", *pytest_args,
           *kernel_tests()]
    print(f"== {combo}: {' '.join(cmd[1:])}", flush=True)
    res = subprocess.run(cmd, env=env, cwd=ROOT, text=True, capture_output=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("FAILED")]
    lines += res.stdout.strip().splitlines()[-1:]
    (out / f"{combo.replace('/', '-')}.outcome").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return res.returncode == 0


def read_logs(out: Path) -> dict[str, list[tuple[str, str, float]]]:
    logs = {}
    for log in sorted(out.glob("*.log")):
        rows = [line.rstrip("\n").split("\t") for line in log.read_text().splitlines()]
        logs[log.stem.replace("-", "/")] = [(t, label, float(r)) for t, label, r in rows]
    return logs


def table(out: Path, top: int) -> float:
    """Print the tables; return the smallest margin over all logs."""
    logs = read_logs(out)
    print("| ATEN_CPU_CAPABILITY / OMP_NUM_THREADS / oneDNN | tests | comparisons | "
          "worst err/allowed | margin | tightest test |")
    print("|---|---|---|---|---|---|")
    worst = defaultdict(lambda: (0.0, ""))
    for combo, rows in logs.items():
        outcome = (out / f"{combo.replace('/', '-')}.outcome").read_text().splitlines()[-1]
        test, label, ratio = max(rows, key=lambda r: r[2])
        margin = f"{1 / ratio:.3g}x" if ratio else "exact"
        print(f"| {combo} | {outcome} | {len(rows)} | {ratio:.3g} | {margin} | "
              f"`{test}` {label} |")
        for t, lab, r in rows:
            worst[(t, lab)] = max(worst[(t, lab)], (r, combo))
    print(f"\nTightest {top} comparisons over all combinations:\n")
    print("| test | label | worst err/allowed | margin | combination |")
    print("|---|---|---|---|---|")
    ranked = sorted(worst.items(), key=lambda kv: -kv[1][0])[:top]
    for (t, lab), (r, combo) in ranked:
        margin = f"{1 / r:.3g}x" if r else "exact"
        print(f"| `{t}` | {lab} | {r:.3g} | {margin} | {combo} |")
    worst_ratio = max((r for r, _ in worst.values()), default=0.0)
    return 1 / worst_ratio if worst_ratio else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the logs")
    parser.add_argument("--combo", action="append", default=[],
                        help="CAPABILITY/THREADS/on|off (oneDNN), e.g. avx2/2/off")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--min-margin", type=float, default=0.0,
                        help="exit 1 when a comparison's margin is below this (e.g. 10)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    passed = [run_combo(combo, args.out, args.pytest_args) for combo in args.combo]
    margin = table(args.out, args.top)
    if not all(passed) or margin < args.min_margin:
        sys.exit(1)


if __name__ == "__main__":
    main()
