"""Scalar maps on [−1, 1] that separate what continuous-depth models can represent (Dupont et al. 2019).

``"negate"``: x ↦ −x, which no 1-D ODE flow represents (flows are increasing). ``"square"``:
x ↦ x², which an increasing map approximates with sup-error ≥ 0.5 at best (it must have
φ(−1) ≤ φ(0), against targets 1 and 0).
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import torch
from sklearn.isotonic import isotonic_regression
from torch.utils.data import DataLoader, TensorDataset

TARGETS = {"negate": lambda x: -x, "square": lambda x: x**2}


def map_tensors(target: Literal["negate", "square"], n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` equispaced points of [−1, 1] (shape ``(n, 1)``) and their images."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {tuple(TARGETS)}, got {target!r}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    x = torch.linspace(-1.0, 1.0, n).unsqueeze(1)
    return x, TARGETS[target](x)


def monotone_floor(target: Literal["negate", "square"], n: int = 64) -> float:
    """The smallest mean squared error any non-decreasing map attains on these points: that of the
    isotonic regression of the targets (pool-adjacent-violators, scikit-learn's)."""
    x, y = map_tensors(target, n)
    fit = torch.as_tensor(isotonic_regression(y.reshape(-1).double().numpy(), increasing=True))
    return float(((fit - y.reshape(-1).double()) ** 2).mean())


class MapDataModule(pl.LightningDataModule):
    """One full batch of :func:`map_tensors`.

    Args:
        target: ``"negate"`` or ``"square"``.
        n: number of points.
    """

    def __init__(self, target: Literal["negate", "square"] = "negate", n: int = 64) -> None:
        super().__init__()
        self.target, self.n = target, n

    def setup(self, stage: str | None = None) -> None:
        self.dataset = TensorDataset(*map_tensors(self.target, self.n))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.n)
