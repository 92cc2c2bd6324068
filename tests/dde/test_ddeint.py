"""ddeint on the linear delay equation y′ = −K·y(t − τ), against its closed forms.

With the constant history 1 and K = 1 the solution is a polynomial on each [(m−1)τ, mτ]:
``y(t) = Σ_{k ≥ 0, (k−1)τ ≤ t} (−1)^k (t − (k−1)τ)^k / k!`` (the method of steps done by hand).
Solutions ``e^{λt}`` need ``λ = −K e^{−λτ}``, i.e. ``λτ = W_j(−Kτ)`` on the branches of Lambert's W
(Hayes 1950; Bellen & Zennaro 2003, §2.4): the rightmost root is on the principal branch; it is
real and double at ``Kτ = 1/e``, and crosses the imaginary axis at ``Kτ = π/2`` (stable iff below).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.special import lambertw

from lightning_dyn.dde import TABLEAUS, ddeint, solve_dde


def negative_feedback(K: float):
    def f(t, y, delayed):
        return -K * delayed[0]
    return f


ONE = torch.ones(1, dtype=torch.float64)


def method_of_steps_by_hand(t: float, tau: float) -> float:
    return math.fsum((-1) ** k * (t - (k - 1) * tau) ** k / math.factorial(k)
                     for k in range(int(t / tau) + 2) if (k - 1) * tau <= t)


@pytest.mark.parametrize("tau, step, tol", [(1.0, 0.1, 1e-12), (0.37, 0.1, 1e-7), (0.03, 0.1, 1e-6)])
def test_the_exact_piecewise_polynomial_solution(tau, step, tol):
    times = [0.25, 0.9, 1.3, 2.0, 3.0]
    got = ddeint(negative_feedback(1.0), ONE, [tau], t_span=(0.0, 3.0), t_eval=times, step_size=step).reshape(-1)
    want = [method_of_steps_by_hand(t, tau) for t in times]
    assert got.tolist() == pytest.approx(want, abs=tol)


def test_rk4_keeps_its_order_with_a_delay_shorter_than_the_step():
    exact = method_of_steps_by_hand(2.0, 0.03)
    errors = [abs(ddeint(negative_feedback(1.0), ONE, [0.03], t_span=(0.0, 2.0), step_size=h).item() - exact)
              for h in (0.1, 0.05)]
    assert errors[0] / errors[1] > 8  # fourth order: 16 in the limit


def rightmost_root(K: float, tau: float) -> complex:
    return complex(lambertw(-K * tau, 0)) / tau


def decay_rate(K: float, tau: float, t_end: float) -> float:
    """The growth rate of ``max|y|`` over one period of the rightmost root, measured late."""
    sol = solve_dde(negative_feedback(K), ONE, [tau], t_span=(0.0, t_end), step_size=0.02)
    period = 2 * math.pi / abs(rightmost_root(K, tau).imag)
    grid = torch.linspace(t_end - 2 * period, t_end, 801, dtype=torch.float64)
    y = sol.at(grid).abs().reshape(-1)
    first, last = y[:400].max().item(), y[400:].max().item()
    return math.log(last / first) / period


@pytest.mark.parametrize("K_tau", [1.0, 1.4, math.pi / 2, 1.7, 2.5])
def test_stable_iff_K_tau_below_pi_over_2(K_tau):
    rate = decay_rate(K_tau, 1.0, t_end=30.0)
    want = rightmost_root(K_tau, 1.0).real
    assert rate == pytest.approx(want, abs=2e-3)
    if K_tau < math.pi / 2 - 0.1:
        assert rate < -0.05
    elif K_tau > math.pi / 2 + 0.1:
        assert rate > 0.05


def test_the_double_real_root_at_K_tau_one_over_e():
    """At Kτ = 1/e, λ = −1/τ is a double root: ``y(t)·e^{t/τ}`` becomes affine in t (below, it
    would converge; above, oscillate)."""
    tau = 1.0
    K, lam = 1 / math.e, -1 / tau  # λ = −K e^{−λτ} and its derivative 1 + Kτ e^{−λτ} vanishes: a double root
    assert lam == pytest.approx(-K * math.exp(-lam * tau)) and 1 - K * tau * math.exp(-lam * tau) == pytest.approx(0)
    t = torch.tensor([20.0, 25.0, 30.0, 35.0], dtype=torch.float64)
    y = ddeint(negative_feedback(1 / math.e), ONE, [tau], t_span=(0.0, 35.0), t_eval=t, step_size=0.02).reshape(-1)
    z = (y * torch.exp(t / tau)).tolist()
    slopes = [(b - a) / 5 for a, b in zip(z, z[1:])]
    assert slopes[0] != pytest.approx(0.0, abs=1e-3)
    assert slopes == pytest.approx([slopes[0]] * 3, rel=1e-4)
    below = ddeint(negative_feedback(0.3), ONE, [tau], t_span=(0.0, 35.0), t_eval=t, step_size=0.02).reshape(-1)
    assert (below > 0).all()  # real roots: no oscillation
    above = ddeint(negative_feedback(0.45), ONE, [tau], t_span=(0.0, 35.0),
                   t_eval=torch.linspace(0, 35, 351, dtype=torch.float64), step_size=0.02).reshape(-1)
    assert (above < 0).any()  # complex roots: it oscillates


def test_the_tableau_table_and_unknown_names():
    for name, tab in TABLEAUS.items():
        assert math.isclose(sum(tab.b), 1.0) and len(tab.c) == len(tab.b) == len(tab.a)
        for ci, row in zip(tab.c, tab.a):
            assert math.isclose(sum(row), ci, abs_tol=1e-15)  # row sums are the nodes
    with pytest.raises(ValueError, match="solver must be one of"):
        ddeint(negative_feedback(1.0), ONE, [1.0], solver="dopri5")
    with pytest.raises(ValueError, match="delays is empty"):
        ddeint(negative_feedback(1.0), ONE, [])
