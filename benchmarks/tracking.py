"""Tracking the top Hessian eigenvalue along training: ours against the peers, side by side.

    python benchmarks/tracking.py [--steps 3000 --every 50 --tol 1e-3 --device cpu]
    bash benchmarks/gpu_tracking.sh        # the same on a lent GPU machine

Nothing is installed at run time: hessian-eigenthings comes from the ``bench`` extra.

1. **Along the demo** (tanh MLP 64-200-200-10, 1000 sklearn digits, full-batch GD at η = 0.1, which
   sharpens progressively and reaches the edge of stability at step ~1850). Every ``--every`` steps
   the top eigenvalue is measured by each method on the *same* float32 Hessian-vector product (our
   double-backward operator; hessian-eigenthings' solvers get it through its ``LambdaOperator``), and
   compared with float64 ARPACK (``eigsh``, tol 1e-10):

   * ours: :class:`~lightning_dyn.curvature.EigenTracker` (warm block start with a guard vector,
     stopped by the error bound at ``--tol``, cold every 10th measurement);
   * a warm power iteration from the previous vector, as Ramasinghe et al. (arXiv:2606.16768) track
     the top eigenvalue every iteration — hessian-eigenthings' ``power_iteration_one(init=...)`` —
     at *our* number of products, and with its own stopping rule at ``--tol``;
   * hessian-eigenthings' ``lanczos(k=1)`` and power iteration, cold, at our number of products;
   * critical sharpness (Kalra et al., arXiv:2601.16979, implemented from the paper): ``2/η_c`` with
     ``η_c`` the step along the update at which the loss returns to its value, found by doubling and
     bisection in 6 forward passes; it is the curvature along the update, not ``λ_max``;
   * our per-step update sharpness (the secant ``dᵀ(g_{t+1} − g_t)/dᵀd`` of consecutive training
     gradients: no product).

   Costs in gradient evaluations of the probe: a product 2, a forward pass 1/3 (measured below).
2. **Cold, tol 1e-4**, on the digits MLP at initialisation and after 20 SGD steps: ours, hessian-
   eigenthings' ``lanczos`` at our number of products (it runs a fixed number of steps), scipy's
   ``eigsh`` at tol 1e-4.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn.curvature import EigenTracker, HessianOperator, top_eigenpairs  # noqa: E402
from lightning_dyn.data import DigitsDataModule  # noqa: E402
from lightning_dyn.models import SquaredLossMLP  # noqa: E402


def loss_fn(module, batch):
    return module.criterion(module(batch[0]), batch[1])


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def reference(module, batch) -> float:
    op = HessianOperator(module, loss_fn, [batch], dtype=torch.float64)
    matvec = lambda v: op.matvec(torch.from_numpy(np.asarray(v).ravel()).to(op.device)).cpu().numpy()  # noqa: E731
    return float(eigsh(LinearOperator((op.size, op.size), matvec=matvec, dtype=np.float64), k=1, which="LA",
                       tol=1e-10)[0][0])


def critical_sharpness(module, batch, update: torch.Tensor, lr: float, passes: int = 6) -> float:
    """``2/(lr·c)`` with ``c`` the multiple of the update at which the loss returns to its value."""
    params = list(module.parameters())
    start = flat(params).clone()

    @torch.no_grad()
    def loss_at(c: float) -> float:
        torch.nn.utils.vector_to_parameters(start + c * update, params)
        return float(loss_fn(module, batch))

    base = loss_at(0.0)
    lo, hi, used = 0.0, 1.0, 1
    while loss_at(hi) <= base and used < passes:  # doubling until the loss rises
        lo, hi, used = hi, 2 * hi, used + 1
    while used < passes:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if loss_at(mid) <= base else (lo, mid)
        used += 1
    torch.nn.utils.vector_to_parameters(start, params)
    return 2.0 / (lr * (lo + hi) / 2)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def demo_batch(device):
    dm = DigitsDataModule(n=1000)
    dm.setup()
    return [t.to(device) for t in next(iter(dm.train_dataloader()))]


def along_the_demo(args) -> None:
    import hessian_eigenthings as he

    torch.manual_seed(0)
    batch = demo_batch(args.device)
    module = SquaredLossMLP(lr=0.1).to(args.device)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    tracker = EigenTracker(tol=args.tol, cold_every=10, seed=0)
    rows: dict[str, list[tuple[float, float, float]]] = {}  # method → (error, gradients, seconds)
    previous_vector = None
    kept = None  # (θ, g) of the previous step, for the secant
    per_product, per_forward = [], []

    def record(name, value, ref, gradients, seconds):
        rows.setdefault(name, []).append((abs(value - ref) / ref, gradients, seconds))

    for step in range(args.steps + 1):
        opt.zero_grad()
        loss_fn(module, batch).backward()
        theta, grad = flat(module.parameters()), flat(p.grad for p in module.parameters())
        secant = None
        if kept is not None:
            d = theta - kept[0]
            secant = float(d @ (grad - kept[1]) / (d @ d))
        kept = (theta.clone(), grad.clone())
        if step and step % args.every == 0:
            ref = reference(module, batch)
            op = HessianOperator(module, loss_fn, [batch])
            result, seconds = timed(lambda: tracker.measure(lambda known: op))
            n = result.num_matvecs
            per_product.append(seconds / n)
            record("ours: EigenTracker (warm, bound-stopped)" + (" [cold]" if tracker.last_cold else ""),
                   float(result.values[0]), ref, 2 * n, seconds)
            shared = HessianOperator(module, loss_fn, [batch])
            lam = he.LambdaOperator(shared.matvec, shared.size, device=args.device)
            if previous_vector is not None:
                (value, *_), s = timed(lambda: he.power_iteration_one(lam, max_iter=n, tol=0.0,
                                                                      init=previous_vector))
                record("warm power iteration, our products (Ramasinghe et al.)", value, ref, 2 * n, s)
                before = shared.num_matvecs
                (value, vector, _, iters, _), s = timed(lambda: he.power_iteration_one(
                    lam, max_iter=100, tol=args.tol, init=previous_vector))
                record(f"warm power iteration, its own stop at tol {args.tol:g}", value, ref,
                       2 * (shared.num_matvecs - before), s)
            res, s = timed(lambda: he.lanczos(lam, k=1, max_iter=max(n, 2), which="LA", seed=step))
            record("hessian-eigenthings lanczos, cold, our products", float(res.eigenvalues[0]), ref, 2 * n, s)
            (value, *_), s = timed(lambda: he.power_iteration_one(lam, max_iter=n, tol=0.0, seed=step))
            record("hessian-eigenthings power iteration, cold, our products", value, ref, 2 * n, s)
            previous_vector = result.vectors[:, 0].clone()
            value, s = timed(lambda: critical_sharpness(module, batch, -0.1 * grad, 0.1))
            per_forward.append(s / 6)
            # the curvature along the update is λ_max only where the iterate oscillates along the top
            # eigenvector: at the edge of stability (λ_max ≥ 0.9·2/η); before, it is far below
            edge = " — at the edge (λ_max ≥ 0.9·2/η)" if ref >= 0.9 * 2 / 0.1 else " — below the edge"
            record("critical sharpness (Kalra et al.), 6 forward passes" + edge, value, ref, 6 / 3, s)
            if secant is not None:
                record("ours: update sharpness (secant, per step)" + edge, secant, ref, 0.0, 0.0)
        opt.step()

    print(f"## Tracking λ_max along the demo ({args.steps} steps of GD, a measurement every {args.every}; "
          f"tol {args.tol:g}; error relative to float64 ARPACK)\n")
    print(f"one product {statistics.median(per_product) * 1e3:.1f} ms, one forward pass "
          f"{statistics.median(per_forward) * 1e3:.1f} ms (medians)\n")
    print("| method | measurements | median error | max error | beyond tol | median gradient evals | total s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, values in rows.items():  # our cold measurements counted apart from the warm ones
        errors = [e for e, _, _ in values]
        print(f"| {name} | {len(values)} | {statistics.median(errors):.1e} | {max(errors):.1e} | "
              f"{sum(e > args.tol for e in errors)} | {statistics.median(g for _, g, _ in values):g} | "
              f"{sum(s for _, _, s in values):.2f} |")
    warm = [g / 2 for g in (g for _, g, _ in rows.get("ours: EigenTracker (warm, bound-stopped)", []))]
    print(f"\nours, warm: median {statistics.median(warm):g} products, mean {statistics.mean(warm):.2f}")


def cold(args) -> None:
    import hessian_eigenthings as he

    torch.manual_seed(0)
    batch = demo_batch(args.device)
    print("\n## Cold, tol 1e-4, on the digits MLP (seeds 0-2 of the start vector)\n")
    print("| state | method | products | error |")
    print("| --- | --- | --- | --- |")
    for steps in (0, 20):
        module = SquaredLossMLP(lr=0.1).to(args.device)
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(module, batch).backward()
            opt.step()
        ref = reference(module, batch)
        for seed in range(3):
            op = HessianOperator(module, loss_fn, [batch])
            r = top_eigenpairs(op, tol=1e-4, generator=torch.Generator().manual_seed(seed))
            print(f"| {steps} SGD steps | ours | {r.num_matvecs} | {abs(float(r.values[0]) - ref) / ref:.1e} |")
            op = HessianOperator(module, loss_fn, [batch])
            # its lanczos runs a fixed number of steps (its tol only labels convergence): give it ours
            res = he.lanczos(he.LambdaOperator(op.matvec, op.size, device=args.device), k=1, max_iter=r.num_matvecs, tol=1e-4,
                             which="LA", seed=seed)
            print(f"| {steps} SGD steps | hessian-eigenthings lanczos, our products | {op.num_matvecs} | "
                  f"{abs(float(res.eigenvalues[0]) - ref) / ref:.1e} |")
            op = HessianOperator(module, loss_fn, [batch])
            v0 = np.random.default_rng(seed).standard_normal(op.size)
            matvec = lambda v: op.matvec(  # noqa: E731
                torch.from_numpy(np.asarray(v, dtype=np.float32).ravel()).to(op.device)).cpu().numpy()
            value = eigsh(LinearOperator((op.size, op.size), matvec=matvec, dtype=np.float32), k=1, which="LA",
                          tol=1e-4, v0=v0)[0][0]
            print(f"| {steps} SGD steps | scipy eigsh | {op.num_matvecs} | {abs(float(value) - ref) / ref:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"device {args.device}, {torch.get_num_threads()} CPU threads\n")
    along_the_demo(args)
    cold(args)


if __name__ == "__main__":
    main()
