"""An ``IterableDataset`` that streams shuffled mini-batches from a generator of its own (a common
pattern for sharded or streamed data), with the curvature callbacks and the gradient monitor.

The probe set is the stream's first samples, read through the loader; the dataset's own generator
is put back after, so training sees the stream it would see without us (bitwise the same run)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from lightning_dyn import EdgeOfStability, GradientExplosionMonitor, HessianSettings, HessianSharpness
from lightning_dyn.data import digits_tensors
from tests.journeys.common import Classifier, cross_entropy, fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all


class ShuffledStream(IterableDataset):
    """Samples in a fresh order each pass, drawn from the dataset's own generator."""

    def __init__(self, n: int = 192) -> None:
        self.x, self.y = digits_tensors(n, targets="index")
        self.generator = torch.Generator().manual_seed(11)

    def __iter__(self):
        for i in torch.randperm(len(self.x), generator=self.generator).tolist():
            yield self.x[i], self.y[i]


def test_an_iterable_dataset_with_its_own_generator():
    def run(callbacks):
        seed_all(0)
        module = Classifier(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)),
                            lr=0.2)
        return fit(module, DataLoader(ShuffledStream(), batch_size=32), callbacks, max_steps=12), module

    plain = training_state(*run([]))
    sharp = HessianSharpness(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=64))
    eos = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=64))
    monitor = GradientExplosionMonitor(every_n_steps=4)
    trainer, module = run([sharp, eos, monitor])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    assert sum(len(b[0]) for b in sharp.batches) == 64
    want = reference_top_eigenvalue(module, cross_entropy, sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-5)
    assert eos.history[-1]["dyn/eos_sharpness"] == pytest.approx(want, rel=1e-5)
