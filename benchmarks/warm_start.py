"""Is every logged sharpness the top eigenvalue? The demo run against a float64 reference.

    python benchmarks/warm_start.py [--steps 3000 --every 50 --tol 1e-3]

Trains the demo (tanh MLP 64-200-200-10, 1000 sklearn digits, full-batch GD at η = 0.1) with
``EdgeOfStability(every_n_steps=50)`` — warm starts, a cold re-measurement every 10th — and keeps
the parameters of every measured step. Afterwards each logged ``dyn/eos_sharpness`` is compared
with the top eigenvalue at those parameters computed independently: scipy's ARPACK (``eigsh``,
tol 1e-10) on float64 Hessian-vector products of the same probe set. Prints every measurement
(step, logged, reference, relative error, products, warm/cold) and the summary: misses beyond
``tol``, the worst error, the median products per warm measurement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn import EdgeOfStability, HessianSettings  # noqa: E402
from lightning_dyn.curvature import HessianOperator  # noqa: E402
from lightning_dyn.data import DigitsDataModule  # noqa: E402
from lightning_dyn.models import SquaredLossMLP  # noqa: E402


class Snapshots(pl.Callback):
    """The parameters at every step the callback measured (it runs first, so they are those it saw)."""

    def __init__(self, watched: EdgeOfStability) -> None:
        self.watched, self.states = watched, {}

    def _keep(self, trainer, pl_module):
        if self.watched.last_step == trainer.global_step and trainer.global_step not in self.states:
            self.states[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._keep(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._keep(trainer, pl_module)


def reference(module: SquaredLossMLP, batches: list) -> float:
    # float64 products (checked against dense Hessians in tests/curvature), ARPACK instead of our solver
    op = HessianOperator(module, lambda m, b: m.criterion(m(b[0]), b[1]), batches, dtype=torch.float64)
    matvec = lambda v: op.matvec(torch.from_numpy(np.asarray(v).ravel())).numpy()  # noqa: E731
    return float(eigsh(LinearOperator((op.size, op.size), matvec=matvec, dtype=np.float64), k=1, which="LA",
                       tol=1e-10)[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--tol", type=float, default=1e-3)
    args = parser.parse_args()
    torch.manual_seed(0)
    eos = EdgeOfStability(every_n_steps=args.every, hessian=HessianSettings(tol=args.tol), density_at_fit_end=False)
    snapshots = Snapshots(eos)
    trainer = pl.Trainer(max_steps=args.steps, callbacks=[eos, snapshots], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    module = SquaredLossMLP(lr=0.1)
    trainer.fit(module, DigitsDataModule(n=1000))
    print(f"step  logged      reference   rel.error  products  start   (tol {args.tol:g})")
    warm, misses, worst = [], [], 0.0
    for i, h in enumerate(eos.history):
        module.load_state_dict(snapshots.states[h["step"]])
        want = reference(module, eos.batches)
        got = h["dyn/eos_sharpness"]
        error = abs(got - want) / abs(want)
        cold = i % eos.cold_every == 0
        if not cold:
            warm.append(h["hvps"])
        if error > args.tol:
            misses.append(h["step"])
        worst = max(worst, error)
        print(f"{h['step']:5d}  {got:10.5f}  {want:10.5f}  {error:9.1e}  {h['hvps']:8d}  {'cold' if cold else 'warm'}")
    print(f"\n{len(eos.history)} measurements: {len(misses)} beyond tol {args.tol:g} {misses or ''}; worst relative "
          f"error {worst:.1e}; products per warm measurement: median {statistics.median(warm):g}, "
          f"mean {statistics.mean(warm):.2f}, max {max(warm)}")


if __name__ == "__main__":
    main()
