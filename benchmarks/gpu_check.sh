#!/usr/bin/env bash
# One command for a lent GPU machine with its own torch (offline): installs the wheels of .whl/
# (benchmarks/gpu_wheels.sh fetched them on a networked machine) into a target folder with
# --no-deps, never touching the machine's torch or numpy, then runs benchmarks/gpu_check.py with
# dmlkit from src/. Options go to gpu_check.py: --dry-run (tiny, on the CPU), --out PATH
# (default docs/results/gpu-check.md, a JSON beside it), --only STAGE,... (rerun stages).
# PYTHON: the interpreter (default python3); GPU_CHECK_SITE: the target (default /tmp/dmlkit-site).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
SITE="${GPU_CHECK_SITE:-/tmp/dmlkit-site}"
shopt -s nullglob
wheels=(.whl/*.whl)
if ((${#wheels[@]})); then
    stamp="$SITE/.installed"
    if [[ ! -f "$stamp" ]] || [[ "$(ls .whl | sort)" != "$(cat "$stamp")" ]]; then
        echo "[$(date +%T)] installing ${#wheels[@]} wheels from .whl/ into $SITE (--no-deps)"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "${wheels[@]}"
        ls .whl | sort > "$stamp"
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PY" -c "import torch, numpy, pytorch_metric_learning, faiss, pydantic
print(f'torch {torch.__version__} ({torch.__file__}), numpy {numpy.__version__}, '
      f'PML {pytorch_metric_learning.__version__}, faiss {faiss.__version__}, '
      f'pydantic {pydantic.VERSION}, CUDA {torch.cuda.is_available()}')"
exec "$PY" benchmarks/gpu_check.py "$@"
