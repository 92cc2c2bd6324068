#!/usr/bin/env bash
# Learning-rate sweep of the edge-of-stability run: the sharpness settles at 2/η for each η.
# Each run writes runs/lr_<η>/; compare them in TensorBoard: tensorboard --logdir runs
set -euo pipefail
for lr in 0.05 0.1 0.2 0.4; do
    lightning-dyn fit --config configs/edge_of_stability.yaml --model.lr "$lr" \
        --trainer.logger.init_args.name "lr_$lr" --trainer.max_steps 2000
done
