#!/usr/bin/env bash
# The GPU rows of "Products without double backward" in benchmarks/RESULTS.md, as one call on a
# lent device machine (GPT-2 small's shape from a config, 124M parameters; training in bf16-mixed,
# attention on the flash kernel). The peer travels as a wheel in .whl/
# (pip download --no-deps hessian-eigenthings==1.0.0a5); without it its rows are left out.
set -o pipefail
source benchmarks/gpu_setup.sh
timeout 240 python3 benchmarks/finite_difference.py --preset gpt2 --device cuda --sections products,eigenvalue \
  2>&1 | grep -v Warning | tee "$OUT/finite_difference_gpt2_h200.txt"
timeout 240 python3 benchmarks/finite_difference.py --preset gpt2 --device cuda --sections overhead \
  --precision bf16-mixed --backend auto --steps 400 --every 50 2>&1 | grep -v Warning | tee -a "$OUT/finite_difference_gpt2_h200.txt"
