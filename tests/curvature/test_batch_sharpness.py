"""Batch sharpness against closed forms: the exact expectation over every mini-batch of a small
least-squares problem, and at full batch the Rayleigh quotient of the dense Hessian along the
gradient; the mini-batches drawn as training would draw them, without moving any user generator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn.curvature import BatchSharpnessSampler, batch_sharpness
from lightning_dyn.curvature.probe import draw_minibatches


def half_mse(model, batch):
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).sum(-1).mean()


def test_batch_sharpness_of_least_squares_is_the_exact_expectation_over_all_minibatches():
    """f(x) = xᵀw: L_B = ½ mean_B (xᵀw − y)², H_B = X_BᵀX_B/b, g_B = H_B w − X_Bᵀy_B/b; the batch
    sharpness is the mean over all C(n, b) batches of g_BᵀH_Bg_B/g_Bᵀg_B."""
    rng = np.random.default_rng(0)
    n, d, b = 7, 4, 3
    X, y, w = rng.normal(size=(n, d)), rng.normal(size=(n, 1)), rng.normal(size=(d, 1))
    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w.T))
    batches, ratios, num, den = [], [], [], []
    for chosen in itertools.combinations(range(n), b):
        Xb, yb = X[list(chosen)], y[list(chosen)]
        H = Xb.T @ Xb / b
        g = H @ w - Xb.T @ yb / b
        ratios.append((g.T @ H @ g).item() / (g.T @ g).item())
        num.append((g.T @ H @ g).item())
        den.append((g.T @ g).item())
        batches.append((torch.tensor(Xb), torch.tensor(yb)))
    est = batch_sharpness(model, half_mse, batches)
    assert est.num_batches == len(batches) == 35 and est.products == 35
    assert est.value == pytest.approx(np.mean(ratios), rel=1e-12)
    assert est.ratio_of_expectations == pytest.approx(np.mean(num) / np.mean(den), rel=1e-12)
    assert est.standard_error == pytest.approx(np.std(ratios, ddof=1) / np.sqrt(35), rel=1e-10)
    # the two definitions differ here: the test can tell which one is computed
    assert abs(np.mean(ratios) - np.mean(num) / np.mean(den)) > 1e-3


def test_full_batch_batch_sharpness_is_the_rayleigh_quotient_along_the_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    shapes = [p.shape for p in params]

    def loss_of(w):
        chunks = w.split([int(np.prod(s)) for s in shapes])
        named = dict(zip([n for n, _ in model.named_parameters()], [c.view(s) for c, s in zip(chunks, shapes)]))
        return half_mse(lambda inp: torch.func.functional_call(model, named, (inp,)), (x, y))

    H = torch.autograd.functional.hessian(loss_of, flat)
    g = torch.autograd.functional.jacobian(loss_of, flat)
    rayleigh = float(g @ H @ g / (g @ g))
    est = batch_sharpness(model, half_mse, [(x, y)])
    assert est.value == pytest.approx(rayleigh, rel=1e-10)
    assert est.value <= float(torch.linalg.eigvalsh(H)[-1]) + 1e-12
    assert est.standard_error == 0 and est.num_batches == 1


def test_a_zero_gradient_batch_is_left_out():
    model = torch.nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.tensor([[1.0, 2.0], [3.0, 1.0]], dtype=torch.float64)
    exact = (x, model(x).detach())  # fitted exactly: g_B = 0
    other = (x, torch.zeros(2, 1, dtype=torch.float64))
    est = batch_sharpness(model, half_mse, [exact, other])
    assert est.num_batches == 1 and est.products == 2
    assert est.value == pytest.approx(batch_sharpness(model, half_mse, [other]).value)


def test_minibatches_are_drawn_like_training_batches_without_moving_any_generator():
    data = TensorDataset(torch.arange(50.0).unsqueeze(1), torch.zeros(50, 1))
    user = torch.Generator().manual_seed(5)
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=user)
    before_user, before_global = user.get_state(), torch.random.get_rng_state()
    generator = torch.Generator().manual_seed(0)
    batches = draw_minibatches(loader, 200, generator=generator, device=torch.device("cpu"))
    assert torch.equal(user.get_state(), before_user) and torch.equal(torch.random.get_rng_state(), before_global)
    assert len(batches) == 200 and all(b[0].shape == (8, 1) for b in batches)
    assert all(len(set(b[0].flatten().tolist())) == 8 for b in batches)  # without replacement in a batch
    counts = np.bincount(torch.cat([b[0].flatten() for b in batches]).long().numpy(), minlength=50)
    assert counts.min() > 0 and counts.max() < 3 * counts.mean()  # every sample reachable, no bias to the front
    # full batch: the whole set, once; the global batch under DDP via size=
    assert len(draw_minibatches(DataLoader(data, batch_size=50), 10, generator=generator,
                                device=torch.device("cpu"))) == 1
    assert draw_minibatches(loader, 1, generator=generator, device=torch.device("cpu"), size=16)[0][0].shape == (16, 1)


def test_sampler_state_resumes_the_same_draws():
    data = TensorDataset(torch.randn(40, 3), torch.randn(40, 2))
    loader = DataLoader(data, batch_size=4)
    model = torch.nn.Linear(3, 2).double()
    loss = lambda m, b: half_mse(m, (b[0].double(), b[1].double()))  # noqa: E731
    a = BatchSharpnessSampler(5, seed=3)
    a.measure(model, loss, loader)
    state = a.state_dict()
    b = BatchSharpnessSampler(5, seed=99)
    b.load_state_dict(state)
    assert a.measure(model, loss, loader).value == b.measure(model, loss, loader).value
    with pytest.raises(ValueError, match="num_batches"):
        BatchSharpnessSampler(0)
