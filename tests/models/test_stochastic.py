"""Additive-noise SDE integration against the closed forms of the Ornstein–Uhlenbeck process."""

import math

import pytest
import torch

from lightning_dyn.models import KuramotoNetwork, sdeint_additive


def _ou_stationary_variance(method, lam, sigma, dt):
    if method == "euler_maruyama":
        return sigma**2 / (lam * (2 - lam * dt))
    a = 1 - lam * dt + (lam * dt) ** 2 / 2
    return sigma**2 * dt * (1 - lam * dt / 2) ** 2 / (1 - a**2)


@pytest.mark.parametrize("method", ["euler_maruyama", "heun"])
def test_ornstein_uhlenbeck_stationary_variance_is_the_schemes_closed_form(method):
    """dX = −λX dt + σ dW with λΔt = 0.8: the schemes' stationary variances differ from σ²/2λ by
    +67% (Euler–Maruyama) and −21% (Heun); 40 000 paths measure them to about 1%."""
    lam, sigma, dt = 2.0, 1.5, 0.4
    x0 = torch.zeros(40_000, dtype=torch.float64)
    x = sdeint_additive(lambda t, x: -lam * x, x0, [0.0, 10.0], sigma, step_size=dt, method=method,
                        generator=torch.Generator().manual_seed(0))[-1]
    expected = _ou_stationary_variance(method, lam, sigma, dt)
    assert float(x.var()) == pytest.approx(expected, rel=0.03)
    assert abs(expected / (sigma**2 / (2 * lam)) - 1) > 0.15  # the check can tell the scheme from the exact law


def test_heun_is_weakly_second_order_euler_maruyama_first():
    """The stationary-variance error against σ²/2λ falls as Δt (EM) and Δt² (Heun): closed forms."""
    lam, sigma = 1.0, 1.0
    exact = sigma**2 / (2 * lam)
    for method, order in (("euler_maruyama", 1), ("heun", 2)):
        errors = [abs(_ou_stationary_variance(method, lam, sigma, dt) - exact) for dt in (0.02, 0.01)]
        assert math.log2(errors[0] / errors[1]) == pytest.approx(order, abs=0.05)


def test_paths_are_reproducible_from_the_generator_and_independent_across_a_batch():
    f = lambda t, x: -x  # noqa: E731
    run = lambda seed: sdeint_additive(f, torch.zeros(3, 50, dtype=torch.float64), torch.linspace(0, 1, 5), 0.5,  # noqa: E731
                                       step_size=0.01, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(run(1), run(1), rtol=0, atol=0)
    assert not torch.equal(run(1), run(2))
    paths = run(1)[-1]
    assert not torch.equal(paths[0], paths[1])
    assert run(1).shape == (5, 3, 50)


def test_kuramoto_noise_is_sqrt_2d_dw():
    """Uncoupled noisy oscillators: θ(t) − ωt ~ N(0, 2Dt), so E e^{i(θ − ωt)} = e^{−Dt} exactly (for any Δt)."""
    D, omega, t_end = 0.3, 0.7, 2.0
    net = KuramotoNetwork(torch.full((20_000,), omega, dtype=torch.float64), 0.0, noise=D)
    t, theta = net.simulate(torch.zeros(20_000, dtype=torch.float64), (0.0, t_end), step_size=0.1, num_saves=3,
                            generator=torch.Generator().manual_seed(0))
    z = torch.exp(1j * (theta[-1] - omega * t_end)).mean()
    assert float(z.real) == pytest.approx(math.exp(-D * t_end), abs=4 / math.sqrt(20_000))
    assert float((theta[-1] - omega * t_end).var()) == pytest.approx(2 * D * t_end, rel=0.04)


def test_methods_match_the_noise():
    noisy = KuramotoNetwork(torch.zeros(5, dtype=torch.float64), 1.0, noise=0.1)
    with pytest.raises(ValueError, match="with noise"):
        noisy.simulate(torch.zeros(5, dtype=torch.float64), method="rk4")
    clean = KuramotoNetwork(torch.zeros(5, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="integrates noise"):
        clean.simulate(torch.zeros(5, dtype=torch.float64), method="heun")
    with pytest.raises(ValueError, match="noise"):
        KuramotoNetwork(torch.zeros(5, dtype=torch.float64), 1.0, noise=-1.0)
    with pytest.raises(ValueError, match="method"):
        sdeint_additive(lambda t, x: x, torch.zeros(2), [0.0, 1.0], 1.0, step_size=0.1, method="milstein")
