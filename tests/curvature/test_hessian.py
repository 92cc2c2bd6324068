import pytest
import torch
from torch import nn

from lightning_dyn.curvature import HessianOperator
from tests.helpers import cross_entropy_loss, dense_hessian, mlp, mse_loss, regression_data


def squared_error(model, batch):  # F.mse_loss has no forward-over-reverse rule in torch 2.13
    return ((model(batch[0]) - batch[1]) ** 2).mean()


@pytest.mark.parametrize("backend", ["double_backward", "forward_over_reverse"])
@pytest.mark.parametrize("cache_graph", [True, False])
@pytest.mark.parametrize("activation,loss", [(nn.Tanh, "mse"), (nn.ReLU, "mse"), (nn.Tanh, "ce")])
def test_products_match_dense_hessian(backend, cache_graph, activation, loss):
    model = mlp(activation)
    x, y = regression_data()
    loss_fn = squared_error if loss == "mse" else cross_entropy_loss
    if loss == "ce":
        y = y.argmax(1)
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]  # unequal sizes: weighting by batch size matters
    H = dense_hessian(model, loss_fn, batches)
    op = HessianOperator(model, loss_fn, batches, backend=backend, cache_graph=cache_graph)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(op.size, generator=g, dtype=torch.float64)
        torch.testing.assert_close(op @ v, H @ v, rtol=1e-10, atol=1e-12)
    assert op.num_matvecs == 3


def test_linear_regression_hessian_is_xtx_over_n():
    x, y = regression_data(n=30, d=5, c=1)
    model = nn.Linear(5, 1, bias=False).double()

    def loss(m, b):
        return 0.5 * ((m(b[0]) - b[1]) ** 2).mean()

    op = HessianOperator(model, loss, [(x, y)])
    H = torch.stack([op @ e for e in torch.eye(5, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(H, x.T @ x / 30, rtol=1e-12, atol=1e-14)


def test_float64_on_a_float32_model_matches_float64_reference():
    model = mlp(nn.Tanh, dtype=torch.float32)
    x, y = regression_data(dtype=torch.float32)
    op = HessianOperator(model, mse_loss, [(x, y)], dtype=torch.float64)
    assert op.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32
    H = dense_hessian(mlp(nn.Tanh, dtype=torch.float64), mse_loss, [(x.double(), y.double())])
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(op @ v, H @ v, rtol=1e-10, atol=1e-12)


def _bn_dropout_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)).double()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_batchnorm_dropout_products_repeat_and_leave_no_trace(mode):
    model = _bn_dropout_model()
    model.train()
    x, y = regression_data()
    # a prior gradient that must survive
    mse_loss(model, (x, y)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    op = HessianOperator(model, cross_entropy_loss, [(x, y.argmax(1))], mode=mode, cache_graph=False)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b = op @ v, op @ v
    assert torch.equal(a, b), "two products of the same vector must agree bitwise"
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(b0, b1) for b0, b1 in zip(buffers, model.buffers()))
    assert torch.equal(torch.get_rng_state(), rng)
    if mode == "train":  # Dropout active: the product differs from eval mode's
        ev = HessianOperator(model, cross_entropy_loss, [(x, y.argmax(1))], mode="eval") @ v
        assert not torch.allclose(ev, a)


def test_eval_mode_matches_dense_hessian_of_eval_model():
    model = _bn_dropout_model()
    model[1].running_mean.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(2))
    model[1].running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(3))
    x, y = regression_data()
    model.train()
    op = HessianOperator(model, mse_loss, [(x, y)])
    model.eval()
    H = dense_hessian(model, mse_loss, [(x, y)])
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(op @ v, H @ v, rtol=1e-10, atol=1e-12)


def test_bad_inputs_raise_clearly():
    model = mlp()
    x, y = regression_data()
    with pytest.raises(ValueError, match="probe set is empty"):
        HessianOperator(model, mse_loss, [])
    with pytest.raises(TypeError, match="list of batches"):
        HessianOperator(model, mse_loss, x)

    def no_grad_loss(m, b):
        with torch.no_grad():
            return mse_loss(m, b)

    op = HessianOperator(model, no_grad_loss, [(x, y)])
    with pytest.raises(ValueError, match="twice differentiable"):
        op @ torch.ones(op.size, dtype=torch.float64)
    op = HessianOperator(model, mse_loss, [(x, y)])
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(RuntimeError, match="changed in place"):
        op @ torch.ones(op.size, dtype=torch.float64)
    with pytest.raises(ValueError, match="mode"):
        HessianOperator(model, mse_loss, [(x, y)], mode="test")


