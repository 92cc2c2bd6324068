"""GradientExplosionMonitor's overhead per training step, and JacobianSpectrum's cost (issue 5).

1. Overhead: real Lightning fits of an MLP (784-1024-1024-1024-10, batch 128, SGD with momentum,
   cross-entropy) and a small CNN (3 conv layers on 3×32×32, batch 64), on fixed synthetic data,
   with no monitor; with ``GradientExplosionMonitor`` logging every 50 steps (``action="none"``:
   one fused norm per step on the device, read back at the logged steps); the same with
   ``action="skip"`` (read back and decided at every step); the monitor logging every step; and
   Lightning's own ``grad_norm`` utility logged every step from ``on_before_optimizer_step`` (its
   documented use). The time per step is the mean interval between consecutive batch starts after
   a warm-up — everything the loop does, logging steps included. Variants are interleaved, in
   reversed order every other repeat (ABBA: a drift of the machine cancels), each repeated; the
   median and the best of the repeats; the ratio is to the run without a monitor.
   Machine noise between fits (±10% on a shared 2-core box) is larger than the 3% to be resolved,
   so the same runs also time the monitor's own hooks (and Lightning's ``grad_norm`` + ``log_dict``
   call) with ``perf_counter`` *inside* each run: hook seconds / step seconds of that run, free of
   the noise between runs. (On a GPU the hooks' device work is asynchronous; the end-to-end
   ratio is the one to read there.)
2. JacobianSpectrum: the seconds and JVP/VJP products of one measurement on 8 probe inputs of each
   model, exact (``method="dense"``, 10 outputs: 10 VJPs) and by Lanczos + Hutchinson (k = 3,
   tol 1e-3, 16 probes), next to the seconds of one training step.

    python benchmarks/gradient_explosion.py                 # CPU rows (2 cores here)
    python benchmarks/gradient_explosion.py --device cuda   # GPU rows
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import grad_norm
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import GradientExplosionMonitor, jacobian_spectrum


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 8 * 8, 10))


PROBLEMS = {"mlp": (mlp, (1, 28, 28), 128), "cnn": (cnn, (3, 32, 32), 64)}


class Classifier(pl.LightningModule):
    def __init__(self, net: nn.Module, lightning_grad_norm: bool = False) -> None:
        super().__init__()
        self.net, self.lightning_grad_norm = net, lightning_grad_norm
        self.hook_seconds = 0.0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def on_before_optimizer_step(self, optimizer):
        if self.lightning_grad_norm:  # Lightning's documented recipe, every step
            start = time.perf_counter()
            self.log_dict(grad_norm(self, norm_type=2))
            self.hook_seconds += time.perf_counter() - start

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


class TimedMonitor(GradientExplosionMonitor):
    """The monitor with the time spent in its hooks accumulated."""

    hook_seconds = 0.0


def _timed(name: str):
    def hook(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return getattr(GradientExplosionMonitor, name)(self, *args, **kwargs)
        finally:
            self.hook_seconds += time.perf_counter() - start
    return hook


for _name in ("on_train_batch_start", "on_before_backward", "on_before_optimizer_step", "on_train_batch_end"):
    setattr(TimedMonitor, _name, _timed(_name))


class StepTimer(pl.Callback):
    """Intervals between consecutive batch starts (synchronised on CUDA)."""

    def __init__(self, device: str) -> None:
        self.starts: list[float] = []
        self.device = device

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())


def fit_time(problem: str, variant: str, steps: int, warmup: int, device: str) -> tuple[float, float]:
    """Mean seconds per step after ``warmup`` steps, and the fraction of it spent in the monitor's
    (or Lightning grad_norm's) hooks in the same run."""
    build, shape, batch = PROBLEMS[problem]
    torch.manual_seed(0)
    x = torch.randn(batch * 10, *shape)
    y = torch.randint(0, 10, (batch * 10,))
    module = Classifier(build(), lightning_grad_norm=variant == "lightning grad_norm, every step")
    callbacks: list = []
    if variant.startswith("monitor"):
        every = 1 if "every step" in variant else 50
        callbacks.append(TimedMonitor(every_n_steps=every, action="skip" if "skip" in variant else "none"))
    timer = StepTimer(device)
    trainer = pl.Trainer(max_steps=steps + warmup + 1, accelerator=device, devices=1, log_every_n_steps=50,
                         logger=pl.loggers.CSVLogger("/tmp/bench_gradient_explosion"), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks + [timer])
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True))
    intervals = [b - a for a, b in zip(timer.starts[warmup:], timer.starts[warmup + 1:])]
    hooks = callbacks[0].hook_seconds if callbacks else module.hook_seconds
    return sum(intervals) / len(intervals), hooks / (timer.starts[-1] - timer.starts[0])


VARIANTS = ["no monitor", "monitor, every 50 (log)", "monitor, every 50 (skip)", "monitor, every step",
            "lightning grad_norm, every step"]


def overhead(problem: str, steps: int, repeats: int, device: str) -> None:
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    shares: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for repeat in range(repeats):  # order reversed every other repeat (ABBA), so a drift of the machine cancels
        for variant in (VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]):
            seconds, share = fit_time(problem, variant, steps, 10, device)
            times[variant].append(seconds)
            shares[variant].append(share)
    base, best = statistics.median(times["no monitor"]), min(times["no monitor"])
    print(f"\n{problem} ({device}, {torch.get_num_threads()} threads): {steps} steps × {repeats} interleaved repeats")
    print(f"{'variant':34s} {'ms/step':>8s} {'ratio':>6s} {'best':>6s} {'ratio':>6s} {'in-run hooks':>13s}   (repeats, ms)")
    for variant in VARIANTS:
        t, b = statistics.median(times[variant]), min(times[variant])
        spread = ", ".join(f"{1e3 * v:.1f}" for v in times[variant])
        share = f"{100 * statistics.median(shares[variant]):.2f}%" if variant != "no monitor" else ""
        print(f"{variant:34s} {1e3 * t:8.2f} {t / base:6.3f} {1e3 * b:6.2f} {b / best:6.3f} {share:>13s}   ({spread})")


def jacobian_cost(problem: str, device: str) -> None:
    build, shape, batch = PROBLEMS[problem]
    torch.manual_seed(0)
    model = build().to(device).eval()
    inputs = torch.randn(8, *shape, device=device)
    print(f"\nJacobianSpectrum, {problem} ({device}), 8 probe inputs:")
    for method in ("dense", "lanczos"):
        jacobian_spectrum(model, inputs, k=3, method=method)  # warm-up
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            result = jacobian_spectrum(model, inputs, k=3, method=method, generator=torch.Generator().manual_seed(0))
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        print(f"  {method:8s} {best:7.3f} s   {result.num_jvps} JVPs, {result.num_vjps} VJPs   "
              f"σ_max {result.sigma_max:.5g}, ⟨σ²⟩ {result.msv:.4g} ± {result.msv_stderr:.2g}")
    step, _ = fit_time(problem, "no monitor", 20, 5, device)
    print(f"  one training step (batch {batch}): {step:.4f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--only", choices=["overhead", "jacobian"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    fit_time("mlp", "no monitor", 20, 5, args.device)  # warm-up: the first fit of a process is slower
    for problem in PROBLEMS:
        if args.only != "jacobian":
            overhead(problem, args.steps, args.repeats, args.device)
        if args.only != "overhead":
            jacobian_cost(problem, args.device)


if __name__ == "__main__":
    main()
