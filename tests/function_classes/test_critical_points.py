"""The critical-point finder against closed forms, the theorem's cases and an independent root finder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from torch import nn

from lightning_dyn import AugmentedNeuralODE, NeuralODE
from lightning_dyn.function_classes import classify_architecture, find_critical_points

SECH2, TANH = 1 / math.cosh(1.0) ** 2, math.tanh(1.0)
BOX2 = [(-2.0, 2.0), (-2.0, 2.0)]


def bumps(signs: list[float]) -> nn.Sequential:
    """``f(x) = Σ_i s_i [tanh(x_i + 1) − tanh(x_i − 1)]``: an MLP n–2n–1 whose only critical point is
    the origin, with ``∂²f/∂x_i² = −4 s_i sech²(1) tanh(1)``."""
    n = len(signs)
    net = nn.Sequential(nn.Linear(n, 2 * n), nn.Tanh(), nn.Linear(2 * n, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(n).repeat_interleave(2, dim=0))
        net[0].bias.copy_(torch.tensor([1.0, -1.0]).repeat(n))
        net[2].weight.copy_(torch.tensor([[s * c for s in signs for c in (1.0, -1.0)]]))
        net[2].bias.zero_()
    return net


@pytest.mark.parametrize("signs, index", [([1.0], 1), ([1.0, -1.0], 1), ([1.0, 1.0], 2), ([-1.0, -1.0], 0)])
def test_closed_form_extrema_and_saddles_of_an_mlp(signs, index):
    net = bumps(signs)
    result = find_critical_points(net, [(-2.0, 2.0)] * len(signs))
    assert result.count == 1
    assert result.points[0].abs().max() < 1e-12
    assert int(result.index[0]) == index and int(result.nullity[0]) == 0
    expected = sorted(-4 * s * SECH2 * TANH for s in signs)
    assert result.eigenvalues[0].tolist() == pytest.approx(expected, rel=1e-10)
    assert float(result.values[0]) == pytest.approx(sum(signs) * 2 * TANH, rel=1e-12)
    # the certificate: a vanishing gradient and a vanishing Newton step
    assert float(result.grad_norm[0]) < 1e-12 and float(result.newton_step[0]) < 1e-12
    assert net[0].weight.dtype == torch.float32  # searched on a float64 copy, the module untouched
    # every converging start reached the one point: the search looks complete
    assert int(result.hits.sum()) == result.converged > 10 and result.estimated_count == 1


def test_closed_form_saddle_of_an_augmented_neural_ode():
    """ż = (0, 0, z₂² − z₁²) from (x, y, 0) over [0, T]: f = T(y² − x²), a saddle with eigenvalues ±2T."""

    class Field(nn.Module):
        def forward(self, t, z):
            zero = torch.zeros_like(z[:, 0])
            return torch.stack([zero, zero, z[:, 1] ** 2 - z[:, 0] ** 2], dim=1)

    readout = nn.Linear(3, 1)
    with torch.no_grad():
        readout.weight.copy_(torch.tensor([[0.0, 0.0, 1.0]]))
        readout.bias.zero_()
    model = AugmentedNeuralODE(Field(), 1, readout=readout, t_span=(0.0, 2.0), solver="rk4", step_size=0.5)
    assert classify_architecture(model).case == "morse"
    result = find_critical_points(model, BOX2)
    assert result.count == 1 and result.points[0].abs().max() < 1e-12
    assert result.eigenvalues[0].tolist() == pytest.approx([-4.0, 4.0], rel=1e-10)
    assert result.counts_by_index() == {0: 0, 1: 1, 2: 0}


def test_a_bottleneck_gives_a_line_of_degenerate_critical_points():
    """2–1–2–1: f = g(tanh(x + y)), g(u) = tanh(3u + 1) − tanh(3u − 1) has its maximum at u = 0, so
    every point of x + y = 0 is critical with ∇²f = g''(0)·[[1, 1], [1, 1]]: eigenvalues 0 and 2g''(0),
    g''(0) = −36 sech²(1) tanh(1)."""
    net = nn.Sequential(nn.Linear(2, 1), nn.Tanh(), nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[3.0], [3.0]]))
        net[2].bias.copy_(torch.tensor([1.0, -1.0]))
        net[4].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[4].bias.zero_()
    assert classify_architecture(net).case == "degenerate"
    result = find_critical_points(net, BOX2)
    assert result.count >= 5  # many points along the line, each degenerate
    assert bool(result.degenerate.all()) and result.nullity.tolist() == [1] * result.count
    assert (result.points.sum(dim=1).abs() < 1e-8).all()
    assert result.eigenvalues[:, 0].tolist() == pytest.approx([-72 * SECH2 * TANH] * result.count, rel=1e-8)
    assert (result.smallest_abs_eigenvalue < 1e-8).all()
    assert "degenerate" in result.summary()


def _random_mlp(widths, seed, gain):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layer = nn.Linear(a, b)
        with torch.no_grad():
            layer.weight.normal_(0.0, gain / math.sqrt(a))
            layer.bias.normal_(0.0, 1.0)
        layers += [layer, nn.Tanh()]
    return nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("widths", [(2, 2, 1), (3, 3, 2, 1)])
def test_no_critical_points_where_the_theorem_says_none_over_many_seeds(widths):
    for seed in range(12):
        net = _random_mlp(widths, seed, gain=3.0)
        assert classify_architecture(net).case == "no_critical_points"
        result = find_critical_points(net, [(-3.0, 3.0)] * widths[0], starts=64, max_iter=30)
        assert result.count == 0, (seed, result.summary())
        assert "no critical point" in result.summary()
        # the evidence agrees with the theorem's bound at the reported point:
        # ‖∇f‖ = ‖W₁ᵀD₁⋯W_{L−1}ᵀD_{L−1}w_L‖ ≥ Π σ_min(W_l) · Π min σ'(pre-activations) · ‖w_L‖ > 0
        bound, h = 1.0, result.min_grad_point.double()
        linears = [m.double() for m in net if isinstance(m, nn.Linear)]
        for layer in linears[:-1]:
            pre = layer(h)
            bound *= float(torch.linalg.svdvals(layer.weight).min()) * float((1 - torch.tanh(pre) ** 2).min())
            h = torch.tanh(pre)
        bound *= float(linears[-1].weight.norm())
        assert result.min_grad_norm >= bound * (1 - 1e-9) > 0


def test_no_critical_points_for_a_neural_ode_on_its_input_space():
    for seed in range(3):
        torch.manual_seed(seed)
        field = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
        model = nn.Sequential(nn.Linear(2, 2), NeuralODE(field, solver="rk4", step_size=0.25), nn.Linear(2, 1))
        assert classify_architecture(model).case == "no_critical_points"
        result = find_critical_points(model, BOX2, starts=64, max_iter=30)
        assert result.count == 0 and result.min_grad_norm > 1e-6


@pytest.mark.parametrize("widths", [(2, 8, 1), (2, 4, 3, 4, 1)])
def test_augmented_mlps_have_critical_points_and_generic_weights_make_them_non_degenerate(widths):
    """2–4–3–4–1 has a layer narrower than its neighbours, but not narrower than the input: no
    bottleneck in the theorem's sense, and generic weights give non-degenerate critical points."""
    found = 0
    for seed in range(12):
        net = _random_mlp(widths, seed, gain=4.0)
        assert classify_architecture(net).case == "morse"
        result = find_critical_points(net, [(-3.0, 3.0)] * 2, starts=96, max_iter=40)
        found += result.count
        assert not bool(result.degenerate.any()), seed
        assert (result.smallest_abs_eigenvalue > 1e-6).all() and (result.grad_norm < 1e-8).all()
    assert found >= 10  # the augmented case does produce critical points (the test can fail)


