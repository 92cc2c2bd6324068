"""Fine-tuning recipes people use: BatchNorm frozen in eval mode from a hook, LoRA-style adapters on
a frozen base, and weight averaging (``StochasticWeightAveraging``, ``EMAWeightAveraging``).

``mode="train"`` measures the function training computes — the modes training has at that step,
a BatchNorm its user froze included — and ``mode="eval"`` the module's eval mode; both against a
float64 reference with the same modes. Every run is bitwise the run without our callbacks.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, GradientExplosionMonitor, HessianSettings, HessianSharpness
from lightning_dyn.data import digits_tensors
from tests.journeys.common import Classifier, cross_entropy, fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all
from tests.readme import readme_numbers


def _digits(n: int = 160) -> DataLoader:
    x, y = digits_tensors(n, targets="index")
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(),
                                      nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh())
        self.head = nn.Linear(4 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, 8, 8)).flatten(1))


def freeze_batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # running statistics used and kept: the recipe for small fine-tuning batches


class FrozenBatchNorm(Classifier):
    def on_train_epoch_start(self) -> None:
        freeze_batchnorm(self)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_frozen_from_a_hook_stays_frozen(mode):
    def run(callbacks):
        seed_all(0)
        module = FrozenBatchNorm(SmallCNN(), lr=0.05)
        return fit(module, _digits(), callbacks, max_steps=8), module

    plain = training_state(*run([]))
    sharp = HessianSharpness(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=64, mode=mode))
    trainer, module = run([sharp])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    module.train()
    freeze_batchnorm(module)  # the modes training has
    want = reference_top_eigenvalue(module, cross_entropy, sharp.batches, modes="as_is" if mode == "train" else "eval")
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-5)
    if mode == "train":  # what unfreezing the BatchNorm layers would have measured instead
        module.train()
        unfrozen = reference_top_eigenvalue(module, cross_entropy, sharp.batches, modes="as_is")
        wrong, right = readme_numbers("made the journey's CNN measure {n} where training's function has {n}")
        assert (unfrozen, want) == (pytest.approx(wrong, abs=5e-3), pytest.approx(right, abs=5e-3))


class LoRALinear(nn.Module):
    """``W x + B A x`` with ``W`` frozen and a rank-``r`` update ``B A`` trained (``B`` starts at 0)."""

    def __init__(self, base: nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.A.T @ self.B.T


def test_lora_adapters_on_a_frozen_base():
    def run(callbacks):
        seed_all(0)
        torch.manual_seed(0)
        net = nn.Sequential(LoRALinear(nn.Linear(64, 32)), nn.Tanh(), LoRALinear(nn.Linear(32, 10)))
        module = Classifier(net, lr=0.2)
        return fit(module, _digits(), callbacks, max_steps=8), module

    plain = training_state(*run([]))
    eos = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=64))
    monitor = GradientExplosionMonitor(every_n_steps=4)
    trainer, module = run([eos, monitor])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    adapters = [p for n, p in module.named_parameters() if n.endswith((".A", ".B"))]
    assert eos.previous.vectors.shape[0] == sum(p.numel() for p in adapters)  # the adapters' space alone
    assert eos.history[-1]["dyn/eos_sharpness"] == pytest.approx(
        reference_top_eigenvalue(module, cross_entropy, eos.batches), rel=1e-5)
    assert monitor.history[-1]["dyn/grad_norm_preclip"] == pytest.approx(
        torch.cat([p.grad.reshape(-1) for p in adapters]).norm().item(), rel=1e-5)


@pytest.mark.parametrize("averaging", ["swa", "ema"])
def test_weight_averaging_is_left_alone(averaging):
    def run(callbacks):
        seed_all(0)
        module = Classifier(nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)), lr=0.1)
        average = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=1) if averaging == "swa" \
            else EMAWeightAveraging(decay=0.9)
        return fit(module, _digits(), [average, *callbacks], max_steps=15), module

    plain = training_state(*run([]))
    eos = EdgeOfStability(every_n_steps=5, hessian=HessianSettings(tol=1e-6, probe_size=64))
    sharp = HessianSharpness(every_n_steps=5, hessian=HessianSettings(tol=1e-6, probe_size=64))
    snapshot = Snapshot()
    trainer, module = run([eos, sharp, snapshot])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    assert [h["step"] for h in sharp.history] == [5, 10, 15]
    for h, e in zip(sharp.history, eos.history):  # one Hessian (plain SGD), two callbacks, the same numbers
        assert e["dyn/eos_sharpness"] == pytest.approx(h["dyn/sharpness"], rel=1e-5)
        assert e["dyn/sharpness_ratio"] == pytest.approx(e["dyn/eos_sharpness"] / e["dyn/stability_threshold"])
    # the measurements follow the weights training steps (the trajectory), not the average swapped in at the end
    module.load_state_dict(snapshot.states[15])
    want = reference_top_eigenvalue(module, cross_entropy, sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-5)


class Snapshot(pl.Callback):
    """The module's weights after each training step."""

    def __init__(self) -> None:
        self.states: dict[int, dict] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
