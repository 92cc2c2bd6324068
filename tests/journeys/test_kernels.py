"""Models whose kernels have no second derivative in training: ``torch.compile`` (AOTAutograd
refuses double backward) measured without a workaround, and an operation that truly has none,
refused at setup — one product, before training — with the way out."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, HessianSharpness
from lightning_dyn.callbacks import ConfigurationError
from lightning_dyn.data import digits_tensors
from tests.journeys.common import Classifier, cross_entropy, fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def _loader() -> DataLoader:
    x, y = digits_tensors(160, targets="index")
    return DataLoader(TensorDataset(x, y), batch_size=40, shuffle=True)


def _run(callbacks: list, compiled: bool, **kwargs):
    seed_all(0)
    net = _net()
    module = Classifier(torch.compile(net, backend="aot_eager") if compiled else net)
    return fit(module, _loader(), callbacks, max_steps=8, **kwargs), module, net


@pytest.mark.parametrize("backend, rel", [("auto", 1e-5), ("finite_difference", 1e-4)])
def test_a_compiled_module_is_measured_without_a_workaround_and_left_alone(backend, rel):
    # double backward runs it eagerly; central differences take the compiled first-order graph
    (trainer, module, _) = _run([], compiled=True)
    plain = training_state(trainer, module)
    sharp = HessianSharpness(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=80, backend=backend))
    trainer, module, net = _run([sharp], compiled=True)
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    assert [h["step"] for h in sharp.history] == [4, 8]
    assert sharp.product_backend == ("double_backward" if backend == "auto" else backend)
    want = reference_top_eigenvalue(Classifier(net), cross_entropy, sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=rel)


class _FirstOrderTanh(torch.autograd.Function):
    """tanh whose backward has no derivative of its own (as some fused kernels)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class _KernelTanh(_FirstOrderTanh):
    """tanh whose backward refuses to be differentiated, as fused kernels do."""

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise RuntimeError("derivative for aten::_my_fused_tanh_backward is not implemented")
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class FirstOrderTanh(nn.Module):
    def __init__(self, function: type = _FirstOrderTanh) -> None:
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function.apply(x)


WITHOUT_SECOND_DERIVATIVE = pytest.mark.parametrize("function, message", [
    (_KernelTanh, r"cannot be taken through this model: derivative for aten::_my_fused_tanh_backward"),
    # the silent case: double backward runs but drops tanh's second derivative; caught against differences
    (_FirstOrderTanh, r"disagrees with central differences of the gradient: by \d+"),
], ids=["raises", "silently-wrong"])


@WITHOUT_SECOND_DERIVATIVE
def test_double_backward_through_an_operation_without_a_second_derivative_is_refused_at_setup(function, message):
    seed_all(0)
    module = Classifier(nn.Sequential(nn.Linear(64, 32), FirstOrderTanh(function), nn.Linear(32, 10)))
    callback = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(backend="double_backward"))
    with pytest.raises(ConfigurationError, match=message + r".*backend='finite_difference'.*`loss_fn=`"):
        fit(module, _loader(), [callback], max_steps=8)
    assert callback.history == [] and module.global_step == 0


@WITHOUT_SECOND_DERIVATIVE
def test_auto_measures_such_a_model_by_central_differences_and_right(function, message, caplog):
    seed_all(0)
    net = nn.Sequential(nn.Linear(64, 32), FirstOrderTanh(function), nn.Linear(32, 10))
    module = Classifier(net)
    callback = HessianSharpness(every_n_steps=4, hessian=HessianSettings(probe_size=80, tol=1e-5))
    with caplog.at_level("INFO"):
        trainer = fit(module, _loader(), [callback], max_steps=8)
    assert callback.product_backend == "finite_difference"
    assert "central differences of gradients" in caplog.text
    assert "dyn/cost/HessianSharpness_fd_hvps" in trainer.callback_metrics
    # the reference runs plain tanh (which double backward differentiates right) at the same weights
    plain = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    plain.load_state_dict({k: v for k, v in net.state_dict().items()})
    want = reference_top_eigenvalue(Classifier(plain), cross_entropy, callback.batches)
    assert callback.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-4)


def test_piecewise_linear_activations_pass_the_setup_check():
    seed_all(0)
    module = Classifier(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                      nn.MaxPool1d(2), nn.Linear(128, 10)))
    callback = HessianSharpness(every_n_steps=4, hessian=HessianSettings(probe_size=160))
    fit(module, _loader(), [callback], max_steps=4)
    assert [h["step"] for h in callback.history] == [4]


def test_early_stopping_on_a_tag_measured_less_often_than_an_epoch():
    # 4 steps an epoch, a measurement every 6: EarlyStopping checks at the end of epoch 1 (step 4)
    eos = EdgeOfStability(every_n_steps=6, hessian=HessianSettings(probe_size=80), density_at_fit_end=False)
    stopper = EarlyStopping(monitor="dyn/sharpness_ratio", mode="max", patience=100)
    trainer, _, _ = _run([eos, stopper], compiled=False)
    assert trainer.global_step == 8
    assert [h["step"] for h in eos.history] == [4, 6, 8]  # once at the first epoch's end, then on schedule
