"""The training setups the contract runs callbacks on: real Trainers, real data, small models."""

from __future__ import annotations

import lightning.pytorch
import pytorch_lightning
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn.data import digits_tensors


class _ContractMixin:
    """A small classifier on sklearn digits that stresses the contract: Dropout (global RNG),
    BatchNorm (running statistics), SGD with momentum (optimizer state), a shuffling loader."""

    def _build(self, dropout: float = 0.2, batchnorm: bool = True, lr: float = 0.05) -> None:
        layers: list[nn.Module] = [nn.Linear(64, 32)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(32))
        layers += [nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, 10)]
        self.net = nn.Sequential(*layers)
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class ContractModule(_ContractMixin, lightning.pytorch.LightningModule):
    def __init__(self, **kwargs):
        super().__init__()
        self._build(**kwargs)


class StandaloneContractModule(_ContractMixin, pytorch_lightning.LightningModule):
    def __init__(self, **kwargs):
        super().__init__()
        self._build(**kwargs)


def make_module(package: str = "lightning", **kwargs):
    return (ContractModule if package == "lightning" else StandaloneContractModule)(**kwargs)


def make_loader(n: int = 256, batch_size: int = 64, shuffle: bool = True) -> DataLoader:
    x, y = digits_tensors(n, targets="index")
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)
