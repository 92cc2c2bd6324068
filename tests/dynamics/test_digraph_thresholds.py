"""Noisy Kuramoto and firing-rate networks on digraph measures against their closed forms: K_c = 2D/μ_max
from simulations (3 %) and from the Vlasov limit (1 %), twisted states of directed rings, the pitchfork."""

import math

import pytest
import torch
from torchdiffeq import odeint

from lightning_dyn.dynamics import (VlasovKuramoto, critical_coupling_from_rates, critical_gain, exponential_rate,
                                    incoherence_growth_rate, kronecker_phases, noisy_critical_coupling,
                                    noisy_order_parameter, twisted_state)
from lightning_dyn.ensembles import DigraphMeasure, grid_positions
from lightning_dyn.models import FiringRateNetwork, KuramotoNetwork, order_parameter

D = 1.0


def test_rate_and_threshold_fits_recover_exact_lines():
    t = torch.linspace(0, 2, 11, dtype=torch.float64)
    a = torch.stack((0.3 * torch.exp(-0.25 * t), 2.0 * torch.exp(0.5 * t)), dim=1)
    torch.testing.assert_close(exponential_rate(t, a), torch.tensor([-0.25, 0.5], dtype=torch.float64))
    assert critical_coupling_from_rates([1.0, 2.0, 3.0], [-0.5, 0.0, 0.5]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least two"):
        critical_coupling_from_rates([1.0], [0.1])


def test_closed_form_thresholds():
    assert noisy_critical_coupling(0.5) == 1.0
    assert noisy_critical_coupling(0.5, DigraphMeasure.uniform(0.25)) == pytest.approx(4.0)
    assert noisy_critical_coupling(1.0, DigraphMeasure.power_law(0.3)) == pytest.approx(2 * (1 - 0.6), rel=1e-6)
    assert noisy_critical_coupling(1.0, DigraphMeasure.rank_one(lambda x: 1 + x, lambda x: 2 - x)) == pytest.approx(12 / 13, rel=1e-6)
    assert critical_gain(DigraphMeasure.power_law(0.25)) == pytest.approx(0.5, rel=1e-6)
    assert noisy_order_parameter(1.9, 1.0) == 0.0
    r = noisy_order_parameter(3.0, 1.0)
    assert r == pytest.approx(0.72416, abs=1e-5)
    with pytest.raises(ValueError, match="positive"):
        noisy_critical_coupling(1.0, DigraphMeasure.rank_one(lambda x: 1 + 0 * x, lambda x: x - 1))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["all-to-all", "erdos-renyi", "power-law", "directed-ring"])
def test_simulated_threshold_is_within_3_percent_of_2d_over_mu_max(name):
    """Growth rate of the projected order parameter at 0.8 and 1.2 × K_c, its zero by interpolation
    (the protocol of ``incoherence_growth_rate``), N ≥ 2000, sparse samples of each measure."""
    n = 4000 if name == "all-to-all" else 2000
    x = grid_positions(n)
    measure, psi, sampling = {
        "all-to-all": (DigraphMeasure.uniform(), None, {}),
        "erdos-renyi": (DigraphMeasure.uniform(0.5), None, dict(sampling="random", density=0.05, sparse=True)),
        "power-law": (DigraphMeasure.power_law(0.25), x**-0.25, dict(sampling="random", density=0.05, sparse=True)),
        "directed-ring": (DigraphMeasure.shift(0.25), None, dict(atom_width=50, sparse=True)),
    }[name]
    kc = noisy_critical_coupling(D, measure)
    rates = []
    for factor in (0.8, 1.2):
        net = KuramotoNetwork.on_digraph_measure(torch.zeros(n, dtype=torch.float64), factor * kc, measure, noise=D,
                                                 generator=torch.Generator().manual_seed(0), **sampling)
        rates.append(incoherence_growth_rate(net, profile=psi, generator=torch.Generator().manual_seed(100)))
    assert rates[0] < 0 < rates[1]
    assert critical_coupling_from_rates([0.8 * kc, 1.2 * kc], rates) == pytest.approx(kc, rel=0.03)


