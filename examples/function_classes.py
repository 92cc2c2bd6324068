"""Which architectures can fit a saddle or an interior maximum? Four of them side by side.

Targets on [−1, 1]² (a 21 × 21 training grid): the saddle x₁² − x₂² and the peak 1 − x₁² − x₂².
Architectures (Kuehn & Kuntz, arXiv:2405.09351, for their critical points):

(a) a tanh MLP 2–2–2–1, widths never increasing: no critical points possible;
(b) a tanh MLP 2–32–1, augmented: Morse for generic weights;
(c) a NeuralODE on ℝ² (field: a tanh MLP of width 16) with a linear read-out: no critical points
    possible — of the exact flow: with ``--step-size 0.25`` the four rk4 steps fold the plane and the
    finder shows it;
(d) an AugmentedNeuralODE on ℝ³ (same field) with a linear read-out: Morse for generic weights.

Each is trained with Adam (400 full-batch steps; the ODEs by rk4, 8 steps of 0.125 over [0, 1]); the CriticalPoints callback logs the critical
points of the map over training to TensorBoard, with a figure of the map. At the end the script
prints, for each, the training MSE, the *sup* error on the square (a 201 × 201 grid and the
boundary at 4001 points per edge) and the critical points found in the square.

The training MSE does not show the obstruction: a map without critical points can match the grid
closely and carry the maximum out to the boundary along a ridge between grid points. The sup error
does: a map g without critical points on the square takes its maximum on the boundary, where the
peak is ≤ 0, so sup|g − peak| ≥ max(|g(0) − 1|, g(0)) ≥ 1/2 — for (a) and (c) at any weights.

    python examples/function_classes.py           # about 40 s on 2 CPU cores
    python -m tensorboard.main --logdir runs/function_classes
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_dyn import CriticalPoints, classify_architecture
from lightning_dyn.data import SurfaceDataModule
from lightning_dyn.data.surfaces import CRITICAL_POINTS, SURFACES
from lightning_dyn.function_classes.critical_points import morse_kind
from lightning_dyn.models import SurfaceRegressor

ARCHITECTURES = {"narrow_mlp": "(a) MLP 2–2–2–1", "wide_mlp": "(b) MLP 2–32–1", "ode": "(c) NeuralODE on ℝ²",
                 "augmented_ode": "(d) AugmentedNeuralODE on ℝ³"}
BOX = [(-1.0, 1.0), (-1.0, 1.0)]


def sup_error(model: SurfaceRegressor, target: str) -> float:
    """max |g − target| on a 201 × 201 grid of the square and 4001 points of each edge."""
    axis = torch.linspace(-1.0, 1.0, 201)
    edge = torch.linspace(-1.0, 1.0, 4001)
    ones = torch.ones_like(edge)
    x = torch.cat([torch.cartesian_prod(axis, axis)] + [torch.stack(p, dim=1) for p in
                   ((edge, ones), (edge, -ones), (ones, edge), (-ones, edge))])
    with torch.no_grad():
        return float((model(x) - SURFACES[target](x)).abs().max())


#: hidden width of the wide MLP, and of the two neural ODEs' vector fields
WIDTH = {"narrow_mlp": 2, "wide_mlp": 32, "ode": 16, "augmented_ode": 16}


def fit(architecture: str, target: str, steps: int = 400, step_size: float = 0.125) -> dict:
    pl.seed_everything(0)
    model = SurfaceRegressor(architecture, width=WIDTH[architecture], step_size=step_size)
    before = classify_architecture(model)
    data = SurfaceDataModule(target)
    monitor = CriticalPoints(every_n_steps=200, box=BOX, starts=32, max_iter=30)
    trainer = pl.Trainer(max_steps=steps, callbacks=[monitor],
                         logger=TensorBoardLogger("runs", name="function_classes", version=f"{target}_{architecture}"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1)
    trainer.fit(model, data)
    x, y = data.dataset.tensors
    with torch.no_grad():
        mse = float(((model(x) - y) ** 2).mean())
    # the callback's fit-end search: critical points of the trained map, with index and certificate
    return {"mse": mse, "sup": sup_error(model, target), "before": before, "search": monitor.last_search}


def main(steps: int = 400, step_size: float = 0.125) -> dict:
    results = {(t, a): fit(a, t, steps, step_size) for t in CRITICAL_POINTS for a in ARCHITECTURES}
    for target, (where, index) in CRITICAL_POINTS.items():
        print(f"\n{target}: a {morse_kind(index, 2)} (index {index}) at {where}")
        print(f"  {'architecture':30s} {'theorem':20s} {'MSE':>9s} {'sup error':>9s}  critical points found")
        for architecture, name in ARCHITECTURES.items():
            r = results[(target, architecture)]
            points = r["search"]
            found = "none" if not points.count else "; ".join(
                f"index {int(i)} at ({p[0]:+.3f}, {p[1]:+.3f})" for i, p in zip(points.index, points.points.tolist()))
            print(f"  {name:30s} {r['before'].case.replace('_', ' '):20s} {r['mse']:9.2e} {r['sup']:9.3f}  {found}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="Adam steps per fit")
    parser.add_argument("--step-size", type=float, default=0.125, help="rk4 step of the two neural ODEs")
    args = parser.parse_args()
    main(args.steps, args.step_size)
