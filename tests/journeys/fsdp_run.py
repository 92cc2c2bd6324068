"""One real sharded run for ``test_fsdp.py``: ``python -m tests.journeys.fsdp_run MODEL OUT [bare]``.

Lightning's ``ModelParallelStrategy`` (2 CPU processes, gloo) with FSDP2: ``fully_shard`` on every
block and on the root in ``configure_model``, so every parameter is a DTensor holding half of its
rows on each rank. ``MODEL`` is ``gpt`` (a GPT-2 from a ``transformers`` config, SDPA attention,
tied embeddings, AdamW: EdgeOfStability, HessianSharpness, GradientExplosionMonitor) or ``mlp``
(a tanh MLP under SGD with momentum, its layers kept gathered after forward: those three and
JacobianSpectrum). Every rank writes what it
measured and decided to ``OUT/rank<r>.json``; rank 0 also the whole (gathered) parameters, Adam's
second moments and the gradient norms computed by hand from the gathered gradients, for the
single-process references in the test. ``bare``: the same run without our callbacks.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, GradientExplosionMonitor, HessianSharpness, JacobianSpectrum
from lightning_dyn.data import digits_tensors
from tests.contract.harness import seed_all
from tests.journeys.common import Classifier, cross_entropy
from tests.journeys.test_gpt import TinyGPT, next_token_loss, sequences

STEPS, EVERY, PROBE = 6, 3, 16


class ShardedGPT(TinyGPT):
    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for block in self.model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=0.01)


class ShardedMLP(Classifier):
    def __init__(self) -> None:
        super().__init__(nn.Sequential(nn.Linear(64, 48), nn.Tanh(), nn.Linear(48, 48), nn.Tanh(), nn.Linear(48, 10)),
                         lr=0.05, momentum=0.9)

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:  # kept gathered between forward and backward (ZeRO-2-like)
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh, reshard_after_forward=False)
        fully_shard(self.net, mesh=mesh)


def problem(name: str):
    """(module, dataset, loss_fn) of a run; the test builds the same to compute its references."""
    if name == "gpt":
        return ShardedGPT(), sequences(), next_token_loss
    return ShardedMLP(), TensorDataset(*digits_tensors(96, targets="index")), cross_entropy


def callbacks(name: str, loss_fn) -> dict[str, pl.Callback]:
    out = {
        "sharpness": HessianSharpness(every_n_steps=EVERY, hessian=HessianSettings(k=2, tol=1e-6, probe_size=PROBE, loss_fn=loss_fn)),
        "eos": EdgeOfStability(every_n_steps=EVERY, hessian=HessianSettings(tol=1e-6, probe_size=PROBE, loss_fn=loss_fn), density_at_fit_end=False),
        "monitor": GradientExplosionMonitor(every_n_steps=1, action="skip"),
    }
    if name == "mlp":
        out["jacobian"] = JacobianSpectrum(every_n_steps=EVERY, probe_size=4)
    return out


class Record(pl.Callback):
    """The gradient norm by hand from the gathered gradients, then everything to ``out``."""

    def __init__(self, watched: dict, out: Path) -> None:
        self.watched, self.out, self.norms = watched, out, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.full_tensor() for p in pl_module.parameters()]
        self.norms[trainer.global_step + 1] = math.sqrt(sum(float(g.double().square().sum()) for g in grads))

    def on_train_end(self, trainer, pl_module) -> None:
        record = {name: {"history": cb.history, "events": cb.events} for name, cb in self.watched.items()}
        record["norms"] = self.norms
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        params = {n: p.full_tensor() for n, p in pl_module.named_parameters()}
        optimizer = trainer.optimizers[0]
        state = {n: {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in optimizer.state[p].items()}
                 for n, p in pl_module.named_parameters()}
        if trainer.global_rank == 0:
            torch.save({"params": params, "state": state}, Path(self.out, "final.pt"))


def main(name: str, out: str, bare: bool = False) -> None:
    seed_all(0)
    module, data, loss_fn = problem(name)
    watched = {} if bare else callbacks(name, loss_fn)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=ModelParallelStrategy(data_parallel_size=2,
                                                                                     tensor_parallel_size=1),
                         max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[*watched.values(), Record(watched, Path(out))])
    trainer.fit(module, DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1)))
    # leave no gloo threads to the interpreter's exit (an abort there — "terminate called without an
    # active exception" — was seen once, in a full-suite run)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], bare=sys.argv[3:] == ["bare"])
