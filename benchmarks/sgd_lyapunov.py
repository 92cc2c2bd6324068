"""Cost of SGDLyapunov's measurement (issue 6 targets), on the CPU.

"gram": one measurement on a 1000-sample probe set of a ~100k-parameter MLP (64-300-256-10, tanh,
squared loss, 10 outputs: a 10,000-dimensional normal space): wall time and λ's standard error
for the single point (η, B), then with the stability diagram's grid (20 learning rates × 4 batch
sizes, plus the critical-lr refinement), and peak memory. "hvp": products per simulated step and
the steps a standard error of 0.01 needs, on a small MLP fitted to interpolation.

No peer computes this exponent (deep-lyapunov measures the divergence of perturbed training runs,
a different quantity), so the numbers stand alone.

    python benchmarks/sgd_lyapunov.py
"""

from __future__ import annotations

import resource
import time

import torch
from torch import nn

from lightning_dyn.data import digits_tensors
from lightning_dyn.dynamics import sgd_lyapunov


def half_mse(f, y):
    return 0.5 * ((f - y) ** 2).sum(1).mean()


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def gram() -> None:
    torch.manual_seed(0)
    x, y = digits_tensors(1000, targets="one_hot")
    model = nn.Sequential(nn.Linear(64, 300), nn.Tanh(), nn.Linear(300, 256), nn.Tanh(), nn.Linear(256, 10))
    params = sum(p.numel() for p in model.parameters())
    print(f"gram: MLP 64-300-256-10 ({params} parameters), probe set 1000 × 10 outputs, B = 32, lr = 0.05, "
          f"torch threads {torch.get_num_threads()}")
    for precision in (torch.float32, torch.float64):
        t = time.perf_counter()
        single = sgd_lyapunov(model, half_mse, (x, y), lr=0.05, batch_size=32, num_steps=1000, num_lrs=1,
                              dtype=precision)
        t_single = time.perf_counter() - t
        t = time.perf_counter()
        grid = sgd_lyapunov(model, half_mse, (x, y), lr=0.05, batch_size=32, num_steps=1000, num_lrs=20,
                            batch_sizes=[8, 16, 64], dtype=precision)
        t_grid = time.perf_counter() - t
        name = str(precision).replace("torch.", "")
        print(f"  {name}: single point {t_single:.1f} s (λ = {single.exponent:.3e} ± {single.stderr:.1e}, "
              f"dim N = {single.dim}); grid 20 lr × 4 B {t_grid:.1f} s = {t_grid / t_single:.2f}× the single point "
              f"(critical lr {grid.critical_lr:.4f}); peak RSS so far {peak_rss_gib():.2f} GiB")


def hvp() -> None:
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 4, dtype=torch.float64).view(-1, 1)
    y = torch.sin(3 * x)
    model = nn.Sequential(nn.Linear(1, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 1)).double()
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=2000, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = half_mse(model(x), y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    steps = 1000
    for lr in (0.05, 0.12):
        t = time.perf_counter()
        r = sgd_lyapunov(model, half_mse, (x, y), lr=lr, batch_size=2, method="hvp", num_steps=steps, num_lrs=1)
        seconds = time.perf_counter() - t
        simulated = (steps + min(100, steps // 10)) * (2 + (4 if r.critical_lr == r.critical_lr else 0))
        need = steps * (r.stderr / 0.01) ** 2
        g = sgd_lyapunov(model, half_mse, (x, y), lr=lr, batch_size=2, num_steps=4000, num_lrs=1)
        print(f"hvp: MLP 1-24-24-1 at interpolation (loss {r.loss:.1e}), B = 2, lr = {lr}: λ = {r.exponent:+.4f} ± "
              f"{r.stderr:.4f} (gram: {g.exponent:+.4f} ± {g.stderr:.4f}); {r.products} HVPs in {seconds:.1f} s "
              f"= {r.products / simulated:.1f} per simulated step per learning rate; SE 0.01 needs ≈ {need:.0f} steps")


if __name__ == "__main__":
    gram()
    hvp()
