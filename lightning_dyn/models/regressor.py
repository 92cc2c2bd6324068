"""A LightningModule that fits a scalar map with a continuous-depth layer and logs its solver.

The layer's ``stats`` are logged every step: ``solver/nfe_forward`` and ``solver/steps_forward``
after the forward pass (in ``training_step``), ``solver/nfe_backward`` after the backward pass (in
``on_before_optimizer_step``, where the adjoint's evaluations have happened). Copy these few lines
to log any ``NeuralODE``/``NeuralDDE`` inside your own module.
"""

from __future__ import annotations

from typing import Literal, Optional

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from .neural_dde import NeuralDDE
from .neural_ode import AugmentedNeuralODE, NeuralODE


def _linear(a: int, b: int, lipschitz: bool) -> nn.Module:
    layer = nn.Linear(a, b)
    return spectral_norm(layer) if lipschitz else layer


class TimeField(nn.Module):
    """``ż = MLP([z, t])`` (tanh)."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, t.expand(z.shape[0], 1).to(z)], dim=1))


class DelayField(nn.Module):
    """``ẏ = K · g(y(t), y(t − τ))`` with ``g`` an MLP; with ``lipschitz=K`` every linear map is
    spectrally normalised, so ``g`` is 1-Lipschitz (tanh is) and the field ``K``-Lipschitz."""

    def __init__(self, dim: int, width: int, lipschitz: Optional[float]) -> None:
        super().__init__()
        lip = lipschitz is not None
        self.scale = 1.0 if lipschitz is None else float(lipschitz)
        self.net = nn.Sequential(_linear(2 * dim, width, lip), nn.Tanh(), _linear(width, width, lip), nn.Tanh(),
                                 _linear(width, dim, lip))

    def forward(self, t: torch.Tensor, y: torch.Tensor, delayed: list[torch.Tensor]) -> torch.Tensor:
        return self.scale * self.net(torch.cat([y, delayed[0]], dim=1))


class ContinuousDepthRegressor(pl.LightningModule):
    """Fit ``x ↦ g(x)`` (scalar) with a NeuralODE, an AugmentedNeuralODE or a NeuralDDE.

    Args:
        layer: ``"ode"`` (1-D flow), ``"augmented_ode"`` (``augment_dims`` extra channels) or ``"dde"``.
        width: hidden width of the vector field.
        augment_dims: extra channels of ``"augmented_ode"``.
        delay: τ of ``"dde"``.
        lipschitz: Lipschitz bound K of the ``"dde"`` field (``None``: unconstrained).
        horizon: integrate over ``[0, horizon]``.
        solver: the solver (``"dopri5"`` or a fixed-step one for the ODEs; ``"rk4"``, … for the DDE).
        step_size: step of fixed-step solvers.
        lr: Adam's learning rate.
        seed: initialisation seed.
    """

    def __init__(self, layer: Literal["ode", "augmented_ode", "dde"] = "ode", width: int = 32, augment_dims: int = 1,
                 delay: float = 1.0, lipschitz: Optional[float] = None, horizon: float = 1.0,
                 solver: str = "dopri5", step_size: Optional[float] = None, lr: float = 1e-2, seed: int = 0) -> None:
        super().__init__()
        if layer not in ("ode", "augmented_ode", "dde"):
            raise ValueError(f"layer must be 'ode', 'augmented_ode' or 'dde', got {layer!r}")
        self.save_hyperparameters()
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        span = (0.0, float(horizon))
        if layer == "ode":
            self.flow: nn.Module = NeuralODE(TimeField(1, width), t_span=span, solver=solver, step_size=step_size)
        elif layer == "augmented_ode":
            self.flow = AugmentedNeuralODE(TimeField(1 + augment_dims, width), augment_dims, t_span=span,
                                           solver=solver, step_size=step_size)
        else:
            self.flow = NeuralDDE(DelayField(1, width, lipschitz), [delay], t_span=span,
                                  solver="rk4" if solver == "dopri5" else solver, step_size=step_size or 0.1)
        torch.random.set_rng_state(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with parametrize.cached():  # spectral norms computed once per solve, not once per evaluation
            return self.flow(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self(x) - y) ** 2).mean()
        self.log("train_loss", loss, prog_bar=True)
        stats = self.flow.stats
        self.log("solver/nfe_forward", float(stats["nfe_forward"]))
        self.log("solver/steps_forward", float(stats["steps_forward"]))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if "nfe_backward" in self.flow.stats:
            self.log("solver/nfe_backward", float(self.flow.stats["nfe_backward"]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
