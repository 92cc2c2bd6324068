"""Is the minimum SGD found stable for SGD — and up to which learning rate would it be?

An overparameterised tanh MLP (64-256-10, 19.2k parameters) is trained by SGD (η = 0.2, batch 10,
random reshuffling) on 50 sklearn digits with squared loss until it interpolates. ``SGDLyapunov``
measures once the loss falls below ``interpolation_tol`` and at the end: the top Lyapunov exponent
λ of SGD linearised there, GD's exponent, the Wu–Ma–E quantities and the critical learning rate
η_c for this batch size, with the stability diagram in TensorBoard. Then SGD restarts from that
minimum (nudged by 1e-6) at 0.8·η_c and 1.25·η_c: below, it stays; above, it is thrown off.

    python examples/sgd_stability.py            # 20 s on 2 CPU cores
    python -m tensorboard.main --logdir runs/sgd_stability     # scalars dyn/*, figure dyn/stability_diagram
    lightning-dyn report runs/sgd_stability     # the same diagram as a PNG
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_dyn import SGDLyapunov
from lightning_dyn.data import DigitsDataModule
from lightning_dyn.models import SquaredLossMLP

N, BATCH, LR = 50, 10, 0.2


def restart(model: SquaredLossMLP, data: DigitsDataModule, lr: float, epochs: int = 300) -> tuple[float, float]:
    """SGD from the minimum, nudged: distance travelled and largest full-batch loss on the way."""
    model = copy.deepcopy(model)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-6 * torch.randn(p.shape, generator=g))
    x, y = data.dataset.tensors
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    worst = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), BATCH):
            idx = perm[s:s + BATCH]
            opt.zero_grad()
            model.criterion(model(x[idx]), y[idx]).backward()
            opt.step()
        with torch.no_grad():
            worst = max(worst, model.criterion(model(x), y).item())
    end = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return (end - start).norm().item(), worst


def main(max_epochs: int = 1500) -> dict:
    pl.seed_everything(0)
    data = DigitsDataModule(n=N, batch_size=BATCH, shuffle=True)
    model = SquaredLossMLP(widths=(64, 256, 10), lr=LR)
    monitor = SGDLyapunov(every_n_steps=5000, interpolation_tol=1e-5, on_interpolation=True, probe_size=N,
                          batch_sizes=[2, 5, 25, 50], num_steps=2000)
    trainer = pl.Trainer(max_epochs=max_epochs, logger=TensorBoardLogger("runs", name="sgd_stability"),
                         callbacks=[monitor], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=50)
    trainer.fit(model, data)
    r = monitor.last
    print(f"\nat step {trainer.global_step}: probe loss {r.loss:.2e} (interpolating: {r.near_interpolation})")
    print(f"  SGD (η = {r.lr}, B = {r.batch_size}): λ = {r.exponent:+.4f} ± {r.stderr:.4f} -> "
          f"{'stable' if r.stable else 'unstable'}")
    print(f"  GD: μ = {r.gd_exponent:+.4f}; sharpness {r.sharpness:.2f} (2/η = {2 / r.lr:.1f})")
    print(f"  Wu–Ma–E: non-uniformity {r.nonuniformity:.2f}, mean-square {r.mean_square:.3f} "
          f"({'stable' if r.mean_square_stable else 'not stable'})")
    print(f"  critical learning rate for B = {r.batch_size}: η_c = {r.critical_lr:.4f}")
    outcome = {}
    for factor in (0.8, 1.25):
        distance, worst = restart(model, data, factor * r.critical_lr)
        outcome[factor] = (distance, worst)
        print(f"  SGD restarted at {factor}·η_c = {factor * r.critical_lr:.4f}: moved {distance:.2e}, "
              f"largest loss {worst:.2e}")
    return {"result": r, "restarts": outcome}


if __name__ == "__main__":
    main()