@pytest.mark.parametrize("name", ["all-to-all", "uniform", "power-law", "directed-rank-one", "shift+uniform"])
def test_vlasov_threshold_is_within_1_percent(name):
    measure, profile = {
        "all-to-all": (DigraphMeasure.uniform(), None),
        "uniform": (DigraphMeasure.uniform(0.4), None),
        "power-law": (DigraphMeasure.power_law(0.25), lambda x: x**-0.25),
        "directed-rank-one": (DigraphMeasure.rank_one(lambda x: 1 + x, lambda x: 2 - x), lambda x: 2 - x),
        "shift+uniform": (DigraphMeasure.shift(0.25) + DigraphMeasure.uniform(0.5), None),
    }[name]
    kc = noisy_critical_coupling(D, measure)
    v = VlasovKuramoto(measure, torch.tensor([0.8 * kc, 1.2 * kc], dtype=torch.float64), D, num_points=128, num_modes=16)
    sol = v.simulate(v.ott_antonsen(0.01), (0.0, 4.0), num_saves=41)
    a = v.order_parameter(sol.moments, None if profile is None else profile(v.nodes))
    keep = sol.times >= 1
    rates = exponential_rate(sol.times[keep], a[keep])
    assert critical_coupling_from_rates([0.8 * kc, 1.2 * kc], rates) == pytest.approx(kc, rel=0.01)
    torch.testing.assert_close(torch.tensor(v.linear_growth_rate(), dtype=torch.float64), torch.tensor([-0.2 * D, 0.2 * D], dtype=torch.float64),
                               rtol=0, atol=1e-5)


def test_vlasov_stationary_order_parameter_solves_the_bessel_self_consistency():
    couplings = [2.5, 3.0, 4.0]
    v = VlasovKuramoto(DigraphMeasure.uniform(), torch.tensor(couplings, dtype=torch.float64), D, num_points=8, num_modes=40)
    sol = v.simulate(v.ott_antonsen(0.3), (0.0, 60.0), num_saves=3)
    r = v.order_parameter(sol.moments)[-1]
    torch.testing.assert_close(r, torch.tensor([noisy_order_parameter(K, D) for K in couplings], dtype=torch.float64),
                               rtol=0, atol=1e-5)
    # the density it describes is a density: positive, unit mass
    theta = torch.linspace(-math.pi, math.pi, 401, dtype=torch.float64)[:-1]
    f = v.density(sol.moments[-1], theta)
    assert float(f.min()) > 0
    torch.testing.assert_close(f.mean(-1) * 2 * math.pi, torch.ones_like(f[..., 0]))


def test_finite_network_follows_its_vlasov_limit():
    """All-to-all, N = 4000, K = 3: the order parameter of 16 noisy realisations against the limit's r(t)."""
    n, K = 4000, 3.0
    v = VlasovKuramoto(DigraphMeasure.uniform(), K, D, num_points=4, num_modes=32)
    limit = v.order_parameter(v.simulate(v.ott_antonsen(0.2), (0.0, 4.0), num_saves=21).moments)
    net = KuramotoNetwork(torch.zeros(n, dtype=torch.float64), K, noise=D)
    theta0 = kronecker_phases(torch.full((n,), 0.2, dtype=torch.complex128)).expand(16, n).clone()
    _, theta = net.simulate(theta0, (0.0, 4.0), step_size=0.01, method="heun", num_saves=21,
                            generator=torch.Generator().manual_seed(0))
    r = order_parameter(theta).mean(-1)
    assert float(limit[-1]) > 0.6  # it synchronises: the comparison is not of two flat lines
    assert float((r - limit).abs().max()) < 0.01


