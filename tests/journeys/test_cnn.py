"""A small residual CNN with BatchNorm and Dropout, SGD with momentum, gradient accumulation and a
train loader with its own ``generator=`` (PyTorch's reproducibility advice) — with every callback."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import (EdgeOfStability, HessianSettings, GradientExplosionMonitor, HessianSharpness, JacobianSpectrum,
                           SGDLyapunov)
from lightning_dyn.data import digits_tensors
from tests.journeys.common import Classifier, cross_entropy, fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all


class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn(self.conv(x)))


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(6), BasicBlock(6))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(6 * 64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x.view(-1, 1, 8, 8))))


def _run(callbacks: list, steps: int = 16) -> tuple[pl.Trainer, Classifier]:
    seed_all(0)
    module = Classifier(SmallResNet(), lr=0.05, momentum=0.9)
    x, y = digits_tensors(160, targets="index")
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1))
    trainer = fit(module, loader, callbacks, max_steps=steps, accumulate_grad_batches=2)
    return trainer, module


def _eos() -> EdgeOfStability:
    return EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=64), density_at_fit_end=False)


def test_cnn_with_batchnorm_dropout_and_a_loader_generator():
    alone = _eos()
    plain = training_state(*_run([]))
    _run([alone])
    eos, sharp = _eos(), HessianSharpness(every_n_steps=8, hessian=HessianSettings(tol=1e-6, probe_size=64, k=2))
    monitor = GradientExplosionMonitor(every_n_steps=4)
    jacobian = JacobianSpectrum(every_n_steps=8, probe_size=6)
    lyapunov = SGDLyapunov(every_n_steps=8, method="hvp", probe_size=64, num_steps=40, num_lrs=2, batch_sizes=[],
                           hvp_directions=4)
    trainer, module = _run([eos, sharp, monitor, jacobian, lyapunov])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)  # bitwise the same run
    # the probe set does not depend on what else is attached: the same series, bitwise
    assert eos.history == alone.history
    # the batch SGD's noise has is the optimizer step's: 16 samples × 2 accumulated micro-batches
    assert lyapunov.global_batch == 32 and [h["step"] for h in lyapunov.history] == [8, 16]
    # and so is the batch of EdgeOfStability's batch sharpness (BatchNorm in eval mode, Dropout off)
    assert eos._batch_size == 32 and all(h["dyn/batch_sharpness"] > 0 for h in eos.history)
    # values against a float64 reference on the same probe set, in eval mode (BatchNorm's running statistics)
    want = reference_top_eigenvalue(module, cross_entropy, sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-5)
    assert eos.history[-1]["dyn/eos_sharpness"] == pytest.approx(
        reference_top_eigenvalue(module, cross_entropy, eos.batches), rel=1e-5)
    # the depth profile through the residual blocks, and the exact Jacobian of the 10 logits
    assert "dyn/backprop_lyapunov" in monitor.history[-1]
    assert jacobian.history[-1]["dyn/jacobian_sigma_max"] > 0


def test_a_default_probe_size_never_fails_and_an_explicit_oversize_does():
    from lightning_dyn.callbacks import ConfigurationError

    sharp = HessianSharpness(every_n_steps=4)  # default: one training batch (16 of the 160 samples)
    _run([sharp], steps=4)
    assert sum(len(b[0]) for b in sharp.batches) == 16
    whole = HessianSharpness(every_n_steps=4, hessian=HessianSettings(probe_size=1000))  # more than the set
    with pytest.raises(ConfigurationError, match=r"`probe_size` \(1000\) is larger"):
        _run([whole], steps=4)
    with pytest.raises(ConfigurationError, match=r"`probe_size` \(200\) is larger than the training set \(160"):
        _run([HessianSharpness(every_n_steps=4, hessian=HessianSettings(probe_size=200))], steps=4)
