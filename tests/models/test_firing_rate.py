import math

import pytest
import scipy.optimize
import torch

from lightning_dyn.ensembles import sample_graphon, small_world
from lightning_dyn.models import FiringRateNetwork


def test_all_to_all_fixed_point_solves_u_equals_gain_tanh_u():
    gain = 2.0
    expected = scipy.optimize.brentq(lambda u: u - gain * math.tanh(u), 0.5, 3.0, xtol=1e-14)
    net = FiringRateNetwork(200, gain=gain)
    from torchdiffeq import odeint

    u = odeint(net, torch.full((200,), 0.5, dtype=torch.float64), torch.tensor([0.0, 40.0], dtype=torch.float64),
               method="rk4", options={"step_size": 0.05})[-1]
    torch.testing.assert_close(u, torch.full_like(u, expected), rtol=0, atol=1e-8)


def test_graph_and_all_to_all_forms_agree_on_the_complete_graph():
    n = 30
    u = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    full = torch.ones(n, n, dtype=torch.float64)
    t = torch.tensor(0.0)
    torch.testing.assert_close(FiringRateNetwork(n)(t, u), FiringRateNetwork(n, full)(t, u), rtol=0, atol=1e-12)
    W = sample_graphon(small_world(0.9, 0.1, 0.1), n, sampling="deterministic")
    expected = -u + W @ torch.tanh(u) / n
    torch.testing.assert_close(FiringRateNetwork(n, W)(t, u), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="square"):
        FiringRateNetwork(n, torch.zeros(n, n + 1))


def test_a_gain_per_row_integrates_a_sweep_at_once():
    n = 50
    W = torch.rand(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u0 = torch.linspace(-1, 1, n, dtype=torch.float64)
    gains = [0.5, 2.0, 3.0]
    batched = FiringRateNetwork(n, W, gain=torch.tensor(gains, dtype=torch.float64)[:, None])
    field = batched(torch.tensor(0.0), u0.expand(len(gains), n))
    for row, g in zip(field, gains):
        torch.testing.assert_close(row, FiringRateNetwork(n, W, gain=g)(torch.tensor(0.0), u0))
