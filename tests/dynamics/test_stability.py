"""Stability thresholds against their closed forms (Cohen et al. 2021) and against the real PyTorch optimizers on quadratics."""

import pytest
import torch
from torch import nn

from lightning_dyn.curvature import HessianOperator, PreconditionedOperator, top_eigenpairs
from lightning_dyn.dynamics import UnsupportedOptimizer, stability_scaling, stability_threshold
from tests.helpers import dense_hessian, mlp, mse_loss, regression_data


def _param():
    return nn.Parameter(torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("make,expected", [
    (lambda p: torch.optim.SGD(p, lr=0.01), 200.0),
    (lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), 380.0),
    (lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True), 135.714285714),
    (lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, dampening=0.5), 760.0),
    (lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.01), 19.99),
    (lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999)), 3800.0),
    (lambda p: torch.optim.AdamW(p, lr=0.01), 3800.0),
    (lambda p: torch.optim.RMSprop(p, lr=0.01), 200.0),
    (lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9), 380.0),
])
def test_thresholds_match_the_table(make, expected):
    assert stability_threshold(make([_param()])) == pytest.approx(expected, rel=1e-9)


def test_gd_on_the_science_quadratic():
    for lr, expected in [(0.19, 0.9**100), (0.21, 1.1**100)]:
        x = _param()
        opt = torch.optim.SGD([x], lr=lr)
        for _ in range(100):
            opt.zero_grad()
            (10 * x**2 / 2).sum().backward()
            opt.step()
        assert abs(float(x.detach())) == pytest.approx(expected, rel=1e-9)
        assert (10 < stability_threshold(opt)) == (lr == 0.19)


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True},
                                    {"momentum": 0.5, "dampening": 0.3}, {"weight_decay": 0.05}])
def test_real_sgd_is_stable_just_below_and_unstable_just_above(kwargs):
    lr = 0.1
    threshold = stability_threshold(torch.optim.SGD([_param()], lr=lr, **kwargs))
    for factor, stable in [(0.97, True), (1.03, False)]:
        x = _param()
        opt = torch.optim.SGD([x], lr=lr, **kwargs)
        h = factor * threshold
        for _ in range(3000):
            opt.zero_grad()
            (h * x**2 / 2).sum().backward()
            opt.step()
            if abs(float(x.detach())) > 1e6:
                break
        size = abs(float(x.detach()))
        assert (size < 1e-2) == stable and (size > 1e2) == (not stable), (factor, size)


def test_per_group_learning_rates_scale_the_hessian():
    """GD with per-parameter step sizes on ½xᵀHx is stable iff λ_max(η^½ H η^½) < 2."""
    H0 = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    lrs = (0.1, 0.02)
    for factor, stable in [(0.97, True), (1.03, False)]:
        a, b = _param(), _param()
        opt = torch.optim.SGD([{"params": [a], "lr": lrs[0]}, {"params": [b], "lr": lrs[1]}])
        scaling = stability_scaling(opt, [a, b])
        D = torch.diag(scaling.scale)
        H = H0 * factor * scaling.threshold / float(torch.linalg.eigvalsh(D @ H0 @ D).max())
        for _ in range(3000):
            opt.zero_grad()
            x = torch.cat([a, b])
            (0.5 * x @ H @ x).backward()
            opt.step()
            if float(torch.cat([a, b]).detach().abs().max()) > 1e6:
                break
        size = float(torch.cat([a, b]).detach().abs().max())
        assert (size < 1e-2) == stable and (size > 1e2) == (not stable)
    with pytest.raises(UnsupportedOptimizer, match="different lr"):
        stability_threshold(opt)


