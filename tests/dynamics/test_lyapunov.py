"""lyapunov_spectrum against the closed forms of linear random maps.

Each case runs R independent replicas at once (``batch_shape``); their mean has a standard error
from the replica spread, and the batch-means standard error the function reports is checked
against that spread.
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dyn.dynamics import lyapunov_spectrum

R = 128


def _check(result, truth, tol=1e-2):
    exps = result.exponents  # (R, k)
    mean = exps.mean(0)
    se = exps.std(0) / math.sqrt(exps.shape[0])
    for m, s, t in zip(mean.tolist(), se.tolist(), truth):
        assert abs(m - t) <= max(3 * s, 1e-12) and abs(m - t) <= tol, (m, s, t)
    # the batch-means error of one replica agrees with the spread of replicas (within a factor 2)
    ratio = result.stderr.mean(0) / exps.std(0)
    assert ((ratio > 0.5) & (ratio < 2.0)).all(), ratio


def _one_d(values, g):
    hs = torch.tensor(values, dtype=torch.float64)

    def step(V):
        h = hs[torch.randint(len(hs), (V.shape[0], 1, 1), generator=g)]
        return (1 - h) * V
    return step


@pytest.mark.parametrize("values, truth, gd", [([0.9, 3.6], -0.673537, 0.223144), ([0.0, 3.9], 0.532355, -0.051293)])
def test_one_dimensional_products(values, truth, gd):
    g = torch.Generator().manual_seed(0)
    result = lyapunov_spectrum(_one_d(values, g), 1, 1, 2000, generator=g, batch_shape=(R,))
    _check(result, [truth])
    # the sign differs from GD's exponent: that is the point of the example
    assert math.copysign(1, truth) != math.copysign(1, gd)
    mean = sum(values) / 2
    assert math.log(abs(1 - mean)) == pytest.approx(gd, abs=1e-6)  # μ_GD = log|1 − η·mean h|


@pytest.mark.parametrize("u, truth", [(1.5, (-0.287682, -0.405465)), (2.5, (0.223144, 0.182322))])
def test_isotropic_rank_one_maps_in_two_dimensions(u, truth):
    g = torch.Generator().manual_seed(1)

    def step(V):
        theta = torch.rand(V.shape[0], generator=g, dtype=torch.float64) * 2 * math.pi
        x = torch.stack([theta.cos(), theta.sin()], dim=1).unsqueeze(-1)  # (R, 2, 1)
        return V - u * x @ (x.transpose(1, 2) @ V)

    result = lyapunov_spectrum(step, 2, 2, 1000, generator=g, batch_shape=(R,))
    _check(result, truth)
    assert math.log((1 + abs(1 - u)) / 2) == pytest.approx(truth[0], abs=1e-6)
    assert math.log(abs(1 - u)) == pytest.approx(sum(truth), abs=1e-6)


def test_gaussian_matrix_products():
    g = torch.Generator().manual_seed(2)
    s2, N = 0.5, 2
    truth = [0.5 * (math.log(2 * s2) + torch.special.digamma(torch.tensor((N - i + 1) / 2)).item()) for i in (1, 2)]
    assert truth == pytest.approx([-0.288608, -0.981755], abs=1e-6)

    def step(V):
        return math.sqrt(s2) * torch.randn(V.shape[0], N, N, generator=g, dtype=torch.float64) @ V

    _check(lyapunov_spectrum(step, N, 2, 1000, generator=g, batch_shape=(R,)), truth)


def _with_tangent_space(g, u=1.5, dim=5):
    """I − u·(U x̂)(U x̂)ᵀ on R^5: the normal space N = range(U) (2-D) carries the exponents
    (−0.2877, −0.4055); the three tangent directions are left fixed (exponent 0)."""
    U = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=torch.float64))[0]

    def step(V):
        theta = torch.rand((), generator=g, dtype=torch.float64) * 2 * math.pi
        x = U @ torch.stack([theta.cos(), theta.sin()])
        return V - u * torch.outer(x, x @ V)
    return U, step


def test_projection_keeps_a_negative_top_exponent_that_the_tangent_space_would_swallow():
    g = torch.Generator().manual_seed(3)
    U, step = _with_tangent_space(g)
    start = U @ torch.randn(2, 1, generator=g, dtype=torch.float64)  # in N exactly, up to round-off
    projected = lyapunov_spectrum(step, 5, 1, 8000, generator=g, init=start, project=lambda V: U @ (U.T @ V))
    # the same system in the 2×2 form on N
    def reduced(V):
        theta = torch.rand((), generator=g, dtype=torch.float64) * 2 * math.pi
        x = torch.stack([theta.cos(), theta.sin()])
        return V - 1.5 * torch.outer(x, x @ V)
    small = lyapunov_spectrum(reduced, 2, 1, 8000, generator=g)
    diff = abs(projected.exponents.item() - small.exponents.item())
    assert diff <= 3 * math.hypot(projected.stderr.item(), small.stderr.item())
    assert projected.exponents.item() == pytest.approx(-0.287682, abs=1e-2)
    # without projection round-off leaks into the tangent space and the estimate drifts to 0
    free = lyapunov_spectrum(step, 5, 1, 8000, generator=g, init=start)
    assert abs(free.exponents.item()) < 0.01 < abs(projected.exponents.item()) - 0.25


def test_bad_arguments():
    step = lambda V: V  # noqa: E731
    with pytest.raises(ValueError, match="k"):
        lyapunov_spectrum(step, 2, 3, 100)
    with pytest.raises(ValueError, match="num_steps"):
        lyapunov_spectrum(step, 2, 1, 5)
    with pytest.raises(ValueError, match="init"):
        lyapunov_spectrum(step, 2, 1, 100, init=torch.zeros(3, 1))
