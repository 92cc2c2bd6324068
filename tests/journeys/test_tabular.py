"""A user's tabular classifier: two inputs (sklearn's moons), BatchNorm, Dropout, a loader with its own
generator, bf16-mixed, three of our callbacks at once. CriticalPoints on the decision function (the
logit gap) must leave training bitwise alone, and every critical point it reports must be one by an
independent computation: central differences on a float64 copy of the model, no autograd."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import CriticalPoints, GradientExplosionMonitor, JacobianSpectrum
from tests.journeys.common import Classifier, fit, training_state


def logit_gap(module, x):
    """The decision function of a two-class classifier: logit 1 − logit 0."""
    out = module(x)
    return out[:, 1] - out[:, 0]


def _run(callbacks):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 2))
    module = Classifier(net, lr=0.3, momentum=0.9)
    x, y = make_moons(300, noise=0.1, random_state=0)
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    loader = DataLoader(data, batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(7))
    trainer = fit(module, loader, callbacks, max_steps=300, precision="bf16-mixed")
    return trainer, module


@pytest.mark.slow
def test_critical_points_of_a_moons_classifier_are_real_and_training_is_undisturbed():
    plain = training_state(*_run([]))
    # the decision function's critical points lie beyond the data (a saddle between the moons' tips)
    points = CriticalPoints(every_n_steps=100, forward_fn=logit_gap, box=[(-6.0, 7.0), (-6.0, 6.0)], figure=False)
    callbacks = [points, GradientExplosionMonitor(every_n_steps=100), JacobianSpectrum(every_n_steps=100, probe_size=16)]
    trainer, module = _run(callbacks)
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    assert [h["step"] for h in points.history] == [100, 200, 300]
    assert points.function_class.case == "not_covered" and "2 entries" in points.function_class.reason
    search = points.last_search
    assert search.count >= 1, search.summary()  # the test can fail: there is something to check
    # independent: central differences of the float64 model in eval mode
    model = copy.deepcopy(module).double().eval()

    def f(p: np.ndarray) -> float:
        with torch.no_grad():
            return float(logit_gap(model, torch.tensor(p, dtype=torch.float64).reshape(1, 2)))

    h = 1e-4
    basis = np.eye(2)
    for p, index, eigenvalues in zip(search.points.numpy(), search.index.tolist(), search.eigenvalues.numpy()):
        gradient = np.array([(f(p + h * e) - f(p - h * e)) / (2 * h) for e in basis])
        hessian = np.array([[(f(p + h * a + h * b) - f(p + h * a - h * b) - f(p - h * a + h * b) + f(p - h * a - h * b))
                             / (4 * h * h) for b in basis] for a in basis])
        scale = np.abs(eigenvalues).max()
        assert np.linalg.norm(gradient) < 1e-6 * max(1.0, scale), (p, gradient)
        assert np.linalg.eigvalsh(hessian) == pytest.approx(eigenvalues, abs=1e-4 * scale)
        assert index == int((np.linalg.eigvalsh(hessian) < 0).sum())
