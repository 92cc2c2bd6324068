"""The theorem's case read off an architecture: widths, ranks, activations, neural ODE read-in/out."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_dyn import AugmentedNeuralODE, NeuralODE
from lightning_dyn.function_classes import classify_architecture


def mlp(*widths: int, activation: type = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers[:-1])


def field(dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, dim))


@pytest.mark.parametrize("widths", [(2, 1), (2, 2, 1), (3, 3, 2, 1), (5, 4, 4, 2, 1)])
def test_widths_that_never_increase_have_no_critical_points(widths):
    verdict = classify_architecture(mlp(*widths))
    assert verdict.case == "no_critical_points" and not verdict.critical_points_possible
    assert verdict.dims == widths and verdict.input_dim == widths[0]
    assert "no critical points" in verdict.reason


@pytest.mark.parametrize("widths, at", [((2, 4, 1), 0), ((2, 4, 3, 4, 1), 0), ((1, 8, 8, 1), 0), ((2, 2, 5, 1), 2)])
def test_augmented_without_bottleneck_is_morse(widths, at):
    verdict = classify_architecture(mlp(*widths))
    assert verdict.case == "morse", verdict.reason
    assert f"augmented at layer {at} " in verdict.reason


@pytest.mark.parametrize("widths, at, wider", [((2, 1, 2, 1), "layer 0", "layer 2"),
                                               ((3, 4, 2, 3, 1), "layer 2", "layer 4")])
def test_a_bottleneck_narrower_than_the_input_then_widened_allows_degenerate_points(widths, at, wider):
    verdict = classify_architecture(mlp(*widths))
    assert verdict.case == "degenerate"
    assert f"bottleneck at {at}" in verdict.reason and f"by {wider}" in verdict.reason


def test_a_rank_deficient_weight_is_a_narrower_layer():
    torch.manual_seed(0)
    net = mlp(2, 4, 1)
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(4, 1) @ torch.randn(1, 2))  # rank 1 < input dimension 2
    verdict = classify_architecture(net)
    assert verdict.case == "degenerate" and verdict.dims == (2, 1, 4, 1)
    assert "bottleneck at the weight of layer 0 (Linear 2→4), of rank 1" in verdict.reason
    # non-increasing widths with a rank-deficient square weight: the chain 3 → 2 → 3 increases again
    net = mlp(3, 3, 1)
    with torch.no_grad():
        net[0].weight[2] = net[0].weight[0] + net[0].weight[1]
    assert classify_architecture(net).case == "degenerate"


def test_a_zero_read_out_is_constant_and_batchnorm_is_a_diagonal_affine_map():
    net = mlp(2, 2, 1)
    with torch.no_grad():
        net[2].weight.zero_()
    assert classify_architecture(net).case == "constant"
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Dropout(0.1), nn.Linear(3, 1))
    assert classify_architecture(net).case == "no_critical_points"
    with torch.no_grad():
        net[1].weight[0] = 0.0  # a dead channel: 3 → 3 → 2 → 3 widens again after a rank below the input
    assert classify_architecture(net).case == "degenerate"


def test_activations_outside_the_theorem_are_named():
    relu = classify_architecture(mlp(2, 8, 1, activation=nn.ReLU))
    assert relu.case == "not_covered" and "ReLU" in relu.reason and "σ' = 0" in relu.reason
    gelu = classify_architecture(mlp(2, 8, 1, activation=nn.GELU))
    assert gelu.case == "not_covered" and "GELU" in gelu.reason
    # leaky ReLU: σ' > 0, so the gradient argument holds; the Morse statement needs C²
    assert classify_architecture(mlp(3, 2, 1, activation=nn.LeakyReLU)).case == "no_critical_points"
    leaky = classify_architecture(mlp(2, 8, 1, activation=nn.LeakyReLU))
    assert leaky.case == "not_covered" and "C²" in leaky.reason
    assert classify_architecture(mlp(2, 4, 3)).case == "not_covered"  # not a scalar output


def test_neural_odes_by_phase_space_and_read_in():
    plain = nn.Sequential(NeuralODE(field(2)), nn.Linear(2, 1))
    assert classify_architecture(plain).case == "no_critical_points"
    squeezed = nn.Sequential(nn.Linear(3, 2), NeuralODE(field(2)), nn.Linear(2, 1))
    assert classify_architecture(squeezed).case == "no_critical_points"
    lifted = nn.Sequential(nn.Linear(2, 3), NeuralODE(field(3)), nn.Linear(3, 1))
    assert classify_architecture(lifted).case == "morse"
    augmented = AugmentedNeuralODE(field(3), 1, readout=nn.Linear(3, 1))
    verdict = classify_architecture(augmented)
    assert verdict.case == "morse" and verdict.architecture == "augmented neural ODE" and verdict.dims == (2, 3, 1)
    default_readout = nn.Sequential(AugmentedNeuralODE(field(4), 2), nn.Linear(2, 1))
    assert classify_architecture(default_readout).case == "morse"
    rank_one = nn.Sequential(nn.Linear(2, 1), AugmentedNeuralODE(field(3), 2, readout=nn.Linear(3, 1)))
    verdict = classify_architecture(rank_one)
    assert verdict.case == "degenerate" and "rank 1 < input dimension 2" in verdict.reason
    nonlinear = AugmentedNeuralODE(field(3), 1, readout=nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    assert classify_architecture(nonlinear).case == "not_covered"


def test_a_module_holding_one_network_is_classified_by_it():
    class Regressor(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp(2, 16, 1)

    assert classify_architecture(Regressor()).case == "morse"

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 1)

    verdict = classify_architecture(Two())
    assert verdict.case == "not_covered" and "Two" in verdict.reason
