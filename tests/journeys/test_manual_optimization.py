"""Manual optimization (``automatic_optimization = False``): ``training_step`` runs backward and the
optimizer step itself, so it cannot be a measurement's loss — refused at setup with the way out,
and measured right through ``loss_fn``."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, GradientExplosionMonitor, HessianSharpness, SGDLyapunov
from lightning_dyn.callbacks import ConfigurationError
from lightning_dyn.data import digits_tensors
from tests.journeys.common import cross_entropy, fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all


class ManualModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10))
        self.norms: dict[int, float] = {}

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = cross_entropy(self, batch)
        self.manual_backward(loss)
        self.norms[self.global_step + 1] = math.sqrt(sum(float(p.grad.double().square().sum())
                                                         for p in self.parameters()))
        optimizer.step()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.5)


def _run(callbacks: list) -> tuple[pl.Trainer, ManualModule]:
    seed_all(0)
    module = ManualModule()
    x, y = digits_tensors(160, targets="index")
    trainer = fit(module, DataLoader(TensorDataset(x, y), batch_size=40, shuffle=True), callbacks, max_steps=8)
    return trainer, module


@pytest.mark.parametrize("callback", [HessianSharpness(), EdgeOfStability(), SGDLyapunov(method="hvp")],
                         ids=["HessianSharpness", "EdgeOfStability", "SGDLyapunov-hvp"])
def test_the_training_step_is_refused_as_a_loss_before_training(callback):
    with pytest.raises(ConfigurationError, match="manual optimization.*Pass `loss_fn="):
        _run([callback])
    assert callback.history == []


def test_measured_through_loss_fn_and_left_alone():
    plain = training_state(*_run([]))
    eos = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=80, loss_fn=cross_entropy), density_at_fit_end=False)
    monitor = GradientExplosionMonitor(every_n_steps=2)
    lyapunov = SGDLyapunov(every_n_steps=4, criterion=F.cross_entropy, probe_size=80, num_steps=40, num_lrs=2,
                           batch_sizes=[])
    trainer, module = _run([eos, monitor, lyapunov])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    assert eos.history[-1]["dyn/eos_sharpness"] == pytest.approx(
        reference_top_eigenvalue(module, cross_entropy, eos.batches), rel=1e-5)
    for h in monitor.history:
        assert h["dyn/grad_norm_preclip"] == pytest.approx(module.norms[h["step"]], rel=1e-5)
    assert [h["step"] for h in lyapunov.history] == [4, 8] and lyapunov.global_batch == 40
