"""A LightningModule fitting a scalar map of a few inputs with one of four architectures.

The four are the cases of the critical-point theorem (Kuehn & Kuntz, arXiv:2405.09351):

- ``"narrow_mlp"``: tanh MLP n–n–n–1, widths never increase: no critical points possible;
- ``"wide_mlp"``: tanh MLP n–width–1, augmented without a bottleneck: Morse for generic weights;
- ``"ode"``: a ``NeuralODE`` on ℝⁿ with a linear read-out: no critical points possible;
- ``"augmented_ode"``: an ``AugmentedNeuralODE`` on ℝⁿ⁺¹ with a linear read-out: Morse generically.

The network is ``self.net``, so ``classify_architecture(module)`` and the ``CriticalPoints``
callback find it.
"""

from __future__ import annotations

from typing import Literal, Optional

import lightning.pytorch as pl
import torch
from torch import nn

from .neural_ode import AugmentedNeuralODE, NeuralODE
from .regressor import TimeField

ARCHITECTURES = ("narrow_mlp", "wide_mlp", "ode", "augmented_ode")


class SurfaceRegressor(pl.LightningModule):
    """Fit ``x ↦ g(x)`` (``n`` inputs, one output) by mean squared error with Adam.

    Args:
        architecture: ``"narrow_mlp"``, ``"wide_mlp"``, ``"ode"`` or ``"augmented_ode"`` (module docstring).
        input_dim: ``n``.
        width: hidden width of the wide MLP and of the ODEs' vector fields.
        horizon: the ODEs integrate over ``[0, horizon]``.
        solver: the ODE solver (a fixed-step one needs ``step_size``).
        step_size: step of fixed-step solvers.
        lr: Adam's learning rate.
        seed: initialisation seed.
    """

    def __init__(self, architecture: Literal["narrow_mlp", "wide_mlp", "ode", "augmented_ode"] = "wide_mlp",
                 input_dim: int = 2, width: int = 32, horizon: float = 1.0, solver: str = "rk4",
                 step_size: Optional[float] = 0.1, lr: float = 1e-2, seed: int = 0) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        self.save_hyperparameters()
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        n, ode = input_dim, {"t_span": (0.0, float(horizon)), "solver": solver, "step_size": step_size}
        if architecture == "narrow_mlp":
            self.net: nn.Module = nn.Sequential(nn.Linear(n, n), nn.Tanh(), nn.Linear(n, n), nn.Tanh(), nn.Linear(n, 1))
        elif architecture == "wide_mlp":
            self.net = nn.Sequential(nn.Linear(n, width), nn.Tanh(), nn.Linear(width, 1))
        elif architecture == "ode":
            self.net = nn.Sequential(NeuralODE(TimeField(n, width), **ode), nn.Linear(n, 1))
        else:
            self.net = AugmentedNeuralODE(TimeField(n + 1, width), 1, readout=nn.Linear(n + 1, 1), **ode)
        torch.random.set_rng_state(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self(x) - y) ** 2).mean()
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
