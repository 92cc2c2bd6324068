"""Hessian-vector products by central differences of gradients, against float64 double backward."""

from __future__ import annotations

import pytest
import torch

from lightning_dyn.curvature import HessianOperator, top_eigenpairs
from lightning_dyn.curvature.finite_difference import central_difference, difference_step
from lightning_dyn.data import digits_tensors
from lightning_dyn.models import SquaredLossMLP


def squared_loss(model, batch):
    x, y = batch
    return model.criterion(model(x), y)


@pytest.fixture(scope="module")
def trained_mlp():
    """The demo's network after 300 full-batch GD steps at η = 0.1 (float32), and its data."""
    torch.manual_seed(0)
    model = SquaredLossMLP(lr=0.1)
    batch = digits_tensors(1000)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        squared_loss(model, batch).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, [batch]


def test_top_eigenvalue_within_1e_5_of_float64_and_the_model_untouched(trained_mlp):
    model, batches = trained_mlp
    before = [p.detach().clone() for p in model.parameters()]
    reference = top_eigenpairs(HessianOperator(model, squared_loss, batches, dtype=torch.float64), tol=1e-10,
                               max_matvecs=300).values[0]
    # tol 1e-6 is beyond the products' accuracy: the solver stops once its bound reaches the products'
    # estimated error (order 2: 8e-4 here, estimated along a random vector — pessimistic for the top
    # eigenvalue, which is 3.5e-5 off); the fourth-order stencil reaches the 1e-5
    for order, bound in ((2, 1e-4), (4, 1e-5)):
        op = HessianOperator(model, squared_loss, batches, backend="finite_difference", difference_order=order)
        assert op.dtype == torch.float32
        result = top_eigenpairs(op, tol=1e-6, max_matvecs=200)
        assert abs(result.values[0] - reference) <= bound * reference, (order, result.values, reference)
        assert abs(result.values[0] - reference) <= result.error_bounds[0]  # the reported bound is a bound
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # substituted, never moved
    assert all(p.grad is None for p in model.parameters())


def test_the_solver_does_not_promise_more_than_the_products_accuracy(trained_mlp):
    model, batches = trained_mlp
    op = HessianOperator(model, squared_loss, batches, backend="finite_difference")
    result = top_eigenpairs(op, tol=1e-9, max_matvecs=200)
    assert op.relative_error > 1e-9
    assert not result.converged  # 1e-9 asked of products accurate to relative_error
    assert result.error_bounds[0] >= op.relative_error * result.values[0]
    assert result.num_matvecs < 200  # stopped at the products' accuracy instead of running on
    exact = HessianOperator(model, squared_loss, batches)
    assert exact.relative_error == 0.0 and top_eigenpairs(exact, tol=1e-6, max_matvecs=200).converged


def test_a_known_error_skips_the_estimate_and_changes_nothing_else(trained_mlp):
    model, batches = trained_mlp
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(4))
    estimating = HessianOperator(model, squared_loss, batches, backend="finite_difference")
    knowing = HessianOperator(model, squared_loss, batches, backend="finite_difference", known_error=3e-5)
    calls = {"estimating": 0, "knowing": 0}
    for name, op in (("estimating", estimating), ("knowing", knowing)):
        inner = op._gradient_sum

        def counted(shift, inner=inner, name=name):
            calls[name] += 1
            return inner(shift)

        op._gradient_sum = counted
    assert torch.equal(estimating @ v, knowing @ v)  # the same stencil, bitwise
    assert calls == {"estimating": 4, "knowing": 2}  # the estimate's second stencil skipped
    assert knowing.relative_error == 3e-5 and 0 < estimating.relative_error < 1e-2


def test_the_product_against_double_backward_and_the_orders(trained_mlp):
    model, batches = trained_mlp
    exact = HessianOperator(model, squared_loss, batches, dtype=torch.float64)
    op = HessianOperator(model, squared_loss, batches, backend="finite_difference")
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(0))
    want = exact @ v.double()
    errors = {}
    for order in (2, 4):
        got = central_difference(op._gradient_sum, v, difference_step(op.parameters_vector(), order), order)
        errors[order] = float(torch.linalg.vector_norm(got.double() / op.total_weight - want) /
                              torch.linalg.vector_norm(want))
    # the whole vector is rounding-bound (ε_mach‖θ‖/ε); the top eigenvalue is far more accurate
    assert errors[2] < 5e-3 and errors[4] < errors[2]
    assert torch.equal(central_difference(op._gradient_sum, torch.zeros(op.size), 1e-3), torch.zeros(op.size))
    with pytest.raises(ValueError, match="difference_order"):
        HessianOperator(model, squared_loss, batches, backend="finite_difference", difference_order=3)


def test_bfloat16_parameters_are_measured_in_float32(trained_mlp):
    model, batches = trained_mlp
    half = SquaredLossMLP(lr=0.1).to(torch.bfloat16)
    half.load_state_dict(model.state_dict())
    op = HessianOperator(half, squared_loss, batches, backend="finite_difference")
    assert op.dtype == torch.float32
    value = top_eigenpairs(op, tol=1e-4).values[0]
    # the bf16-rounded weights are another point: close to the float32 model's, not equal
    reference = top_eigenpairs(HessianOperator(model, squared_loss, batches), tol=1e-6).values[0]
    assert abs(value - reference) <= 2e-2 * reference


def test_a_gpt_style_model_within_1e_4():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 64, (16, 8), generator=torch.Generator().manual_seed(1))
    loss = lambda m, b: m(input_ids=b[0], labels=b[0]).loss  # noqa: E731
    # float64 double backward (transformers upcasts logits to float32 for the loss: a float32 reference)
    reference = top_eigenpairs(HessianOperator(model, loss, [(ids,)], dtype=torch.float64), tol=1e-8,
                               max_matvecs=200).values[0]
    for order in (2, 4):
        result = top_eigenpairs(HessianOperator(model, loss, [(ids,)], backend="finite_difference",
                                                difference_order=order), tol=1e-6, max_matvecs=200)
        assert abs(result.values[0] - reference) <= 1e-4 * reference, (order, result.values, reference)
