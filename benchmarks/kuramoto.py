"""Kuramoto simulation speed: the O(N) all-to-all path, the naive N×N form, a sparse graph.

    python benchmarks/kuramoto.py [--nodes 100000 --steps 1000]

1. All-to-all, Lorentzian γ = 0.5 (quantiles), K = 2, float64, ``steps`` RK4 steps of 0.05 through
   ``KuramotoNetwork.simulate`` (torchdiffeq), against a plain float64 torch RK4 loop over the
   complex order parameter (the pre-issue prototype); r averaged over the second half, theory
   √(1 − K_c/K) = 0.70711.
2. The naive dense N×N form (all-ones adjacency) at the largest N that fits comfortably, per step.
3. Sparse Erdős–Rényi, N nodes, mean degree 50 (CSR): time per step and adjacency memory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn.ensembles import erdos_renyi_sparse, natural_frequencies  # noqa: E402
from lightning_dyn.models import KuramotoNetwork, order_parameter  # noqa: E402


def plain_loop(omega, K, theta, steps, dt):
    """The straightforward float64 RK4 loop over the complex order parameter."""
    def f(th):
        z = torch.exp(1j * th).mean()
        return omega + K * (z * torch.exp(-1j * th)).imag

    rs = []
    for i in range(steps):
        k1 = f(theta)
        k2 = f(theta + 0.5 * dt * k1)
        k3 = f(theta + 0.5 * dt * k2)
        k4 = f(theta + dt * k3)
        theta = theta + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if i >= steps // 2:
            rs.append(float(order_parameter(theta)))
    return sum(rs) / len(rs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dense-nodes", type=int, default=10_000)
    args = parser.parse_args()
    n, steps, dt, K = args.nodes, args.steps, 0.05, 2.0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    omega = natural_frequencies(n, "lorentzian", 0.5)
    theta0 = torch.zeros(n, dtype=torch.float64)
    net = KuramotoNetwork(omega, K)
    t0 = time.perf_counter()
    _, theta = net.simulate(theta0, (0.0, steps * dt), step_size=dt, num_saves=steps + 1)
    ours = time.perf_counter() - t0
    r_ours = float(order_parameter(theta[steps // 2 + 1:]).mean())
    t0 = time.perf_counter()
    r_plain = plain_loop(omega, K, theta0, steps, dt)
    plain = time.perf_counter() - t0
    print(f"\n## 1. all-to-all, N = {n}, {steps} RK4 steps, float64 (theory r = {math.sqrt(1 - 1 / K):.5f})")
    print(f"KuramotoNetwork.simulate (O(N))   {ours:6.2f} s   r = {r_ours:.5f}")
    print(f"plain float64 complex RK4 loop    {plain:6.2f} s   r = {r_plain:.5f}   ratio ours/plain = {ours / plain:.2f}")

    m = args.dense_nodes
    w = natural_frequencies(m, "lorentzian", 0.5)
    th = torch.rand(m, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    fast, dense = KuramotoNetwork(w, K), KuramotoNetwork(w, K, torch.ones(m, m, dtype=torch.float64))
    t = torch.tensor(0.0)
    timings = {}
    for name, f in [("O(N)", fast), ("dense N×N", dense)]:
        f(t, th)
        t0 = time.perf_counter()
        for _ in range(20):
            f(t, th)
        timings[name] = (time.perf_counter() - t0) / 20
    err = float((fast(t, th) - dense(t, th)).abs().max())
    print(f"\n## 2. one vector-field evaluation, N = {m}: O(N) {timings['O(N)'] * 1e3:.3f} ms, "
          f"dense N×N {timings['dense N×N'] * 1e3:.1f} ms ({timings['dense N×N'] / timings['O(N)']:.0f}×), "
          f"max difference {err:.1e}")

    A = erdos_renyi_sparse(n, 50.0)
    sparse = KuramotoNetwork(omega, K, A)
    t0 = time.perf_counter()
    _, theta = sparse.simulate(theta0, (0.0, 20 * dt), step_size=dt, num_saves=2)
    per_step = (time.perf_counter() - t0) / 20
    nnz = A.values().numel()
    mem = nnz * (A.values().element_size() + A.col_indices().element_size()) + A.crow_indices().numel() * 8
    print(f"\n## 3. sparse Erdős–Rényi, N = {n}, mean degree {nnz / n:.1f}: {per_step * 1e3:.1f} ms per RK4 step, "
          f"adjacency {mem / 2**20:.0f} MiB (dense would be {n * n * 8 / 2**30:.0f} GiB)")


if __name__ == "__main__":
    main()
