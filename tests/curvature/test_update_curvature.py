"""The secant curvature along the update against the exact Rayleigh quotients of a quadratic."""

import pytest
import torch

from lightning_dyn.curvature import UpdateCurvature


def _quadratic(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.linspace(0.5, 10.0, n, dtype=torch.float64)
    return Q @ torch.diag(eigenvalues) @ Q.T, eigenvalues.max().item()


def test_secant_is_the_rayleigh_quotient_of_the_update_on_a_quadratic():
    A, top = _quadratic()
    theta = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    curvature = UpdateCurvature()
    assert curvature.observe([theta], [A @ theta]) is None  # no update yet
    for _ in range(30):
        d = -0.15 * (A @ theta)
        new = theta + d
        value = curvature.observe([new], [A @ new])
        assert value == pytest.approx(float(d @ A @ d / (d @ d)), rel=1e-12)
        assert value <= top * (1 + 1e-12)
        theta = new


def test_at_the_edge_gradient_descent_update_meets_the_top_eigenvalue():
    """GD with η just past 2/λ_max: the iterate ends oscillating along the top eigenvector, so the
    curvature along the update converges to λ_max itself (the lower bound becomes tight)."""
    A, top = _quadratic()
    theta = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    curvature, eta = UpdateCurvature(), 2.02 / top
    values = []
    for _ in range(300):
        values.append(curvature.observe([theta], [A @ theta]))
        theta = theta - eta * (A @ theta)
    assert values[-1] == pytest.approx(top, rel=1e-6)
    assert curvature.smoothed == pytest.approx(top, rel=1e-3)


def test_a_preconditioned_update_is_measured_in_its_metric():
    """d = −η P⁻¹ g: the secant in the metric P/η is the Rayleigh quotient of D A D (D² = η/P) at
    w = D⁻¹ d, so it is bounded by λ_max(η P⁻¹ A)."""
    A, _ = _quadratic()
    P = torch.linspace(0.5, 3.0, 12, dtype=torch.float64)
    eta = 0.1
    D = (eta / P).sqrt()
    top = torch.linalg.eigvalsh(D[:, None] * A * D[None, :]).max().item()
    theta = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    curvature = UpdateCurvature()
    curvature.observe([theta], [A @ theta], [P / eta])
    for _ in range(20):
        d = -eta * (A @ theta) / P
        new = theta + d
        value = curvature.observe([new], [A @ new], [P / eta])
        w = d / D
        assert value == pytest.approx(float(w @ (D[:, None] * A * D[None, :]) @ w / (w @ w)), rel=1e-10)
        assert value <= top * (1 + 1e-12)
        theta = new


def test_several_tensors_no_step_and_state():
    A, _ = _quadratic(4)
    curvature = UpdateCurvature(smoothing=0.5)
    a, b = torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    grad = lambda a, b: (A @ torch.cat([a, b])).split(2)  # noqa: E731
    curvature.observe([a, b], list(grad(a, b)))
    assert curvature.observe([a, b], list(grad(a, b))) is None  # the step was not taken (d = 0)
    a2, b2 = a - 0.1, b + 0.2
    d = torch.cat([a2 - a, b2 - b])
    assert curvature.observe([a2, b2], list(grad(a2, b2))) == pytest.approx(float(d @ A @ d / (d @ d)))
    state = curvature.state_dict()
    fresh = UpdateCurvature(smoothing=0.5)
    fresh.load_state_dict(state)
    assert fresh.smoothed == curvature.smoothed and fresh.count == 1
    assert fresh.observe([a2, b2], list(grad(a2, b2))) is None  # the kept step is not checkpointed
    with pytest.raises(ValueError, match="smoothing"):
        UpdateCurvature(smoothing=0.0)


def test_a_coordinate_sample_estimates_the_secant_of_a_large_model():
    """Above max_coordinates the sums run over a fixed stratified sample: the ratio stays close to the
    exact secant (a network-like update: many coordinates, curvature spread over them)."""
    n = 40_000
    g = torch.Generator().manual_seed(4)
    diag = torch.rand(n, generator=g, dtype=torch.float64) * 5  # a diagonal Hessian, eigenvalues in [0, 5]
    theta = [torch.randn(n // 2, generator=g, dtype=torch.float64), torch.randn(n // 2, generator=g, dtype=torch.float64)]
    grad = lambda ts: list((diag * torch.cat(ts)).split(n // 2))  # noqa: E731
    exact, sampled = UpdateCurvature(max_coordinates=None), UpdateCurvature(max_coordinates=4000)
    for _ in range(5):
        gs = grad(theta)
        e, s = exact.observe(theta, gs), sampled.observe(theta, gs)
        if e is not None:
            assert s == pytest.approx(e, rel=0.05)
            assert s != e  # it did sample
        theta = [t - 0.05 * x for t, x in zip(theta, gs)]
    assert sampled._sample is not None and abs(sampled.sampled_coordinates - 4000) <= 64
    assert all(width == 64 for _, width in sampled._sample)  # whole blocks of these long tensors
