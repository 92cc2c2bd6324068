"""Small models and exact dense Hessians (float64) for ground-truth checks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mlp(activation: type[nn.Module] = nn.Tanh, sizes=(6, 8, 3), dtype=torch.float64, seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def regression_data(n=20, d=6, c=3, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randn(n, c, generator=g, dtype=dtype)
    return x, y


def mse_loss(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


def cross_entropy_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def dense_hessian(model: nn.Module, loss_fn, batches) -> torch.Tensor:
    """Exact Hessian of the size-weighted mean loss, by torch.autograd.functional.hessian."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for _, p in model.named_parameters() if p.requires_grad]
    flat0 = torch.cat([p.detach().reshape(-1).double() for _, p in model.named_parameters() if p.requires_grad])
    sizes = [s.numel() for s in shapes]
    model64 = model.double()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model64

        def forward(self, b):
            return loss_fn(self.model, b)

    wrap = Wrap()
    n_total = sum(b[0].shape[0] for b in batches)

    def f(flat):
        params = {"model." + n: c.view(s) for n, c, s in zip(names, torch.split(flat, sizes), shapes)}
        return sum(torch.func.functional_call(wrap, params, (b,)) * b[0].shape[0] for b in batches) / n_total

    return torch.autograd.functional.hessian(f, flat0)


def fit_config_and_report(config: str, tmp_path, *overrides: str):
    """``lightning-dyn fit --config configs/<config>.yaml`` with overrides (a subprocess: the real
    entry point), then ``lightning-dyn report`` on the run it wrote (the same CLI in this process,
    sparing a second ~6 s Lightning import); returns (run directory, the report's stdout)."""
    import contextlib
    import io
    import subprocess
    import sys
    from pathlib import Path

    from lightning_dyn.cli import main

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "lightning_dyn.cli", "fit", "--config", str(root / "configs" / f"{config}.yaml"),
           *overrides, "--trainer.logger.init_args.save_dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next(tmp_path.rglob("events.out.tfevents.*")).parent
    # `fit` ends as `demo` does: the summary, where the logs are, a TensorBoard command that runs from
    # this interpreter (no PATH needed); and LightningCLI's "args is for Python use" warning is gone
    assert f"TensorBoard logs: {run_dir}" in done.stdout and "-m tensorboard.main --logdir" in done.stdout
    assert f"lightning-dyn report {run_dir}" in done.stdout
    assert "intended to run from within Python" not in done.stderr
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["report", str(run_dir)])
    return run_dir, out.getvalue()
