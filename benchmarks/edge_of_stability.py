"""Overhead of EdgeOfStability on the demo run, and the same run measured the reference code's way.

    python benchmarks/edge_of_stability.py [--steps 3000 --every 50 --repeats 2]

Trainings of the demo (tanh MLP 64-200-200-10, 1000 sklearn digits, full-batch GD at η = 0.1)
in one process: without any callback; with ``EdgeOfStability(every_n_steps=50)``; with it and
``max_overhead=0.05``; with the per-step update sharpness alone (no measurement in the loop); and
with a callback that measures the top eigenvalue the way the edge-of-stability reference code does —
scipy ``eigsh`` on a LinearOperator with host copies, cold every time. Prints wall times, the
overhead ratios (medians of interleaved runs, and the time spent inside the callback, which the
machine's noise between runs does not reach) and the median HVPs per measurement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn import EdgeOfStability  # noqa: E402
from lightning_dyn.callbacks import training_step_loss  # noqa: E402
from lightning_dyn.curvature import HessianOperator  # noqa: E402
from lightning_dyn.data import DigitsDataModule  # noqa: E402
from lightning_dyn.models import SquaredLossMLP  # noqa: E402


class ScipyEigsh(pl.Callback):
    """The reference code's way: cold scipy eigsh through host copies every ``every`` steps."""

    def __init__(self, every: int) -> None:
        self.every, self.hvps, self.values = every, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every:
            return
        from scipy.sparse.linalg import LinearOperator, eigsh

        op = HessianOperator(pl_module, training_step_loss, [batch])

        def matvec(v):
            return (op @ torch.as_tensor(np.asarray(v, dtype=np.float32).ravel())).numpy()

        with torch.enable_grad():
            value = eigsh(LinearOperator((op.size, op.size), matvec=matvec, dtype=np.float32), k=1, which="LA")[0][0]
        self.hvps.append(op.num_matvecs)
        self.values.append(float(value))


def run(callbacks, steps):
    torch.manual_seed(0)
    trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    start = time.perf_counter()
    trainer.fit(SquaredLossMLP(lr=0.1), DigitsDataModule(n=1000))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration, interleaved (median)")
    args = parser.parse_args()
    configs = {
        "without callback": lambda: [],
        "with EdgeOfStability": lambda: [EdgeOfStability(every_n_steps=args.every)],
        "with max_overhead=0.05": lambda: [EdgeOfStability(every_n_steps=args.every, max_overhead=0.05)],
        "per-step update sharpness alone": lambda: [EdgeOfStability(every_n_steps=10**9, at_fit_end=False)],
    }
    walls: dict[str, list[float]] = {name: [] for name in configs}
    inside: dict[str, list[float]] = {name: [] for name in configs}
    kept: dict[str, list] = {}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every configuration
        for name, make in configs.items():
            callbacks = make()
            walls[name].append(run(callbacks, args.steps))
            inside[name].append(sum(c.total_seconds for c in callbacks))
            kept[name] = callbacks
    ref = ScipyEigsh(args.every)
    reference = run([ref], args.steps)
    plain = statistics.median(walls["without callback"])
    print(f"\n## EdgeOfStability overhead on the demo ({args.steps} steps, every {args.every}), "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats} interleaved runs")
    print(f"{'without callback':36s} {plain:7.1f} s   (runs {', '.join(f'{w:.1f}' for w in walls['without callback'])})")
    for name in list(configs)[1:]:
        wall, spent = statistics.median(walls[name]), statistics.median(inside[name])
        eos = kept[name][0]
        print(f"{name:36s} {wall:7.1f} s   overhead {(wall - plain) / plain:6.1%}   in the callback {spent:5.2f} s "
              f"= {spent / plain:5.1%} of the plain run   {len(eos.history)} measurements, {eos.total_hvps} HVPs")
    print(f"{'with scipy eigsh, cold, host copies':36s} {reference:7.1f} s   overhead {(reference - plain) / plain:6.1%}   "
          f"median {statistics.median(ref.hvps):.0f} HVPs per measurement")
    eos = kept["with EdgeOfStability"][0]
    print(f"EdgeOfStability HVPs per measurement: median {statistics.median(h['hvps'] for h in eos.history):.0f}, "
          f"mean {eos.total_hvps / len(eos.history):.1f} (a cold measurement every 10th)")
    agree = [abs(a["dyn/eos_sharpness"] - b) / b for a, b in zip(eos.history, ref.values)]
    print(f"EdgeOfStability vs eigsh: median relative difference {statistics.median(agree):.1e}, max {max(agree):.1e}")


if __name__ == "__main__":
    main()
