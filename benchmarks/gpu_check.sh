#!/usr/bin/env bash
# Run on the lent GPU machine (its python3 has torch + CUDA; the rest travels as wheels in .whl/):
#   bash benchmarks/gpu_check.sh [pytest paths...]
# Installs the carried wheels into /tmp/site, runs the CUDA tests and the GPU benchmarks, writes results to $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/training PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, sam2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pytest -q -p no:cacheprovider -p no:xvfb --import-mode=importlib ${@:-tests/engine/test_cuda.py} 2>&1 | tail -15
