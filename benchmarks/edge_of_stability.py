"""Overhead of EdgeOfStability on the demo run, and the same run measured the reference code's way.

    python benchmarks/edge_of_stability.py [--steps 3000 --every 50]

Trainings of the demo (tanh MLP 64-200-200-10, 1000 sklearn digits, full-batch GD at η = 0.1)
in one process: without any callback; with ``EdgeOfStability(every_n_steps=50)``; with it and
``max_overhead=0.05``; with the per-step update sharpness alone (no measurement in the loop); and
with a callback that measures the top eigenvalue the way the edge-of-stability reference code does —
scipy ``eigsh`` on a LinearOperator with host copies, cold every time. Prints wall times, the
overhead ratios and the median HVPs per measurement.
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
    args = parser.parse_args()
    plain = run([], args.steps)
    eos = EdgeOfStability(every_n_steps=args.every)
    ours = run([eos], args.steps)
    budgeted = EdgeOfStability(every_n_steps=args.every, max_overhead=0.05)
    thinned = run([budgeted], args.steps)
    signal = EdgeOfStability(every_n_steps=10**9, at_fit_end=False)
    per_step = run([signal], args.steps)
    ref = ScipyEigsh(args.every)
    reference = run([ref], args.steps)
    print(f"\n## EdgeOfStability overhead on the demo ({args.steps} steps, every {args.every}), {torch.get_num_threads()} CPU threads")
    print(f"without callback                     {plain:7.1f} s")
    print(f"with EdgeOfStability                 {ours:7.1f} s   overhead {(ours - plain) / plain:6.1%}   "
          f"{len(eos.history)} measurements, {eos.total_hvps} HVPs")
    print(f"with max_overhead=0.05               {thinned:7.1f} s   overhead {(thinned - plain) / plain:6.1%}   "
          f"{len(budgeted.history)} measurements, {budgeted.total_hvps} HVPs")
    print(f"per-step update sharpness alone      {per_step:7.1f} s   overhead {(per_step - plain) / plain:6.1%}")
    print(f"with scipy eigsh, cold, host copies  {reference:7.1f} s   overhead {(reference - plain) / plain:6.1%}   "
          f"median {statistics.median(ref.hvps):.0f} HVPs per measurement")
    print(f"EdgeOfStability HVPs per measurement: median {statistics.median(h['hvps'] for h in eos.history):.0f}, "
          f"mean {eos.total_hvps / len(eos.history):.1f} (a cold measurement every 10th)")
    agree = [abs(a["dyn/eos_sharpness"] - b) / b for a, b in zip(eos.history, ref.values)]
    print(f"EdgeOfStability vs eigsh: median relative difference {statistics.median(agree):.1e}, max {max(agree):.1e}")


if __name__ == "__main__":
    main()
