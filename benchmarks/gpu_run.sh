#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md, as one call on a lent device machine:
#   peers travel as wheels in .whl/ (pip download --no-deps pyhessian==0.1 hessian-eigenthings==1.0.0a5)
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
timeout 300 python3 benchmarks/curvature.py --model resnet18 --device cuda --repeats 5 --out "$OUT/resnet18.json" 2>&1 | grep -v Warning | tee "$OUT/resnet18.txt"
timeout 120 python3 benchmarks/curvature.py --model mlp --device cuda --skip warm --repeats 5 --out "$OUT/mlp_gpu.json" 2>&1 | grep -v Warning | tee "$OUT/mlp_gpu.txt"
