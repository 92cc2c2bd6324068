"""Fine-tuning with Lightning's ``BackboneFinetuning``: the backbone is frozen for an epoch, then
unfrozen into a second parameter group with a tenth of the learning rate."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import BackboneFinetuning
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, GradientExplosionMonitor, HessianSharpness
from lightning_dyn.data import digits_tensors
from tests.journeys.common import Classifier, cross_entropy, fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all

LR = 0.1


class Finetuned(Classifier):
    """A backbone and a head; ``BackboneFinetuning`` finds ``self.backbone``."""

    def __init__(self) -> None:
        super().__init__(nn.Sequential(nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh()),
                                       nn.Linear(32, 10)), lr=LR)
        self.backbone = self.net[0]


def _run(callbacks: list) -> tuple[pl.Trainer, Finetuned]:
    seed_all(0)
    module = Finetuned()
    x, y = digits_tensors(160, targets="index")
    loader = DataLoader(TensorDataset(x, y), batch_size=40, shuffle=True)
    trainer = fit(module, loader, [BackboneFinetuning(unfreeze_backbone_at_epoch=1), *callbacks], max_steps=12)
    return trainer, module


def test_backbone_finetuning_is_followed_across_the_unfreeze():
    plain = training_state(*_run([]))
    sharp = HessianSharpness(every_n_steps=2, hessian=HessianSettings(tol=1e-6, probe_size=80))
    eos = EdgeOfStability(every_n_steps=2, hessian=HessianSettings(tol=1e-6, probe_size=80), density_at_fit_end=False)
    monitor = GradientExplosionMonitor(every_n_steps=2)
    trainer, module = _run([sharp, eos, monitor])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    assert [h["step"] for h in sharp.history] == [2, 4, 6, 8, 10, 12]
    # after the unfreeze the Hessian spans every trainable parameter: against float64 ARPACK
    assert sharp.previous.vectors.shape[0] == sum(p.numel() for p in module.parameters())
    want = reference_top_eigenvalue(module, cross_entropy, sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-5)
    # the edge of stability in the units of the largest learning rate: the threshold does not
    # jump when the backbone's group (lr/10, growing ×1.5 an epoch) joins; λ_max(D H D) with D² = η_i/η_max
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 2
    assert all(h["dyn/stability_threshold"] == pytest.approx(2 / LR) for h in eos.history)
    eta_max = max(g["lr"] for g in groups)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    scale = torch.cat([torch.full((p.numel(),), (lr_of[id(p)] / eta_max) ** 0.5, dtype=torch.float64)
                       for p in module.parameters()])
    want = reference_top_eigenvalue(module, cross_entropy, eos.batches, scale=scale)
    assert eos.history[-1]["dyn/eos_sharpness"] == pytest.approx(want, rel=1e-5)
    # the monitor re-derives its layers and blocks: the backbone's norms and the depth profile appear
    before, after = monitor.history[1], monitor.history[-1]
    assert "dyn/grad_norm_preclip/net.0.0" not in before and "dyn/backprop_lyapunov" not in before
    assert "dyn/grad_norm_preclip/net.0.0" in after and "dyn/backprop_lyapunov" in after
    unique = {id(p): p for p in module.parameters()}
    assert len(monitor._params) == len(unique)
