import numpy as np
import pytest
import torch
from torch import nn

from lightning_dyn.curvature import DenseOperator, HessianOperator, spectral_density, trace
from tests.helpers import dense_hessian, mlp, mse_loss, regression_data


def _hessian_problem():
    model = mlp(nn.Tanh, sizes=(6, 16, 3))
    x, y = regression_data(n=40)
    batches = [(x, y)]
    return HessianOperator(model, mse_loss, batches), dense_hessian(model, mse_loss, batches)


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_trace_within_three_standard_errors(method):
    op, H = _hessian_problem()
    exact = float(torch.trace(H))
    for seed in range(5):
        est = trace(op, 30, method=method, generator=torch.Generator().manual_seed(seed))
        assert est.num_matvecs == 30
        # within three of its own standard errors, and that error bar itself small: 30 products on a
        # 163-parameter Hessian give a standard error of 8–12% of the trace (measured), capped at 15%
        assert abs(est.value - exact) <= 3 * est.stderr, (est, exact)
        assert est.stderr <= 0.15 * abs(exact), (est, exact)


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    A = DenseOperator(Q @ torch.diag(1.0 / torch.arange(1, 401, dtype=torch.float64) ** 2) @ Q.T)
    exact = float(torch.trace(A.matrix))
    err = {m: np.mean([abs(trace(A, 60, method=m, generator=torch.Generator().manual_seed(s)).value - exact)
                       for s in range(10)]) for m in ("hutch++", "hutchinson")}
    assert err["hutch++"] < 0.3 * err["hutchinson"]


def test_density_integrates_to_one_and_mean_is_trace_over_n():
    op, H = _hessian_problem()
    dens = spectral_density(op, num_runs=20, lanczos_steps=20)
    integral = np.trapezoid(dens.density, dens.grid)
    assert abs(integral - 1) < 1e-3
    for w in dens.weights:
        assert abs(w.sum() - 1) < 1e-10
    mean_exact = float(torch.trace(H)) / op.size
    assert abs(dens.mean - mean_exact) <= 3 * dens.mean_stderr
    assert dens.mean_stderr <= 0.15 * mean_exact  # 20 runs: 11% measured
    mean_from_grid = np.trapezoid(dens.grid * dens.density, dens.grid)
    assert abs(mean_from_grid - dens.mean) < 1e-3 * max(abs(dens.mean), 1e-3) + 1e-6
    assert dens.num_matvecs == 20 * 20


def test_density_nodes_cover_extreme_eigenvalues():
    op, H = _hessian_problem()
    ev = torch.linalg.eigvalsh(H)
    dens = spectral_density(op, num_runs=3, lanczos_steps=40)
    top = max(n.max() for n in dens.nodes)
    assert abs(top - float(ev[-1])) < 1e-6 * float(ev[-1])
