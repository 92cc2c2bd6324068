"""Mixed precision: ``bf16-mixed`` (float32 weights, bf16 autocast in training_step) and
``bf16-true`` (bf16 weights). A measurement runs outside autocast and never below float32: the
Hessian of the float32 loss at the weights training has (bf16 weights cast up)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, HessianSharpness
from lightning_dyn.data import digits_tensors
from tests.contract.harness import seed_all
from tests.journeys.common import Classifier, cross_entropy, fit, reference_top_eigenvalue, training_state


def _run(callbacks: list, precision: str):
    seed_all(0)
    module = Classifier(nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)), momentum=0.9)
    x, y = digits_tensors(160, targets="index")
    loader = DataLoader(TensorDataset(x, y), batch_size=40, shuffle=True)
    return fit(module, loader, callbacks, max_steps=8, precision=precision), module


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_measured_in_float32_and_left_alone(precision):
    plain = training_state(*_run([], precision))
    sharp = HessianSharpness(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=80))
    eos = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=80), density_at_fit_end=False)
    trainer, module = _run([sharp, eos], precision)
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    weights = next(module.parameters()).dtype
    assert weights == (torch.bfloat16 if precision == "bf16-true" else torch.float32)
    # the reference: the same weights in float64, the loss without autocast
    reference = reference_top_eigenvalue(copy.deepcopy(module).float(), cross_entropy,
                                         [tuple(t.float() if t.is_floating_point() else t for t in b)
                                          for b in sharp.batches])
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(reference, rel=1e-5)
    assert eos.history[-1]["dyn/eos_sharpness"] == pytest.approx(reference, rel=1e-5)
