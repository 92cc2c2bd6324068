"""Top Hessian eigenvalues of a tanh MLP trained on sklearn digits — the curvature engine alone.

Trains a 64-200-200-10 tanh MLP with full-batch gradient descent (η = 0.1, squared loss
½·mean_n Σ_c (f−y)²) for a few hundred steps and measures, every 100 steps, the top three
Hessian eigenvalues with a warm-started Lanczos, printing the products each measurement took.
Gradient descent is stable only while the sharpness stays below 2/η = 20 (Cohen et al. 2021).

    python examples/digits_curvature.py [--steps 300]
"""

import argparse
import time

import torch
from torch import nn

from lightning_dyn.curvature import HessianOperator, top_eigenpairs, trace
from lightning_dyn.data import digits_tensors


def squared_loss(model, batch):
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).sum(dim=1).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = digits_tensors(1000)
    model = nn.Sequential(nn.Linear(64, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    print(f"tanh MLP, {sum(p.numel() for p in model.parameters())} parameters; GD at eta={args.lr} "
          f"(stable while sharpness < 2/eta = {2 / args.lr:g})")
    previous = None
    for step in range(args.steps + 1):
        if step % 100 == 0:
            t0 = time.perf_counter()
            op = HessianOperator(model, squared_loss, [(x, y)])
            result = top_eigenpairs(op, k=3, tol=1e-4, init=previous)
            previous = result
            tr = trace(HessianOperator(model, squared_loss, [(x, y)]), 30)
            eig = ", ".join(f"{v:.4f}" for v in result.values.tolist())
            print(f"step {step:4d}  loss {float(squared_loss(model, (x, y)).detach()):.4f}  top eigenvalues [{eig}]  "
                  f"({result.num_matvecs} HVPs{' warm' if step else ' cold'}, {time.perf_counter() - t0:.2f} s)  "
                  f"trace {tr.value:.1f} ± {tr.stderr:.1f}")
        if step < args.steps:
            opt.zero_grad()
            squared_loss(model, (x, y)).backward()
            opt.step()


if __name__ == "__main__":
    main()
