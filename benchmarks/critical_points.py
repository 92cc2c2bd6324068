"""Critical points of trained-network-like maps: our batched Newton against scipy's root finder.

    python benchmarks/critical_points.py [--dims 2 4 8] [--repeats 3]

No library of the field finds the critical points of a network's input–output map; what a user
would otherwise write is a root finder run from each starting point: ``scipy.optimize.root``
(MINPACK's hybrid Powell method) on ∇ₓf with the input Hessian as its Jacobian, both by torch
autograd in float64, one start at a time. Both get the same scrambled-Sobol starts (64·n) on the
box [−2, 2]ⁿ; points are merged within 1e-4 of the box's diagonal, and a root counts when
‖∇ₓf‖ ≤ 1e-8 inside the box.

Problems: tanh MLPs n–64–1 with weights N(0, 9/fan_in) and biases N(0, 1) (augmented: critical
points exist), seed 0; and an AugmentedNeuralODE on ℝ³ (2 inputs, a tanh field of width 16, rk4
with h = 0.1, PyTorch's initialisation scaled ×4, seed 2). Prints, per problem, each method's
seconds (fastest of ``--repeats``), the critical points found, the Chao1 estimate of how many there are from the basins' hit counts,
the time ratio, how many both found, and how the union of everything found compares with ours at
four times the starts.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.optimize
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn import AugmentedNeuralODE, find_critical_points  # noqa: E402


def random_mlp(n: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(n, 64), nn.Tanh(), nn.Linear(64, 1))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.normal_(0.0, 3.0 / math.sqrt(layer.in_features))
            layer.bias.normal_(0.0, 1.0)
    return net.double()


def random_ode(seed: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    field = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in field.parameters():
            p.mul_(4.0)
    return AugmentedNeuralODE(field, 1, readout=nn.Linear(3, 1), solver="rk4", step_size=0.1).double()


def scipy_search(model: nn.Module, starts: np.ndarray, box: np.ndarray) -> np.ndarray:
    def f(x: torch.Tensor) -> torch.Tensor:
        return model(x.reshape(1, -1)).reshape(())

    def gradient(x: np.ndarray) -> np.ndarray:
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        return torch.autograd.grad(f(t), t)[0].numpy()

    def hessian(x: np.ndarray) -> np.ndarray:
        return torch.autograd.functional.hessian(f, torch.tensor(x, dtype=torch.float64)).numpy()

    found = []
    for x0 in starts:
        sol = scipy.optimize.root(gradient, x0, jac=hessian, method="hybr", options={"xtol": 1e-12})
        x = sol.x
        if np.all(x >= box[:, 0]) and np.all(x <= box[:, 1]) and np.linalg.norm(gradient(x)) <= 1e-8:
            found.append(x)
    return merge(np.array(found).reshape(-1, starts.shape[1]), box)


def merge(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    radius = 1e-4 * np.linalg.norm(box[:, 1] - box[:, 0])
    kept: list[np.ndarray] = []
    for p in points:
        if all(np.linalg.norm(p - q) > radius for q in kept):
            kept.append(p)
    return np.array(kept).reshape(-1, points.shape[1])


def shared(a: np.ndarray, b: np.ndarray, radius: float) -> int:
    return sum(1 for p in a if any(np.linalg.norm(p - q) <= radius for q in b))


def timed(fn, repeats: int):
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(name: str, model: nn.Module, n: int, repeats: int) -> None:
    box = np.array([[-2.0, 2.0]] * n)
    count = 64 * n
    starts = (box[:, 0] + torch.quasirandom.SobolEngine(n, scramble=True, seed=0).draw(count).double().numpy()
              * (box[:, 1] - box[:, 0]))
    ours_s, ours = timed(lambda: find_critical_points(model, box.tolist(), starts=count, seed=0), repeats)
    ref_s, ref = timed(lambda: scipy_search(model, starts, box), repeats)
    more_s, more = timed(lambda: find_critical_points(model, box.tolist(), starts=4 * count, seed=0), repeats)
    radius = 1e-4 * np.linalg.norm(box[:, 1] - box[:, 0])
    mine, many = ours.points.numpy(), more.points.numpy()
    union = merge(np.concatenate([mine, ref, many]), box)
    print(f"{name:34s} n={n:2d}\n"
          f"  ours,  {count:4d} starts: {ours_s:7.3f} s, {ours.count:3d} points (Chao1 estimate {ours.estimated_count:5.1f}; "
          f"{ours.backward_passes} backward passes over the batch)\n"
          f"  scipy, {count:4d} starts: {ref_s:7.3f} s, {len(ref):3d} points   time ratio scipy/ours {ref_s / ours_s:6.1f}×\n"
          f"  ours, {4 * count:5d} starts: {more_s:7.3f} s, {more.count:3d} points (Chao1 estimate "
          f"{more.estimated_count:5.1f})\n"
          f"  found by both at {count} starts: {shared(mine, ref, radius)}; all three together: {len(union)}; "
          f"of those, ours at 4× starts has {shared(union, many, radius)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, scipy {scipy.__version__}, {torch.get_num_threads()} threads, CPU")
    for n in args.dims:
        run(f"tanh MLP {n}–64–1", random_mlp(n), n, args.repeats)
    run("AugmentedNeuralODE ℝ²→ℝ³ (rk4)", random_ode(), 2, args.repeats)


if __name__ == "__main__":
    main()
