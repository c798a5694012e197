#!/usr/bin/env bash
# One command for a lent GPU: CUDA smoke, fp32 vs bf16, throughput vs a bare loop, evaluation
# on the device.
# Writes docs/results/gpu-check.md; --dry-run exercises every step at tiny size on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
