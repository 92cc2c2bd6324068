#!/usr/bin/env bash
# The GPU rows of the continuous-depth benchmark (benchmarks/RESULTS.md), as one call on a lent
# device machine; torchdiffeq travels as a wheel in .whl/ (pip download --no-deps torchdiffeq).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 200 python3 benchmarks/models.py --device cuda --only ode --repeats 9 2>&1 | grep -v Warning | tee "$OUT/models_gpu.txt"
