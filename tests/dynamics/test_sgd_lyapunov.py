"""sgd_lyapunov and its parts against exact answers: the closed-form 1-D cases, the NTK and the
output Hessians against dense autograd, the Wu–Ma–E quantities against dense matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_dyn.dynamics import critical_lr, empirical_ntk, sgd_lyapunov
from lightning_dyn.dynamics.linearised_sgd import output_hessian_roots


def half_mse(f, y):
    return 0.5 * ((f - y) ** 2).sum(1).mean()


def one_d_problem(values):
    """A one-parameter model f(x) = w·x at w = 0 with x_i = √h_i, y_i = 0: H_i = h_i."""
    model = nn.Linear(1, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    x = torch.tensor(values, dtype=torch.float64).sqrt().view(-1, 1)
    return model, (x, torch.zeros_like(x))


@pytest.mark.parametrize("values, truth, gd, crit", [
    ([0.9, 3.6], -0.673537, 0.223144, 4.5 / 3.24),  # |(1−0.9η)(1−3.6η)| = 1 at η = 4.5/3.24
    ([0.0, 3.9], 0.532355, -0.051293, 2 / 3.9),
])
def test_one_dimensional_ground_truths(values, truth, gd, crit):
    model, data = one_d_problem(values)
    # reshuffling over two samples multiplies both maps every epoch: the estimate is exact
    r = sgd_lyapunov(model, half_mse, data, lr=1.0, batch_size=1, sampling="reshuffle", num_steps=400)
    assert r.exponent == pytest.approx(truth, abs=1e-6) and r.stderr < 1e-9
    assert r.gd_exponent == pytest.approx(gd, abs=1e-6)
    assert r.critical_lr == pytest.approx(crit, rel=2e-3)
    assert r.near_interpolation and r.loss == 0.0 and r.dim == 1
    # i.i.d. batches: E log|1 − h_ξ| within 3 standard errors
    iid = sgd_lyapunov(model, half_mse, data, lr=1.0, batch_size=1, sampling="iid", num_steps=8000, num_lrs=4)
    assert abs(iid.exponent - truth) <= 3 * iid.stderr and iid.stderr < 0.03


def test_sgd_stable_where_gd_and_mean_square_are_not():
    model, data = one_d_problem([0.9, 3.6])
    r = sgd_lyapunov(model, half_mse, data, lr=1.0, batch_size=1, num_steps=200)
    assert r.stable and r.gd_exponent > 0
    assert r.mean_square == pytest.approx(3.385, rel=1e-6) and not r.mean_square_stable  # E(1−h)²
    assert r.sharpness == pytest.approx(2.25, rel=1e-6)
    assert r.nonuniformity == pytest.approx(math.sqrt((0.81 + 12.96) / 2 - 2.25**2), rel=1e-6)


def test_wu_ma_e_quantities_match_dense_matrices():
    g = torch.Generator().manual_seed(0)
    n, d, B, lr = 7, 3, 2, 0.15
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    r = sgd_lyapunov(model, half_mse, (x, torch.zeros(n, 1, dtype=torch.float64)), lr=lr, batch_size=B, num_steps=200)
    Hs = torch.stack([torch.outer(v, v) for v in x])
    H = Hs.mean(0)
    sigma = (Hs @ Hs).mean(0) - H @ H
    gamma = (n - B) / (B * (n - 1))
    A = torch.eye(d, dtype=torch.float64) - lr * H
    ms = torch.linalg.eigvalsh(A @ A + lr**2 * gamma * sigma).max().item()
    assert r.sharpness == pytest.approx(torch.linalg.eigvalsh(H).max().item(), rel=1e-6)
    assert r.nonuniformity == pytest.approx(math.sqrt(torch.linalg.eigvalsh(sigma).max().item()), rel=1e-6)
    assert r.mean_square == pytest.approx(ms, rel=1e-6)
    h = torch.linalg.eigvalsh(H)
    assert r.gd_exponent == pytest.approx(math.log((1 - lr * h).abs().max().item()), rel=1e-6)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def _dense_ntk(model, x):
    params = [p for p in model.parameters()]
    out = model(x).reshape(-1)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, retain_graph=True)]) for o in out]
    J = torch.stack(rows)
    return J @ J.T


@pytest.mark.parametrize("method", ["structured", "explicit"])
def test_empirical_ntk_matches_the_dense_jacobian(method):
    model = _mlp()
    x = torch.randn(4, 3, dtype=torch.float64)
    ntk, out = empirical_ntk(model, x, method=method)
    assert torch.allclose(ntk, _dense_ntk(model, x), rtol=1e-10, atol=1e-12)
    assert torch.allclose(out, model(x))


def test_explicit_ntk_handles_batchnorm_in_eval_mode_and_refuses_too_large_jacobians():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    ntk, _ = empirical_ntk(model, x)  # auto falls back to explicit
    assert torch.allclose(ntk, _dense_ntk(model, x), rtol=1e-10, atol=1e-12)
    with pytest.raises(MemoryError, match="method='hvp'"):
        empirical_ntk(model, x, max_bytes=100)
    with pytest.raises(ValueError, match="structured"):
        empirical_ntk(model, x, method="structured")


def test_output_hessian_roots_of_cross_entropy_and_squared_error():
    f = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 2, 3])
    roots = output_hessian_roots(F.cross_entropy, f, y)
    p = f.softmax(1)
    want = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    assert torch.allclose(roots @ roots, want, atol=1e-12)
    roots = output_hessian_roots(half_mse, f, torch.zeros_like(f))
    assert torch.allclose(roots, torch.eye(4, dtype=torch.float64).expand(3, 4, 4), atol=1e-12)


def test_gram_on_cross_entropy_has_no_spurious_zero_exponent():
    """Softmax is shift-invariant: Λ_i has the null vector 1. Those directions are tangent and
    must not appear (they would pin λ at 0): the reduced dimension is n·(C−1)."""
    model = _mlp()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    r = sgd_lyapunov(model, F.cross_entropy, (x, y), lr=1e-3, batch_size=2, num_steps=200, num_lrs=4)
    assert r.dim == 6 and r.exponent < 0 and not r.near_interpolation


def test_critical_lr_interpolates_the_first_upward_crossing():
    assert critical_lr([1, 2, 4, 8], [-0.2, -0.1, 0.1, -0.5]) == pytest.approx(math.exp(math.log(2) + 0.5 * math.log(2)))
    assert math.isnan(critical_lr([1, 2], [-1.0, -0.5]))


def test_bad_inputs_say_what_is_wrong():
    model, data = one_d_problem([0.9, 3.6])
    with pytest.raises(ValueError, match="batch_size 3"):
        sgd_lyapunov(model, half_mse, data, lr=1.0, batch_size=3)
    with pytest.raises(ValueError, match="lr"):
        sgd_lyapunov(model, half_mse, data, lr=-1.0, batch_size=1)
    with pytest.raises(ValueError, match="method"):
        sgd_lyapunov(model, half_mse, data, lr=1.0, batch_size=1, method="exact")
    # the usual slips: the probe set in the criterion's place, a loss_fn(model, batch) passed as criterion
    with pytest.raises(TypeError, match="probe set goes third"):
        sgd_lyapunov(model, data, half_mse, lr=1.0, batch_size=1)
    with pytest.raises(TypeError, match="is a loss_fn: pass it as loss_fn="):
        sgd_lyapunov(model, lambda m, batch: half_mse(m(batch[0]), batch[1]), data, lr=1.0, batch_size=1)
    with pytest.raises(TypeError, match="needed by method='gram'"):
        sgd_lyapunov(model, None, data, lr=1.0, batch_size=1)
    nn.init.ones_(model.weight)
    with pytest.raises(ValueError, match="reduction='mean'"):
        sgd_lyapunov(model, lambda f, y: ((f - y) ** 2).sum(), data, lr=1.0, batch_size=1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_sgd_matches_an_independent_simulation_of_its_2x2_maps(nesterov):
    """Heavy ball / Nesterov on the 1-D problem: the state (x, b) evolves by a random 2×2 map; the
    pipeline (normal-space form + MomentumSGD) agrees with a direct simulation of those maps."""
    from lightning_dyn.dynamics import lyapunov_spectrum

    model, data = one_d_problem([0.9, 3.6])
    lr, beta = 0.5, 0.5
    r = sgd_lyapunov(model, half_mse, data, lr=lr, batch_size=1, momentum=beta, nesterov=nesterov, sampling="iid",
                     num_steps=20000, num_lrs=4)
    g = torch.Generator().manual_seed(5)
    hs = torch.tensor([0.9, 3.6], dtype=torch.float64)

    def step(V):
        h = hs[torch.randint(2, (V.shape[0],), generator=g)]
        one = torch.ones_like(h)
        top = [1 - lr * h * (1 + beta), -lr * beta**2 * one] if nesterov else [1 - lr * h, -lr * beta * one]
        M = torch.stack([torch.stack(top, -1), torch.stack([h, beta * one], -1)], -2)
        return M @ V

    ref = lyapunov_spectrum(step, 2, 1, 2000, generator=g, batch_shape=(64,)).exponents.reshape(-1)
    se = math.hypot(r.stderr, ref.std().item() / 8)
    assert abs(r.exponent - ref.mean().item()) <= 3 * se
    assert math.isnan(r.mean_square)  # Wu–Ma–E's analysis is for plain SGD


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_gd_exponent_crosses_zero_at_the_optimizer_threshold(nesterov):
    """μ of (momentum) GD is negative just below η = (2+2β)/h (Nesterov: /(1+2β)) and positive just above —
    the same thresholds as ``stability_threshold``."""
    from lightning_dyn.dynamics.sgd_stability import gd_exponent, gd_threshold_lr

    h, beta = 3.0, 0.9
    edge = gd_threshold_lr(h, beta, nesterov)
    assert edge == pytest.approx((2 + 2 * beta) / ((1 + 2 * beta) if nesterov else 1) / h)
    assert gd_exponent(0.999 * edge, [h], beta, nesterov) < 0 < gd_exponent(1.001 * edge, [h], beta, nesterov)
    # heavy ball: the log of the largest root of z² − (1 + β − ηh) z + β
    roots = np.roots([1, -(1 + beta - 0.3 * h), beta])
    assert gd_exponent(0.3, [h], beta) == pytest.approx(math.log(np.abs(roots).max()), rel=1e-12)
