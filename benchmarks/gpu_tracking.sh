#!/usr/bin/env bash
# Issue 23's benchmarks on a lent device machine, as one call: tracking λ_max along the demo against
# the peers (hessian-eigenthings travels as a wheel in .whl/: pip download --no-deps
# hessian-eigenthings==1.0.0a5), and EdgeOfStability's overhead on GPT-2 small's shape (bf16-mixed).
set -o pipefail
source benchmarks/gpu_setup.sh
timeout 240 python3 benchmarks/tracking.py --device cuda --steps 3000 --every 100 2>&1 | grep -v Warning \
  | tee "$OUT/tracking_gpu.txt"
timeout 300 python3 benchmarks/finite_difference.py --preset gpt2 --device cuda --sections overhead \
  --precision bf16-mixed --backend auto --steps 400 --every 50 2>&1 | grep -v Warning | tee "$OUT/overhead_gpt2_gpu.txt"
