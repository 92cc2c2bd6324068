"""Scalar maps on [−1, 1]² with an interior critical point, to see which architectures can fit one.

``"saddle"``: x₁² − x₂² (a saddle at the origin, Morse index 1); ``"peak"``: 1 − x₁² − x₂² (an
interior maximum, index 2). A map without critical points — an MLP whose widths never increase, a
neural ODE on its input space (Kuehn & Kuntz, arXiv:2405.09351) — cannot fit either exactly: for
the peak, such a map attains its maximum on the boundary of the square, where the target is ≤ 0,
while the target is 1 in the middle.
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

SURFACES = {"saddle": lambda x: x[:, :1] ** 2 - x[:, 1:2] ** 2,
            "peak": lambda x: 1.0 - x[:, :1] ** 2 - x[:, 1:2] ** 2}
#: where each surface's critical point is and its Morse index
CRITICAL_POINTS = {"saddle": ((0.0, 0.0), 1), "peak": ((0.0, 0.0), 2)}


def surface_tensors(target: Literal["saddle", "peak"], n: int = 21) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n × n`` grid of [−1, 1]² (shape ``(n², 2)``) and the target's values (``(n², 1)``)."""
    if target not in SURFACES:
        raise ValueError(f"target must be one of {tuple(SURFACES)}, got {target!r}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    axis = torch.linspace(-1.0, 1.0, n)
    x = torch.cartesian_prod(axis, axis)
    return x, SURFACES[target](x)


class SurfaceDataModule(pl.LightningDataModule):
    """One full batch of :func:`surface_tensors`.

    Args:
        target: ``"saddle"`` or ``"peak"``.
        n: grid points per axis.
    """

    def __init__(self, target: Literal["saddle", "peak"] = "saddle", n: int = 21) -> None:
        super().__init__()
        self.target, self.n = target, n

    def setup(self, stage: str | None = None) -> None:
        self.dataset = TensorDataset(*surface_tensors(self.target, self.n))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.n**2)
