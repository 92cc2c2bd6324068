"""The input–output Jacobian spectrum against dense Jacobians and dynamical-isometry theory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_dyn import jacobian_spectrum


def _dense_singular_values(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    jacobians = torch.func.vmap(torch.func.jacrev(model))(x)  # (B, d_out, d_in)
    return torch.linalg.svdvals(jacobians.detach())


def _tanh_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 5)).double()


def test_lanczos_and_hutchinson_match_the_dense_jacobian():
    model = _tanh_mlp()
    x = torch.randn(4, 8, dtype=torch.float64)
    result = jacobian_spectrum(model, x, k=3, method="lanczos", tol=1e-10, num_probes=400)
    exact = _dense_singular_values(model, x)  # 5 per sample: d_out < d_in
    top = exact.flatten().sort(descending=True).values[:3]
    assert result.sigma == pytest.approx(top, rel=1e-8)
    msv, sv4 = float((exact**2).mean()), float((exact**4).mean())
    assert abs(result.msv - msv) < 3 * result.msv_stderr and result.msv_stderr < 0.05 * msv
    assert result.sv4 == pytest.approx(sv4, rel=0.15)
    assert result.num_jvps == result.num_vjps == result.eigen.num_matvecs + 400


@pytest.mark.parametrize("width_in, width_out", [(8, 5), (3, 5)])
def test_dense_method_is_exact_with_min_d_in_d_out_products(width_in, width_out):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width_in, 12), nn.Tanh(), nn.Linear(12, width_out)).double()
    x = torch.randn(4, width_in, dtype=torch.float64)
    result = jacobian_spectrum(model, x, k=4)  # auto: min(d_in, d_out) ≤ 64
    exact = _dense_singular_values(model, x).flatten()
    assert result.method == "dense" and result.msv_stderr == 0.0
    assert result.sigma == pytest.approx(exact.sort(descending=True).values[:4], rel=1e-12)
    assert result.msv == pytest.approx(float((exact**2).mean()), rel=1e-12)
    assert result.sv2_variance == pytest.approx(float((exact**2).var(unbiased=False)), rel=1e-10)
    assert result.num_vjps + result.num_jvps == min(width_in, width_out)


@pytest.mark.parametrize("method", ["lanczos", "dense"])
def test_orthogonal_deep_linear_network_is_an_isometry(method):
    model = nn.Sequential(*[nn.Linear(16, 16, bias=False) for _ in range(10)]).double()
    for layer in model:
        nn.init.orthogonal_(layer.weight)
    result = jacobian_spectrum(model, torch.randn(3, 16, dtype=torch.float64), k=3, method=method)
    assert result.sigma == pytest.approx(torch.ones(3, dtype=torch.float64), abs=1e-6)
    # JᵀJ = I: every Rademacher probe gives exactly ‖v‖², so the estimate is exact
    assert result.msv == pytest.approx(1.0, abs=1e-12) and abs(result.sv2_variance) < 1e-12


def test_gaussian_deep_linear_network_has_mean_one_and_variance_depth():
    # squared singular values of a product of L Ginibre matrices (variance 1/N): mean 1, variance L
    # as N → ∞ (Fuss–Catalan moments 1, L + 1). At N = 200, L = 4, one realisation's moments sit
    # within O(L²/N) of these (measured: mean 1.02, variance 4.25); the estimates are checked
    # against that realisation's exact moments, and those against theory with 10% / 15%.
    depth, width = 4, 200
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(depth)]).double()
    with torch.no_grad():
        for layer in model:
            layer.weight.copy_(torch.randn(width, width, generator=g, dtype=torch.float64) / math.sqrt(width))
    x = torch.randn(2, width, dtype=torch.float64)
    result = jacobian_spectrum(model, x, k=1, num_probes=64, generator=torch.Generator().manual_seed(1))
    exact = _dense_singular_values(model, x) ** 2
    assert abs(result.msv - float(exact.mean())) < 3 * result.msv_stderr and result.msv_stderr < 0.03
    assert result.sv2_variance == pytest.approx(float(exact.var(unbiased=False)), rel=0.1)
    assert result.sigma_max ** 2 == pytest.approx(float(exact.max()), rel=1e-3)
    assert float(exact.mean()) == pytest.approx(1.0, abs=0.1)
    assert float(exact.var(unbiased=False)) == pytest.approx(depth, rel=0.15)


def test_warm_start_and_modes():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 6)).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    cold = jacobian_spectrum(model, x, k=2, method="lanczos", tol=1e-8)
    warm = jacobian_spectrum(model, x, k=2, method="lanczos", tol=1e-8, init=cold.eigen)
    assert warm.sigma == pytest.approx(cold.sigma, rel=1e-7)
    assert warm.eigen.num_matvecs < cold.eigen.num_matvecs
    assert model.training  # eval mode for the measurement only


def test_bad_inputs():
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="floating-point"):
        jacobian_spectrum(model, torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="num_probes"):
        jacobian_spectrum(model, torch.ones(2, 3), num_probes=1)
    with pytest.raises(ValueError, match="non-empty batch"):
        jacobian_spectrum(model, torch.ones(3))
    with pytest.raises(ValueError, match="method"):
        jacobian_spectrum(model, torch.ones(2, 3), method="svd")
    with pytest.raises(ValueError, match=r"k \(5\) exceeds the number of singular values \(2 inputs × 2\)"):
        jacobian_spectrum(model, torch.ones(2, 3), k=5)


class _NoForwardMode(torch.autograd.Function):
    """tanh with a backward but no forward-mode formula (no ``jvp``)."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


def test_without_forward_mode_the_jvp_falls_back_to_central_differences():
    torch.manual_seed(0)
    first, second = torch.nn.Linear(12, 30), torch.nn.Linear(30, 20)

    def model(x):
        return second(_NoForwardMode.apply(first(x)))

    x = torch.randn(3, 12)
    result = jacobian_spectrum(model, x, k=2, method="lanczos", tol=1e-6, max_matvecs=60, num_probes=8)
    dense = torch.stack([torch.autograd.functional.jacobian(model, x[i:i + 1]).reshape(20, 12) for i in range(3)])
    want = torch.linalg.svdvals(dense).flatten().sort(descending=True).values[:2]
    torch.testing.assert_close(torch.as_tensor(result.sigma[:2], dtype=torch.float32), want, rtol=1e-4, atol=0)
    from lightning_dyn.dynamics.input_jacobian import JacobianGramOperator

    op = JacobianGramOperator(model, x)
    op.jvp(torch.randn(op.size))
    assert not op.forward_mode  # the fallback was taken
