"""Signal propagation through depth against mean-field theory and exact cases (Poole et al. 2016; Schoenholz et al. 2017)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from torch import nn

from lightning_dyn.dynamics import BackpropSignal, backprop_lyapunov, critical_weight_variance, find_blocks, mean_field
from lightning_dyn.dynamics.signal_propagation import local_growth


def test_tanh_edge_of_chaos_matches_the_published_critical_point():
    assert critical_weight_variance(0.05) == pytest.approx(1.760955, abs=5e-7)
    point = mean_field(1.760955, 0.05)
    assert point.q_star == pytest.approx(0.570048, abs=5e-7)
    assert point.chi1 == pytest.approx(1.0, abs=1e-6)


def test_mean_field_quadrature_against_scipy_and_closed_forms():
    point = mean_field(3.0, 0.05)
    gauss = lambda f: quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -np.inf, np.inf,
                           epsabs=1e-13)[0]
    q = point.q_star
    assert q == pytest.approx(3.0 * gauss(lambda z: math.tanh(math.sqrt(q) * z) ** 2) + 0.05, rel=1e-10)
    assert point.chi1 == pytest.approx(3.0 * gauss(lambda z: (1 - math.tanh(math.sqrt(q) * z) ** 2) ** 2), rel=1e-10)
    assert mean_field(2.0, 0.0, "relu").chi1 == 1.0 and critical_weight_variance(0.0, "relu") == 2.0
    assert mean_field(1.5, 0.0, "linear").backprop_lyapunov == pytest.approx(0.5 * math.log(1.5))
    with pytest.raises(ValueError, match="activation"):
        mean_field(1.0, 0.0, "gelu")


def test_backprop_lyapunov_is_minus_the_slope_of_the_log_profile():
    norms = 3.0 * np.exp(-0.25 * np.arange(6))
    assert backprop_lyapunov(norms) == pytest.approx(0.25, abs=1e-12)
    assert local_growth(norms) == pytest.approx(np.full(5, 0.25))
    assert math.isnan(backprop_lyapunov([1.0, float("nan")]))


def _deep_net(width: int, depth: int, sigma_w2: float, sigma_b2: float, activation: type, seed: int) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        linear = nn.Linear(width, width, bias=sigma_b2 > 0).double()
        with torch.no_grad():
            linear.weight.copy_(torch.randn(width, width, generator=g, dtype=torch.float64) * math.sqrt(sigma_w2 / width))
            if linear.bias is not None:
                linear.bias.copy_(torch.randn(width, generator=g, dtype=torch.float64) * math.sqrt(sigma_b2))
        layers += [linear, activation()]
    return nn.Sequential(*layers, nn.Linear(width, width).double())


def _measured_rate(net: nn.Sequential, x: torch.Tensor) -> float:
    blocks = find_blocks(net)
    signal = BackpropSignal(blocks)
    signal.attach()
    targets = torch.randn(len(x), net[-1].out_features, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    # a loss linear in the outputs: ∂L/∂f independent of the weights, as mean-field theory assumes
    # (with MSE an exploding linear network's output dominates f − y and correlates δ with W)
    (net(x) * targets).sum().div(len(x)).backward()
    signal.detach()
    return backprop_lyapunov(signal.squared_norms(x.device).sqrt().numpy())


def test_orthogonal_linear_network_has_growth_rate_zero():
    net = nn.Sequential(*[nn.Linear(32, 32, bias=False) for _ in range(12)], nn.Linear(32, 1)).double()
    for layer in list(net)[:-1]:
        nn.init.orthogonal_(layer.weight)
    rate = _measured_rate(net, torch.randn(8, 32, dtype=torch.float64))
    assert abs(rate) < 1e-12


@pytest.mark.parametrize("sigma_w2", [0.6, 1.6])
def test_gaussian_linear_network_grows_at_half_log_sigma_w2(sigma_w2):
    # ‖W_lᵀδ‖²/‖δ‖² concentrates at σ_w² with relative fluctuations ~ √(2/N) per layer and sample;
    # width 400, depth 24, 16 samples: the fitted rate scatters by ≈ 0.004 over seeds (measured on
    # 6), so 0.015 is ≈ 3.5 standard deviations; |½ log σ_w²| ≥ 0.23 here, the sign is clear
    net = _deep_net(400, 24, sigma_w2, 0.0, nn.Identity, seed=1)
    rate = _measured_rate(net, torch.randn(16, 400, dtype=torch.float64))
    assert np.sign(rate) == np.sign(math.log(sigma_w2))
    assert rate == pytest.approx(0.5 * math.log(sigma_w2), abs=0.015)


@pytest.mark.parametrize("sigma_w2", [1.2, 1.760955, 3.0])
def test_tanh_network_at_its_fixed_point_grows_at_half_log_chi1(sigma_w2):
    # inputs scaled so the first pre-activations have variance q*: the whole network sits at the
    # fixed point, where each layer multiplies ‖∂L/∂h‖² by χ1. Width 400, depth 24, 16 inputs: the
    # fitted rate scatters by ≈ 0.004 over seeds (measured on 6 per σ_w²), so 0.015 (≈ 3.5 SD)
    # still separates ½ log χ1 = −0.084, 0, +0.095
    point = mean_field(sigma_w2, 0.05)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 400, generator=g, dtype=torch.float64) * math.sqrt((point.q_star - 0.05) / sigma_w2)
    rate = _measured_rate(_deep_net(400, 24, sigma_w2, 0.05, nn.Tanh, seed=2), x)
    assert rate == pytest.approx(point.backprop_lyapunov, abs=0.015)
    if sigma_w2 != 1.760955:
        assert np.sign(rate) == np.sign(sigma_w2 - 1.760955)


class BasicBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.relu(self.conv(x))


def test_blocks_are_found_in_mlps_residual_nets_and_transformers():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert [n for n, _ in find_blocks(mlp)] == ["2", "4"]
    resnet = nn.Sequential(nn.Linear(4, 8), nn.Sequential(BasicBlock(8), BasicBlock(8)), BasicBlock(8), nn.Linear(8, 2))
    assert [n for n, _ in find_blocks(resnet)] == ["1.0", "1.1", "2"]
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), num_layers=3, enable_nested_tensor=False)
    assert [n for n, _ in find_blocks(encoder)] == ["layers.0", "layers.1", "layers.2"]
    assert [n for n, _ in find_blocks(mlp, ["0", "3"])] == ["0", "3"]
    with pytest.raises(ValueError, match="no submodule named '9'"):
        find_blocks(mlp, ["0", "9"])