def _trained(optimizer_class, steps, **kwargs):
    """An MLP after a few steps of the optimizer, so its preconditioner state exists."""
    model = mlp()
    x, y = regression_data()
    opt = optimizer_class(model.parameters(), lr=0.01, **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        mse_loss(model, (x, y)).backward()
        opt.step()
    return model, opt, (x, y)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_preconditioned_sharpness_against_dense(amsgrad):
    model, opt, (x, y) = _trained(torch.optim.Adam, 5, amsgrad=amsgrad)
    params = list(model.parameters())
    scaling = stability_scaling(opt, params)
    assert scaling.preconditioned and scaling.threshold == pytest.approx(38.0)
    # the preconditioner, written out from Adam's state
    b1, b2 = opt.param_groups[0]["betas"]
    eps = opt.param_groups[0]["eps"]
    pieces = []
    for p in params:
        s = opt.state[p]
        t = float(s["step"])
        v = s["max_exp_avg_sq"] if amsgrad else s["exp_avg_sq"]
        pieces.append(((1 - b1**t) * (torch.sqrt(v / (1 - b2**t)) + eps)).reshape(-1))
    P = torch.cat(pieces)
    H = dense_hessian(model, mse_loss, [(x, y)])
    exact = float(torch.linalg.eigvals(torch.diag(0.01 / P) @ H).real.max())
    op = PreconditionedOperator(HessianOperator(model, mse_loss, [(x, y)]), scaling.scale)
    got = float(top_eigenpairs(op, tol=1e-10, max_matvecs=op.size).values[0])
    assert got == pytest.approx(exact, rel=1e-8)
    # and η·λ_max(P⁻¹H) compared with (2+2β1)/(1−β1) equals λ_max(P⁻¹H) compared with the table's threshold
    assert got / scaling.threshold == pytest.approx(exact / 0.01 / stability_threshold(opt), rel=1e-8)


def test_rmsprop_preconditioner_from_state():
    model, opt, _ = _trained(torch.optim.RMSprop, 3, centered=True)
    params = list(model.parameters())
    scaling = stability_scaling(opt, params)
    eps = opt.param_groups[0]["eps"]
    P = torch.cat([(torch.sqrt(opt.state[p]["square_avg"] - opt.state[p]["grad_avg"] ** 2) + eps).reshape(-1)
                   for p in params])
    torch.testing.assert_close(scaling.scale, (0.01 / P).sqrt(), rtol=1e-12, atol=0)
    assert scaling.threshold == pytest.approx(2.0)


def test_unsupported_and_premature_cases_say_so():
    with pytest.raises(UnsupportedOptimizer, match="Adagrad; supported: SGD"):
        stability_threshold(torch.optim.Adagrad([_param()], lr=0.1))
    p = _param()
    with pytest.raises(RuntimeError, match="before its first step"):
        stability_scaling(torch.optim.Adam([p], lr=0.1), [p])
    a, b = _param(), _param()
    mixed = torch.optim.SGD([{"params": [a], "momentum": 0.9}, {"params": [b], "momentum": 0.5}], lr=0.1)
    with pytest.raises(UnsupportedOptimizer, match="momentum"):
        stability_scaling(mixed, [a, b])
    # a parameter outside the optimizer is not moved by it: D = 0 there
    outside = _param()
    scaling = stability_scaling(torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.2}]), [a, outside])
    assert float(scaling.scale[1]) == 0.0


def test_a_reduction_and_a_rate_of_zero():
    p = nn.Parameter(torch.ones(3))
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.5)
    # the rate stepped with is lr_scale × the group's: (2 + 2β)/(η·s)
    assert stability_threshold(sgd, lr_scale=0.25) == pytest.approx(3 / (0.1 * 0.25))
    adam = torch.optim.Adam([p], lr=1e-3)
    p.grad = torch.tensor([1.0, 2.0, 4.0])
    adam.step()
    for group in adam.param_groups:
        group["lr"] = 0.0  # the end of a cosine schedule: no step, nothing unstable
    scaling = stability_scaling(adam, [p])
    assert scaling.threshold == float("inf")
    # D² = 1/P (the rates taken as equal), so λ_max(P⁻¹H) is still measured
    beta1, beta2 = adam.param_groups[0]["betas"]
    v = adam.state[p]["exp_avg_sq"].double()
    P = (1 - beta1) * ((v / (1 - beta2)).sqrt() + adam.param_groups[0]["eps"])
    torch.testing.assert_close(scaling.scale, P.rsqrt())
    assert stability_threshold(sgd, lr_scale=0.0) == float("inf")
