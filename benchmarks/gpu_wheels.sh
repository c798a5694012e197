#!/usr/bin/env bash
# Run on a machine with network access: downloads into .whl/ the wheels that benchmarks/gpu_check.sh
# needs and that an offline CUDA image with its own torch lacks (CPython 3.12, manylinux x86_64).
# Such an image has torch, torchvision, numpy, scipy, scikit-learn, matplotlib, safetensors, typer,
# rich, pyyaml, pillow, tqdm; dmlkit also needs pytorch-metric-learning, faiss-cpu and pydantic
# (with its own dependencies). Versions: those of pyproject.toml (pydantic: the dev venv's).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
    pytorch-metric-learning==2.9.0   # Requires-Dist: numpy, scikit-learn, tqdm, torch (present)
    faiss-cpu==1.15.1                # numpy, packaging (present)
    pydantic==2.14.4                 # annotated-types, pydantic-core, typing-extensions, typing-inspection
    pydantic-core==2.50.5            # typing-extensions
    annotated-types==0.8.0
    typing-inspection==0.4.5         # typing-extensions
    typing-extensions==4.16.0        # pydantic needs >= 4.16 (an image may hold an older one)
)
rm -rf .whl
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
for w in .whl/*.whl; do
    echo "$(basename "$w"): $(unzip -p "$w" '*.dist-info/METADATA' | grep '^Requires-Dist' \
        | grep -v 'extra ==' | sed 's/Requires-Dist: //' | tr '\n' ' ')"
done
du -sh .whl
