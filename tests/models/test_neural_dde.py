"""NeuralDDE against the exact piecewise-polynomial solutions, gradients by gradcheck, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_dyn import NeuralDDE


class NegDelayed(nn.Module):
    """y′ = −Σ_i y(t − τ_i)."""

    def forward(self, t, y, delayed):
        return -sum(delayed)


class Field(nn.Module):
    def __init__(self, dim=2, width=6):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(2 * dim, width), nn.Tanh(), nn.Linear(width, dim)).double()

    def forward(self, t, y, delayed):
        return self.net(torch.cat([y, delayed[0]], dim=1))


ONE = torch.ones(1, 1, dtype=torch.float64)


def test_one_delay_textbook_solution_to_round_off():
    layer = NeuralDDE(NegDelayed(), [1.0], t_span=(0.0, 3.0), solver="rk4", step_size=0.1)
    got = layer(ONE, t_eval=[1.5, 2.0, 3.0]).reshape(-1)
    assert got.tolist() == pytest.approx([-0.375, -0.5, -1 / 6], abs=1e-10)
    assert layer(ONE).item() == pytest.approx(-1 / 6, abs=1e-10)
    assert layer.stats["steps_forward"] == 30 and layer.stats["implicit_steps"] == 0


def test_two_delays():
    layer = NeuralDDE(NegDelayed(), [1.0, 2.0], t_span=(0.0, 2.0), step_size=0.1)
    assert layer(ONE, t_eval=[1.0, 2.0]).reshape(-1).tolist() == pytest.approx([-1.0, -2.0], abs=1e-10)


def test_exact_delay_gradient():
    tau = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    layer = NeuralDDE(NegDelayed(), [tau], t_span=(0.0, 1.5), step_size=0.1)
    y = layer(ONE)
    y.backward()
    assert y.item() == pytest.approx(-0.375, abs=1e-10)
    assert tau.grad.item() == pytest.approx(-0.5, abs=1e-6)  # ∂/∂τ [1 − 1.5 + (1.5 − τ)²/2] at τ = 1


def test_delay_not_a_multiple_of_the_step_and_smaller_than_it():
    """Against the method of steps done by hand (tests/dde/test_ddeint.py), through the layer."""
    from tests.dde.test_ddeint import method_of_steps_by_hand

    layer = NeuralDDE(NegDelayed(), [0.37], t_span=(0.0, 2.0), step_size=0.1)
    assert layer(ONE).item() == pytest.approx(method_of_steps_by_hand(2.0, 0.37), abs=1e-7)
    small = NeuralDDE(NegDelayed(), [0.03], t_span=(0.0, 2.0), step_size=0.1)
    assert small(ONE).item() == pytest.approx(method_of_steps_by_hand(2.0, 0.03), abs=1e-6)
    assert small.stats["implicit_steps"] > 0


def test_gradcheck_wrt_initial_state_field_and_delays():
    tau = nn.Parameter(torch.tensor(0.43, dtype=torch.float64))
    layer = NeuralDDE(Field(), [tau], t_span=(0.0, 1.0), step_size=0.1)
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    weight = layer.vector_field.net[0].weight

    def run(y, t, w):
        params = {"delay_0": t, "vector_field.net.0.weight": w}
        return torch.func.functional_call(layer, params, (y,))

    assert torch.autograd.gradcheck(run, (y0, tau.detach().clone().requires_grad_(True),
                                          weight.detach().clone().requires_grad_(True)), eps=1e-6, atol=1e-6)


def test_histories_callable_and_sampled():
    phi = lambda t: torch.cos(t).reshape(1, 1)  # noqa: E731
    exact = NeuralDDE(NegDelayed(), [1.0], history=phi, t_span=(0.0, 1.0), step_size=0.1)(ONE).item()
    # y(1) = 1 − ∫_0^1 cos(s − 1) ds = 1 − sin(1)
    assert exact == pytest.approx(1 - math.sin(1.0), abs=1e-6)
    times = torch.linspace(-1.0, 0.0, 201, dtype=torch.float64)
    values = torch.cos(times).reshape(-1, 1, 1)
    sampled = NeuralDDE(NegDelayed(), [1.0], history=(times, values), t_span=(0.0, 1.0), step_size=0.1)(ONE).item()
    assert sampled == pytest.approx(exact, abs=1e-6)


def test_a_sample_does_not_depend_on_its_batch():
    layer = NeuralDDE(Field(), [0.3, 0.7], t_span=(0.0, 2.0), step_size=0.1)
    batch = torch.randn(5, 2, dtype=torch.float64)
    together = layer(batch)
    for i in range(5):
        assert torch.allclose(layer(batch[i:i + 1]), together[i:i + 1], atol=1e-14, rtol=0)


@pytest.mark.parametrize("delays, kwargs, match", [
    ([0.0], {}, r"delays\[0\] = 0.0"), ([1.0, -2.0], {}, r"delays\[1\] = -2.0"), ([], {}, "delays"),
    ([1.0], {"t_span": (1.0, 0.0)}, "t_span"), ([1.0], {"step_size": 0}, "step_size"),
    ([1.0], {"solver": "dopri5"}, "solver"),
])
def test_bad_arguments_name_the_argument_and_value(delays, kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuralDDE(NegDelayed(), delays, **kwargs)


def test_a_learned_delay_that_goes_non_positive_is_refused_at_the_next_solve():
    tau = nn.Parameter(torch.tensor(0.5))
    layer = NeuralDDE(NegDelayed(), [tau])
    with torch.no_grad():
        tau.fill_(-0.1)
    with pytest.raises(ValueError, match=r"delays\[0\] = -0.1"):
        layer(torch.ones(1, 1))


def test_history_of_the_wrong_shape():
    layer = NeuralDDE(NegDelayed(), [1.0], history=torch.ones(3))
    with pytest.raises(ValueError, match=r"history gives shape \(3,\).*\(2, 2\)"):
        layer(torch.ones(2, 2))


def test_non_finite_state_and_too_many_steps():
    class Blowup(nn.Module):
        def forward(self, t, y, delayed):
            return y ** 2 + delayed[0] ** 2

    with pytest.raises(FloatingPointError, match="non-finite at t ="):
        NeuralDDE(Blowup(), [0.5], t_span=(0.0, 5.0), step_size=0.1)(torch.full((1, 1), 10.0))
    with pytest.raises(ValueError, match="max_steps=100"):
        NeuralDDE(NegDelayed(), [1.0], t_span=(0.0, 20.0), step_size=0.1, max_steps=100)(ONE)


def test_against_torchdde_on_the_same_problem():
    """The peer (from the ``bench`` extra) on y′ = −y(t−1) to t = 3: both near the exact −1/6."""
    torchdde = pytest.importorskip("torchdde")
    ours = NeuralDDE(NegDelayed(), [1.0], t_span=(0.0, 3.0), step_size=0.1)(ONE).item()
    delays = torch.tensor([1.0], dtype=torch.float64)

    def f(t, y, args, *, history):
        return -history[0]

    theirs = torchdde.integrate(f, torchdde.RK4(), torch.tensor(0.0, dtype=torch.float64),
                                torch.tensor(3.0, dtype=torch.float64), torch.linspace(0.0, 3.0, 31, dtype=torch.float64),
                                lambda t: ONE, None, dt0=torch.tensor(0.1, dtype=torch.float64), delays=delays,
                                discretize_then_optimize=True, max_steps=1000)
    assert abs(ours + 1 / 6) < 1e-10
    assert abs(theirs[0, -1].item() + 1 / 6) < 1e-3


def test_a_history_module_learns_with_the_layer():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

        def forward(self, t):
            return self.c.reshape(1, 1)

    layer = NeuralDDE(NegDelayed(), [1.0], history=Constant(), t_span=(0.0, 1.0), step_size=0.1)
    assert [n for n, _ in layer.named_parameters()] == ["history.c"]
    y = layer(ONE)  # y(1) = 1 − ∫₀¹ c dt = 1 − c
    y.backward()
    assert y.item() == pytest.approx(0.5, abs=1e-12) and layer.history.c.grad.item() == pytest.approx(-1.0, abs=1e-12)
