"""The central flow against ground truth: gradient flow on a quadratic (matrix exponential), a
two-parameter model whose sharpness and its gradient are explicit formulas (scipy ``solve_ivp`` on
those formulas), two interacting-free unstable directions (each block's own ``solve_ivp``), and the
complementarity problem against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm
from scipy.optimize import minimize

from lightning_dyn.dynamics import CentralFlow, complementarity_residual, module_loss, solve_complementarity

ETA = 0.5  # threshold 2/η = 4


# -- the complementarity problem --------------------------------------------------------------------
def brute_force_lcp(a: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Every active set tried: x_S = −M_SS⁻¹ a_S, feasible and complementary."""
    k = len(a)
    found = []
    for r in range(k + 1):
        for S in itertools.combinations(range(k), r):
            x = np.zeros(k)
            if S:
                x[list(S)] = np.linalg.solve(M[np.ix_(S, S)], -a[list(S)])
            w = a + M @ x
            if (x >= -1e-12).all() and (w >= -1e-10).all():
                found.append(x)
    assert len(found) >= 1
    return found[0]


@pytest.mark.parametrize("seed", range(6))
def test_orthant_complementarity_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = 1 + seed % 4
    G = rng.normal(size=(k, k + 3))
    M = G @ G.T
    a = rng.normal(size=k)
    x = solve_complementarity(a, M, cone="orthant")
    np.testing.assert_allclose(x, brute_force_lcp(a, M), atol=1e-8)
    assert complementarity_residual(a, M, x, cone="orthant") < 1e-8


def psd_instance(rng, k, d=12):
    """A random problem built like the flow's: G_ij = G_ji vectors, 𝒦 = ½ Gram, A_ij = ⟨G_ij, g⟩."""
    G = rng.normal(size=(k, k, d))
    G = (G + G.transpose(1, 0, 2)) / 2
    g = rng.normal(size=d)
    A = np.einsum("ijd,d->ij", G, g)
    K = 0.5 * np.einsum("ijd,kld->ijkl", G, G)
    return A, K


@pytest.mark.parametrize("seed", range(4))
def test_semidefinite_complementarity_is_the_minimiser_found_by_brute_force(seed):
    """The SDCP is the optimality condition of min_{X⪰0} ⟨A,X⟩ + ½⟨X,𝒦X⟩; brute force: that convex
    objective minimised over X = VVᵀ (V full k×k) by BFGS from many random starts."""
    rng = np.random.default_rng(100 + seed)
    k = 2 + seed % 2
    A, K = psd_instance(rng, k)
    X = solve_complementarity(A, K)
    assert complementarity_residual(A, K, X) < 1e-7
    flat = K.reshape(k * k, k * k)

    def objective(v):
        V = v.reshape(k, k)
        Y = V @ V.T
        return float(np.sum(A * Y) + 0.5 * Y.reshape(-1) @ flat @ Y.reshape(-1))

    best = min((minimize(objective, rng.normal(size=k * k), method="BFGS", options={"gtol": 1e-12})
                for _ in range(20)), key=lambda r: r.fun)
    V = best.x.reshape(k, k)
    np.testing.assert_allclose(X, V @ V.T, atol=1e-4)
    assert objective(np.linalg.cholesky(X + 1e-14 * np.eye(k)).reshape(-1)) <= best.fun + 1e-9


def test_complementarity_of_separable_directions_is_diagonal_and_the_lcp():
    rng = np.random.default_rng(7)
    d, k = 10, 3
    G = np.zeros((k, k, d))
    for i in range(k):  # direction i's curvature depends on its own coordinates only; no cross terms
        G[i, i, 3 * i:3 * i + 3] = rng.normal(size=3)
    g = rng.normal(size=d)
    A = np.einsum("ijd,d->ij", G, g)
    K = 0.5 * np.einsum("ijd,kld->ijkl", G, G)
    X = solve_complementarity(A, K)
    M = np.array([[K[i, i, j, j] for j in range(k)] for i in range(k)])
    np.testing.assert_allclose(X, np.diag(brute_force_lcp(np.diag(A), M)), atol=1e-8)


