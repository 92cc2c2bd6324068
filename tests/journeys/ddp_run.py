"""One real 2-process CPU run (gloo) for ``test_ddp.py``: ``python -m tests.journeys.ddp_run STRATEGY OUT``.

A script, because ``strategy="ddp"`` starts the other rank by running the same command again. A
BatchNorm classifier trained with a real learning rate on different data per rank (Lightning's
distributed sampler), a NaN loss on rank 1 only at step 5, and the callbacks attached; every rank
writes what it measured and decided to ``OUT/rank<r>.json``, rank 0 also the final parameters.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, GradientExplosionMonitor, HessianSharpness, JacobianSpectrum, SGDLyapunov
from lightning_dyn.data import digits_tensors

NAN_STEP, NAN_RANK = 5, 1


class BatchNormClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                                 nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        poisoned = self.trainer.training and self.global_step + 1 == NAN_STEP and self.global_rank == NAN_RANK
        return loss * math.nan if poisoned else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def cross_entropy(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def dataset() -> TensorDataset:
    return TensorDataset(*digits_tensors(160, targets="index"))


def callbacks() -> dict[str, pl.Callback]:
    # the measurements take the loss without the poison: a NaN of the observed run is the monitor's business
    return {
        "sharpness": HessianSharpness(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=64, loss_fn=cross_entropy)),
        "eos": EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=64, loss_fn=cross_entropy), density_at_fit_end=False),
        "monitor": GradientExplosionMonitor(every_n_steps=2, action="skip"),
        "jacobian": JacobianSpectrum(every_n_steps=4, probe_size=6),
        "lyapunov": SGDLyapunov(every_n_steps=4, criterion=F.cross_entropy, probe_size=64, num_steps=40, num_lrs=2,
                                batch_sizes=[]),
    }


class Record(pl.Callback):
    def __init__(self, watched: dict, out: Path) -> None:
        self.watched, self.out = watched, out

    def on_train_end(self, trainer, pl_module) -> None:
        record = {name: {"history": cb.history, "events": cb.events} for name, cb in self.watched.items()}
        record["params"] = [p.detach().double().sum().item() for p in pl_module.parameters()]
        record["probe"] = [b[0].sum().item() for b in self.watched["sharpness"].batches]
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        if trainer.global_rank == 0:
            torch.save(pl_module.state_dict(), Path(self.out, "final.pt"))


def main(strategy: str, out: str) -> None:
    pl.seed_everything(0, verbose=False)
    module = BatchNormClassifier()
    watched = callbacks()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=8, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[*watched.values(), Record(watched, Path(out))])
    trainer.fit(module, DataLoader(dataset(), batch_size=16, shuffle=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
