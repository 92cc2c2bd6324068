"""The edge-of-stability workhorse: a tanh MLP trained with squared loss (Cohen et al. 2021).

``L = ½ · mean_n Σ_c (f_c(x_n) − y_nc)²`` on one-hot targets, optimised by (full-batch) SGD, heavy
ball, Nesterov or Adam as configured.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Sequence

import lightning.pytorch as pl
import torch
from torch import nn


class SquaredLossMLP(pl.LightningModule):
    """A tanh (or ReLU) MLP with squared loss and a configurable optimizer.

    Args:
        widths: layer widths, input first (default 64-200-200-10 for sklearn digits).
        activation: ``"tanh"`` or ``"relu"``.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate η.
        momentum: SGD momentum β (0: plain gradient descent).
        nesterov: Nesterov momentum (SGD).
        betas: Adam's (β1, β2).
        seed: initialisation seed.
        weight_variance: ``σ_w²``: weights drawn from ``N(0, σ_w²/fan_in)`` (the mean-field
            initialisation of Poole et al. 2016); ``None`` keeps PyTorch's default.
        bias_variance: ``σ_b²``: biases from ``N(0, σ_b²)`` when ``weight_variance`` is given.
    """

    def __init__(self, widths: Sequence[int] = (64, 200, 200, 10), activation: Literal["tanh", "relu"] = "tanh",
                 optimizer: Literal["sgd", "adam"] = "sgd", lr: float = 0.1, momentum: float = 0.0,
                 nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999), seed: int = 0,
                 weight_variance: Optional[float] = None, bias_variance: float = 0.0) -> None:
        super().__init__()
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.save_hyperparameters()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), act()]
        self.net = nn.Sequential(*layers[:-1])
        if weight_variance is not None:
            self._mean_field_init(weight_variance, bias_variance)
        torch.random.set_rng_state(generator_state)

    def _mean_field_init(self, weight_variance: float, bias_variance: float) -> None:
        if not weight_variance > 0 or not bias_variance >= 0:
            raise ValueError(f"need weight_variance > 0 and bias_variance >= 0, got {weight_variance}, {bias_variance}")
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    layer.weight.normal_(0.0, math.sqrt(weight_variance / layer.in_features))
                    layer.bias.normal_(0.0, math.sqrt(bias_variance))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def criterion(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``½ · mean_n Σ_c (f_c − y_c)²`` (what ``SGDLyapunov`` linearises)."""
        return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.criterion(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def configure_optimizers(self):
        h = self.hparams
        if h.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=h.lr, betas=tuple(h.betas))
        return torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum, nesterov=h.nesterov)