def test_complementarity_refuses_an_unknown_cone():
    with pytest.raises(ValueError, match="cone"):
        solve_complementarity(np.zeros(1), np.eye(1), cone="box")


# -- the flow -----------------------------------------------------------------------------------------
def test_central_flow_of_a_quadratic_below_the_edge_is_gradient_flow():
    """L = ½wᵀHw − bᵀw with λ_max(H) < 2/η: no edge, the flow is gradient flow,
    w(t) = w* + exp(−ηHt)(w₀ − w*)."""
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    H = Q @ np.diag([3.5, 2.0, 1.0, 0.5, 0.1]) @ Q.T
    b = rng.normal(size=5)
    Ht, bt = torch.tensor(H), torch.tensor(b)
    w0 = rng.normal(size=5)
    flow = CentralFlow(lambda w: 0.5 * w @ Ht @ w - bt @ w, torch.tensor(w0), ETA, k=2, dt=0.05)
    points = flow.run(10.0, every=5.0)
    star = np.linalg.solve(H, b)
    exact = star + expm(-ETA * H * 10.0) @ (w0 - star)
    np.testing.assert_allclose(flow.w.numpy(), exact, rtol=0, atol=1e-5)
    assert all(p.held == 0 and p.sigma2 == 0 for p in points)
    assert points[-1].sharpness == pytest.approx(3.5, rel=1e-8)


def explicit_parts(w, h, dh, d2h, dg, d2g):
    """L = ½h(y)x² + g(y): ∇L, S = λ_max(∇²L) and ∇S = (uᵀ∂ₓHu, uᵀ∂ᵧHu) from the formulas."""
    x, y = w
    grad_l = np.array([h(y) * x, 0.5 * dh(y) * x * x + dg(y)])
    H = np.array([[h(y), dh(y) * x], [dh(y) * x, 0.5 * d2h(y) * x * x + d2g(y)]])
    dHx = np.array([[0.0, dh(y)], [dh(y), d2h(y) * x]])
    dHy = np.array([[dh(y), d2h(y) * x], [d2h(y) * x, 0.0]])  # h''' = g''' = 0 below
    values, vectors = np.linalg.eigh(H)
    u = vectors[:, -1]
    return grad_l, values[-1], np.array([u @ dHx @ u, u @ dHy @ u])


def reference_flow(parts, w0, until, eta=ETA):
    """The central flow of one direction on the explicit formulas, by solve_ivp (RK45, tight)."""
    def rhs(t, w):
        grad_l, S, grad_s = parts(w)
        sigma2 = max(0.0, -2 * grad_l @ grad_s / (grad_s @ grad_s)) if S >= 2 / eta * (1 - 1e-9) else 0.0
        return -eta * (grad_l + 0.5 * sigma2 * grad_s)

    return solve_ivp(rhs, (0, until), w0, rtol=1e-11, atol=1e-12, max_step=0.01, dense_output=True)


def block(c: float, a: float):
    """h(y) = 1 + a y², g(y) = −c y: sharpening along y until h(y*) = 2/η, then σ² = 2c/h'(y*)."""
    return dict(h=lambda y: 1 + a * y * y, dh=lambda y: 2 * a * y, d2h=lambda y: 2 * a + 0 * y,
                dg=lambda y: -c + 0 * y, d2g=lambda y: 0 * y)


def test_two_parameter_model_against_solve_ivp_on_the_formulas():
    f = block(c=1.0, a=1.0)
    w0, until = np.array([0.3, 0.0]), 8.0
    ref = reference_flow(lambda w: explicit_parts(w, **f), w0, until)
    flow = CentralFlow(lambda w: 0.5 * (1 + w[1] ** 2) * w[0] ** 2 - w[1], torch.tensor(w0), ETA, k=1, dt=0.02)
    points = flow.run(until, every=1.0)
    # the trajectory, within Heun's O(dt²) of the reference
    np.testing.assert_allclose(flow.w.numpy(), ref.y[:, -1], atol=2e-4)
    entered = next(p.t for p in points if p.held)
    assert 1.0 < entered <= 5.0  # reached 2/η during the run: the edge phase is tested
    held = [p for p in points if p.held and p.t >= entered + 1]
    assert held and all(abs(p.sharpness / (2 / ETA) - 1) < 1e-3 for p in held)
    y_star = np.sqrt(2 / ETA - 1)  # h(y*) = 2/η
    assert points[-1].sigma2 == pytest.approx(2 * 1.0 / (2 * y_star), rel=2e-3)  # σ² = 2c / h'(y*)
    # the time-averaged loss: L + ½σ²S = L + σ²/η
    assert points[-1].time_averaged_loss == pytest.approx(points[-1].loss + points[-1].sigma2 / ETA, rel=1e-3)