@pytest.mark.parametrize("backend", ["double_backward", "forward_over_reverse"])
def test_gradient_matches_autograd(backend):
    model = mlp()
    x, y = regression_data()
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    op = HessianOperator(model, squared_error, batches, cache_graph=True, backend=backend)
    g = op.gradient()
    loss = (squared_error(model, batches[0]) * 5 + squared_error(model, batches[1]) * 15) / 20
    expected = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-14)
    assert all(p.grad is None for p in model.parameters())


class _AliasedAndTied(nn.Module):
    """A submodule under two paths (``self.backbone = self.body[0]``) and one weight in two modules."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Tanh())
        self.backbone = self.body[0]
        self.tied = nn.Linear(4, 4, bias=False)
        self.tied_again = nn.Linear(4, 4, bias=False)
        self.tied_again.weight = self.tied.weight

    def forward(self, x):
        h = self.body(x)
        return self.tied_again(torch.tanh(self.tied(h))).sum(1)


def test_aliased_modules_and_tied_weights_are_substituted_once_and_left_untouched():
    torch.manual_seed(0)
    model = _AliasedAndTied().double().eval()
    before = {n: p for n, p in model.named_parameters(remove_duplicate=False)}
    x = torch.randn(7, 3, dtype=torch.float64)
    loss_fn = lambda m, b: m(b).pow(2).mean()  # noqa: E731
    op = HessianOperator(model, loss_fn, [x])
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hv = op @ v
    # the model holds its own Parameters afterwards, under every path
    assert all(dict(model.named_parameters(remove_duplicate=False))[n] is p for n, p in before.items())
    assert model.tied_again.weight is model.tied.weight and isinstance(model.backbone[0].weight, nn.Parameter)
    # the product is the Hessian of the loss in the unique parameters (the tied weight used twice)
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def f(theta):
        pieces = dict(zip(names, (c.view(s) for c, s in zip(torch.split(theta, [s.numel() for s in shapes]), shapes))))
        pieces["tied_again.weight"] = pieces["tied.weight"]  # both modules; the aliased one is reached via body.0
        return loss_fn(lambda b: torch.func.functional_call(model, pieces, (b,), tie_weights=False), x)

    H = torch.autograd.functional.hessian(f, flat)
    torch.testing.assert_close(hv, H @ v, rtol=1e-10, atol=1e-12)


def test_at_an_interpolating_minimum_the_hessian_is_the_gauss_newton_matrix():
    """Squared loss ½·mean_i ‖f(x_i) − y_i‖² at a point where f(x_i) = y_i: the residuals vanish,
    H = JᵀJ/n with J the (n·C)×p Jacobian of the outputs, so λ_max(H) = λ_max(JJᵀ)/n; and
    ``nn.MSELoss()``, which also averages over the C outputs, has exactly 2/C times that Hessian."""
    from lightning_dyn.curvature import top_eigenpairs

    model = mlp(nn.Tanh, sizes=(6, 10, 3))
    x, _ = regression_data(n=12)
    with torch.no_grad():
        y = model(x)  # targets the model interpolates
    n, C = y.shape
    params = dict(model.named_parameters())
    J = torch.cat([j.reshape(n * C, -1) for j in torch.func.jacrev(
        lambda p: torch.func.functional_call(model, p, (x,)))(params).values()], dim=1)
    gauss_newton_top = float(torch.linalg.eigvalsh(J @ J.T)[-1]) / n

    def half_mean(m, batch):
        return 0.5 * ((m(batch[0]) - batch[1]) ** 2).sum(dim=1).mean()

    half = top_eigenpairs(HessianOperator(model, half_mean, [(x, y)]), k=1, tol=1e-10, max_matvecs=200)
    mse = top_eigenpairs(HessianOperator(model, lambda m, b: nn.MSELoss()(m(b[0]), b[1]), [(x, y)]),
                         k=1, tol=1e-10, max_matvecs=200)
    assert float(half.values[0]) == pytest.approx(gauss_newton_top, rel=1e-9)
    assert float(mse.values[0]) == pytest.approx(2 / C * gauss_newton_top, rel=1e-9)
