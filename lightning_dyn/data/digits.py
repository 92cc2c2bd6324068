"""sklearn's bundled 8×8 digits (1797 images), standardised, as tensors or a LightningDataModule.

The edge-of-stability setting of Cohen et al. (2021) in miniature: the first ``n`` images,
features standardised to zero mean and unit variance, targets one-hot (for squared loss) or class
indices (for cross-entropy).
"""

from __future__ import annotations

from typing import Literal, Optional

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset


def digits_tensors(
    n: int = 1000, *, targets: Literal["one_hot", "index"] = "one_hot", dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` digits: inputs ``(n, 64)`` standardised per feature, and targets."""
    if not 1 <= n <= 1797:
        raise ValueError(f"n must be between 1 and 1797 (the size of sklearn's digits), got {n}")
    if targets not in ("one_hot", "index"):
        raise ValueError(f"targets must be 'one_hot' or 'index', got {targets!r}")
    data = load_digits()
    x = torch.as_tensor(data.data[:n], dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-8)
    y = torch.as_tensor(data.target[:n], dtype=torch.long)
    if targets == "one_hot":
        return x.to(dtype), torch.nn.functional.one_hot(y, 10).to(dtype)
    return x.to(dtype), y


class DigitsDataModule(pl.LightningDataModule):
    """sklearn digits as a datamodule; ``batch_size=None`` means full batch (gradient descent).

    Args:
        n: number of images used (the first ``n``).
        batch_size: mini-batch size, or ``None`` for the full batch.
        targets: ``"one_hot"`` (squared loss) or ``"index"`` (cross-entropy).
        shuffle: reshuffle every epoch (random reshuffling); off for full batch.
        corrupt: indices of samples whose first pixel is set to NaN (to watch a NaN guard act).
    """

    def __init__(self, n: int = 1000, batch_size: int | None = None,
                 targets: Literal["one_hot", "index"] = "one_hot", shuffle: bool = False,
                 corrupt: Optional[list[int]] = None) -> None:
        super().__init__()
        self.n, self.batch_size, self.targets, self.shuffle = n, batch_size, targets, shuffle
        self.corrupt = list(corrupt or [])
        if any(not 0 <= i < n for i in self.corrupt):
            raise ValueError(f"corrupt indices must lie in [0, {n}), got {self.corrupt}")

    def setup(self, stage: str | None = None) -> None:
        x, y = digits_tensors(self.n, targets=self.targets)
        x[self.corrupt, 0] = float("nan")
        self.dataset = TensorDataset(x, y)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size or self.n, shuffle=self.shuffle)