def test_two_unstable_directions_against_each_blocks_solve_ivp():
    """Two copies with no coupling reach 2/η at different times and are then both held (the
    eigenvalue 2/η is double: the covariance is found in whatever basis the solver returns)."""
    f1, f2 = block(c=1.0, a=1.0), block(c=0.5, a=3.0)

    def loss(w):
        return (0.5 * (1 + w[1] ** 2) * w[0] ** 2 - w[1]) + (0.5 * (1 + 3 * w[3] ** 2) * w[2] ** 2 - 0.5 * w[3])

    w0, until = np.array([0.3, 0.0, 0.2, 0.0]), 10.0
    flow = CentralFlow(loss, torch.tensor(w0), ETA, k=3, dt=0.02)
    points = flow.run(until, every=1.0)
    for sl, f in ((slice(0, 2), f1), (slice(2, 4), f2)):
        ref = reference_flow(lambda w, f=f: explicit_parts(w, **f), w0[sl], until)
        np.testing.assert_allclose(flow.w.numpy()[sl], ref.y[:, -1], atol=5e-4)
    assert points[-1].held == 2
    expected = sorted([2 * 1.0 / (2 * np.sqrt(3.0)), 2 * 0.5 / (2 * 3 * np.sqrt(1.0))], reverse=True)
    np.testing.assert_allclose(points[-1].covariance, expected, rtol=5e-3)


def test_module_loss_is_the_module_loss_and_leaves_the_module_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    batch = (torch.randn(8, 3), torch.randn(8, 2))
    before = [p.detach().clone() for p in model.parameters()]
    loss, w0 = module_loss(model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), batch)
    assert w0.dtype == torch.float64 and w0.numel() == sum(p.numel() for p in model.parameters())
    expected = ((model.double()(batch[0].double()) - batch[1].double()) ** 2).mean()
    model.float()
    assert float(loss(w0)) == pytest.approx(float(expected), rel=1e-12)
    assert float(loss(w0 + 0.1)) != pytest.approx(float(expected), rel=1e-3)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_central_flow_refuses_bad_arguments():
    w = torch.zeros(2, dtype=torch.float64)
    for kwargs, match in (({"lr": 0}, "lr"), ({"lr": 1, "dt": 0}, "dt"), ({"lr": 1, "method": "rk4"}, "method"),
                          ({"lr": 1, "k": 3}, "k")):
        with pytest.raises(ValueError, match=match):
            CentralFlow(lambda x: x @ x, w, **kwargs)


def test_a_resumed_flow_continues_where_it_stopped():
    def loss(w):
        return 0.5 * (1 + w[1] ** 2) * w[0] ** 2 - w[1]

    w0 = torch.tensor([0.3, 0.0], dtype=torch.float64)
    straight = CentralFlow(loss, w0, ETA, k=1, dt=0.05)
    straight.run(4.0)
    first = CentralFlow(loss, w0, ETA, k=1, dt=0.05)
    first.run(2.0)
    second = CentralFlow(loss, torch.zeros(2, dtype=torch.float64), ETA, k=1, dt=0.05)
    second.load_state_dict(first.state_dict())
    second.run(4.0)
    assert second.t == pytest.approx(straight.t)
    torch.testing.assert_close(second.w, straight.w, rtol=0, atol=1e-10)
    third = CentralFlow(loss, w0, ETA, k=1, dt=0.05)
    third.load_state_dict(first.state_dict())  # a loaded warm start (vectors, not a result) checkpoints again
    torch.testing.assert_close(third.state_dict()["eigenvectors"], first.state_dict()["eigenvectors"])
