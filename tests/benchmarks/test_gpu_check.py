"""benchmarks/gpu_check.sh --dry-run: every step of the GPU check at tiny size on the CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_exercises_every_step(tmp_path):
    out = tmp_path / "gpu-check.md"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out",
                          str(out)], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = out.read_text()
    for method in ("metric", "mdr", "sharing", "guided"):
        assert f"| {method} |" in report
    assert "| map_at_r |" in report and "| resnet50 (32 px, dry run) | bf16 |" in report
    assert "FAIL" not in report