def test_one_dimensional_maps_against_roots_of_the_derivative_by_brentq():
    """An independent computation: f' on a fine grid, each sign change refined by scipy's brentq."""
    for seed in range(6):
        net = _random_mlp((1, 8, 1), seed, gain=6.0).double()

        def derivative(x: float) -> float:
            t = torch.tensor([[x]], dtype=torch.float64, requires_grad=True)
            return torch.autograd.grad(net(t).sum(), t)[0].item()

        grid = np.linspace(-2.0, 2.0, 4001)
        values = [derivative(x) for x in grid]
        roots = [brentq(derivative, a, b, xtol=1e-14) for a, b, fa, fb in
                 zip(grid[:-1], grid[1:], values[:-1], values[1:]) if fa * fb < 0]
        result = find_critical_points(net, [(-2.0, 2.0)])
        assert sorted(result.points[:, 0].tolist()) == pytest.approx(sorted(roots), abs=1e-9), seed
        for x, index in zip(result.points[:, 0].tolist(), result.index.tolist()):
            h = 1e-5
            second = (derivative(x + h) - derivative(x - h)) / (2 * h)
            assert index == (1 if second < 0 else 0)


def test_bad_inputs_fail_clearly_and_no_global_rng_is_drawn():
    net = bumps([1.0, 1.0])
    with pytest.raises(ValueError, match="box"):
        find_critical_points(net, [(1.0, -1.0), (0.0, 1.0)])
    with pytest.raises(ValueError, match="one number per row"):
        find_critical_points(nn.Linear(2, 3), BOX2)
    with pytest.raises(FloatingPointError, match="not finite"):
        find_critical_points(lambda x: x.sum(dim=1) * float("nan"), BOX2)
    state = torch.random.get_rng_state()
    first = find_critical_points(net, BOX2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.points, find_critical_points(net, BOX2, seed=3).points)
