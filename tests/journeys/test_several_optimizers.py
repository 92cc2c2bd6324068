"""Several optimizers, and an optimizer over a subset of the parameters.

A GAN under manual optimization (a generator's and a discriminator's optimizer, stepped in turn,
each leaving its gradients behind for the other's step), and a head trained by an optimizer that
omits a backbone which still requires grad. Each measurement is of one optimizer's step: the
Hessian over the parameters it steps, against its own threshold; the gradient monitor's norms are
per optimizer step. Checked against a float64 reference restricted to those parameters and
against gradient norms computed by hand in the same hook.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, GradientExplosionMonitor, HessianSettings, HessianSharpness
from lightning_dyn.data import digits_tensors
from tests.journeys.common import Classifier, cross_entropy, fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all
from tests.readme import readme_numbers

G_LR, D_LR = 0.2, 0.05


class GAN(pl.LightningModule):
    """A small GAN on a 2-D ring, manual optimization, two SGD optimizers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
        self.automatic_optimization = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        g_opt, d_opt = self.optimizers()
        g_opt.zero_grad()
        self.manual_backward(generator_loss(self, batch))
        g_opt.step()
        d_opt.zero_grad()  # the generator's step left gradients in the discriminator: not this step's
        self.manual_backward(discriminator_loss(self, batch))
        d_opt.step()

    def configure_optimizers(self):
        return [torch.optim.SGD(self.generator.parameters(), lr=G_LR),
                torch.optim.SGD(self.discriminator.parameters(), lr=D_LR)]


def generator_loss(module, batch) -> torch.Tensor:
    z, _ = batch
    logits = module.discriminator(module(z))
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def discriminator_loss(module, batch) -> torch.Tensor:
    z, real = batch
    fake = module.discriminator(module(z).detach())
    true = module.discriminator(real)
    return (F.binary_cross_entropy_with_logits(true, torch.ones_like(true))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


class _Losses(nn.Module):
    """The GAN's losses with a ``forward``, for the reference (which calls the model)."""

    def __init__(self, gan: GAN, loss) -> None:
        super().__init__()
        self.gan, self.loss = gan, loss

    def forward(self, batch):
        return self.loss(self.gan, batch)


class OptimizerGradientNorm(pl.Callback):
    """The norm of the gradients of the parameters the stepping optimizer updates, by hand."""

    def __init__(self) -> None:
        self.norms: dict[int, float] = {}
        self.everything: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        mine = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms[trainer.global_step + 1] = math.sqrt(sum(float(p.grad.double().square().sum()) for p in mine))
        every = [p for p in pl_module.parameters() if p.grad is not None]
        self.everything[trainer.global_step + 1] = math.sqrt(sum(float(p.grad.double().square().sum()) for p in every))


def _ring() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    angle = 2 * math.pi * torch.rand(96, generator=g)
    real = torch.stack([angle.cos(), angle.sin()], 1) + 0.05 * torch.randn(96, 2, generator=g)
    return TensorDataset(torch.randn(96, 2, generator=g), real)


def test_a_gan_is_measured_per_optimizer():
    def run(callbacks):
        seed_all(0)
        module = GAN()
        loader = DataLoader(_ring(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1))
        return fit(module, loader, callbacks, max_steps=16), module

    plain = training_state(*run([]))
    spy = OptimizerGradientNorm()
    generator = EdgeOfStability(every_n_steps=8, hessian=HessianSettings(tol=1e-6, probe_size=48,
                                                                         loss_fn=generator_loss, optimizer=0))
    discriminator = HessianSharpness(every_n_steps=8, hessian=HessianSettings(tol=1e-6, probe_size=48,
                                                                              loss_fn=discriminator_loss, optimizer=1))
    monitor = GradientExplosionMonitor(every_n_steps=4)
    trainer, module = run([spy, generator, discriminator, monitor])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)

    # the generator's step: the Hessian over its parameters, against 2/η of its optimizer
    want = reference_top_eigenvalue(_Losses(module, generator_loss), lambda m, b: m(b), generator.batches,
                                    params=list(module.generator.parameters()))
    last = generator.history[-1]
    assert last["dyn/eos_sharpness"] == pytest.approx(want, rel=1e-4)
    assert last["dyn/stability_threshold"] == pytest.approx(2 / G_LR)
    everything = reference_top_eigenvalue(_Losses(module, generator_loss), lambda m, b: m(b), generator.batches)
    # what measuring every trainable parameter would have logged: the README's numbers
    block, whole = readme_numbers("the generator's block has λ_max {n} where the whole network's is {n}")
    assert (last["dyn/eos_sharpness"], everything) == (pytest.approx(block, abs=5e-4), pytest.approx(whole, abs=5e-3))
    want = reference_top_eigenvalue(_Losses(module, discriminator_loss), lambda m, b: m(b), discriminator.batches,
                                    params=list(module.discriminator.parameters()))
    assert discriminator.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-4)

    # two optimizer steps per batch (global_step counts both); each norm over its own optimizer's gradients
    assert [h["step"] for h in monitor.history] == [4, 8, 12, 16]
    for h in monitor.history:
        assert h["dyn/grad_norm_preclip"] == pytest.approx(spy.norms[h["step"] - 1], rel=1e-5)  # the generator's
        assert h["dyn/grad_norm_preclip_optimizer_1"] == pytest.approx(spy.norms[h["step"]], rel=1e-5)
    # at either step the other network holds gradients too (the generator's loss backpropagates through the
    # discriminator; the generator's own stay from its step): counting them is what the monitor used to do
    assert any(spy.everything[s] > 1.5 * spy.norms[s] for s in spy.norms)


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 32), nn.Tanh())
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class HeadOnly(Classifier):
    """An optimizer over the head alone; the backbone still requires grad (and gets gradients)."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.head.parameters(), lr=self.lr)


def test_an_optimizer_over_a_subset_is_measured_over_that_subset():
    def run(callbacks):
        seed_all(0)
        module = HeadOnly(Backbone(), lr=0.5)
        x, y = digits_tensors(160, targets="index")
        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))
        return fit(module, loader, callbacks, max_steps=8), module

    plain = training_state(*run([]))
    spy = OptimizerGradientNorm()
    eos = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=64))
    monitor = GradientExplosionMonitor(every_n_steps=4)
    trainer, module = run([spy, eos, monitor])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    head = list(module.net.head.parameters())
    want = reference_top_eigenvalue(module, cross_entropy, eos.batches, params=head)
    assert eos.history[-1]["dyn/eos_sharpness"] == pytest.approx(want, rel=1e-5)
    everything = reference_top_eigenvalue(module, cross_entropy, eos.batches)  # the whole network's
    head_only, whole = readme_numbers("a head-only optimizer's {n} where the network's is {n}")
    assert (want, everything) == (pytest.approx(head_only, abs=5e-3), pytest.approx(whole, abs=5e-3))
    for h in monitor.history:
        assert h["dyn/grad_norm_preclip"] == pytest.approx(spy.norms[h["step"]], rel=1e-5)
        assert spy.everything[h["step"]] > 1.05 * spy.norms[h["step"]]  # the backbone's gradients, not stepped