def test_directed_ring_twisted_states_rotate_at_the_formula_and_keep_stability_iff_q_below_n_over_4():
    n, K, omega = 20, 1.0, 0.3
    ring = DigraphMeasure.ring(1)
    net = KuramotoNetwork.on_digraph_measure(torch.full((n,), omega, dtype=torch.float64), K, ring)
    qs = list(range(-n // 2 + 1, n // 2 + 1))
    x = torch.arange(n, dtype=torch.float64) / n
    theta0 = torch.stack([2 * math.pi * q * x for q in qs])
    pert = 1e-6 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, clean = net.simulate(theta0, (0.0, 5.0), step_size=0.01, num_saves=2)
    _, perturbed = net.simulate(theta0 + pert, (0.0, 40.0), step_size=0.01, num_saves=2)
    measured = ((clean[-1] - clean[0]) / 5.0).mean(-1)
    dev = perturbed[-1] - clean[0]
    ratio = (dev - dev.mean(-1, keepdim=True)).norm(dim=-1) / (pert - pert.mean(-1, keepdim=True)).norm(dim=-1)
    for i, q in enumerate(qs):
        theory = twisted_state(ring, q, K, frequency=omega, num_nodes=n)
        assert theory.frequency == pytest.approx(omega + K * math.sin(2 * math.pi * q / n), abs=1e-14)
        assert abs(float(measured[i]) - theory.frequency) < 1e-6
        seen = "stable" if ratio[i] < 1 - 1e-3 else "unstable" if ratio[i] > 1 + 1e-3 else "neutral"
        assert seen == theory.stability, q
        assert (theory.stability == "stable") == (abs(q) < n / 4)


def test_twisted_state_growth_rates_are_the_fourier_formula_and_the_graphon_limit_loses_the_rotation():
    K = 1.3
    b = (math.sqrt(5) - 1) / 8  # irrational: no mode has period dividing the shift
    for q in (0, 1, 2, 3):
        state = twisted_state(DigraphMeasure.shift(b), q, K, num_modes=64)
        k = torch.arange(1, 65, dtype=torch.float64)
        expected = -K * math.cos(2 * math.pi * q * b) * (1 - torch.cos(2 * math.pi * k * b))
        torch.testing.assert_close(state.growth_rates, expected, rtol=0, atol=1e-12)
        assert state.frequency == pytest.approx(K * math.sin(2 * math.pi * q * b), abs=1e-14)
        assert state.stable == (math.cos(2 * math.pi * q * b) > 0)
    # a = 1/10: the modes k = 10, 20, … repeat every shift and are never damped — neutral, not stable
    assert twisted_state(DigraphMeasure.shift(0.1), 0, K, num_modes=64).stability == "neutral"
    a = 0.1
    # a = 1/10 on N = 40 nodes: Ω under the digraph measure's normalisation, and under the graphon's 1/N
    n = 40
    A = DigraphMeasure.shift(a).sample(n).coupling
    theta0 = 2 * math.pi * grid_positions(n)
    speeds = {}
    for norm in ("sum", "mean"):
        _, th = KuramotoNetwork(torch.zeros(n, dtype=torch.float64), K, A, normalization=norm).simulate(
            theta0, (0.0, 2.0), step_size=0.01, num_saves=2)
        speeds[norm] = float(((th[-1] - th[0]) / 2.0).mean())
    assert speeds["sum"] == pytest.approx(K * math.sin(2 * math.pi * a), abs=1e-9)
    assert speeds["mean"] == pytest.approx(K * math.sin(2 * math.pi * a) / n, abs=1e-9)  # → 0, the graphon limit
    with pytest.raises(ValueError, match="translation-invariant"):
        twisted_state(DigraphMeasure.power_law(0.1), 1, 1.0)


def test_translation_invariant_kernels_have_twisted_states_too():
    """W(x, y) = w(y − x) with w(d) = 1 + cos 2πd. Closed forms: Re λ_k = ∫ w(d) cos(2πqd)(cos 2πkd − 1) dd is
    ½δ_{k1} − 1 for q = 0 (synchrony: stable) and ½δ_{k1} + ¼δ_{k2} − ½ for q = 1 (k = 1 neutral); Ω = ω."""
    measure = DigraphMeasure.translation_invariant(lambda d: 1 + torch.cos(2 * math.pi * d))
    sync = twisted_state(measure, 0, 1.0, num_modes=4)
    torch.testing.assert_close(sync.growth_rates, torch.tensor([-0.5, -1.0, -1.0, -1.0], dtype=torch.float64), rtol=0, atol=1e-9)
    assert sync.stable
    twisted = twisted_state(measure, 1, 1.0, frequency=0.2, num_modes=4)
    assert twisted.frequency == pytest.approx(0.2, abs=1e-12)
    torch.testing.assert_close(twisted.growth_rates, torch.tensor([0.0, -0.25, -0.5, -0.5], dtype=torch.float64), rtol=0, atol=1e-9)
    assert twisted.stability == "neutral"


def test_firing_rate_pitchfork_on_the_power_law_is_at_one_over_mu_max():
    n = 2000
    measure = DigraphMeasure.power_law(0.25)
    gc = critical_gain(measure)
    net = FiringRateNetwork.on_digraph_measure(n, measure, gain=torch.tensor([[0.9 * gc], [1.1 * gc]], dtype=torch.float64))
    t = torch.linspace(0, 5, 26, dtype=torch.float64)
    u = odeint(net, torch.full((2, n), 1e-3, dtype=torch.float64), t, method="rk4", options={"step_size": 0.05})
    amp = (u * grid_positions(n) ** -0.25).mean(-1)
    rates = exponential_rate(t[5:], amp[5:])
    assert rates[0] < 0 < rates[1]
    # the N = 2000 sample's top eigenvalue is 0.8 % below the limit's 2 (the singular kernel's first nodes)
    assert critical_coupling_from_rates([0.9 * gc, 1.1 * gc], rates) == pytest.approx(gc, rel=0.015)
