"""Activation checkpointing, as people turn it on: ``transformers``' checkpointing of a GPT-2 (the
non-reentrant default and the reentrant variant), ``torch.utils.checkpoint`` in a model of one's
own (both variants) and a timm-style ``set_grad_checkpointing()`` flag.

The recomputation inside backward reads the module's tensors at that moment, so a measurement
must keep its substituted point in place through its backward passes. Each measurement here is
compared with the same parameters measured without checkpointing by an independent float64
reference, for both product backends, and the training run is bitwise the run without callbacks.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, HessianSharpness
from lightning_dyn.callbacks.probe import check_measurable
from lightning_dyn.curvature import HessianOperator
from tests.journeys.common import fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all

transformers = pytest.importorskip("transformers")

VOCAB, LENGTH = 48, 8


def _enable_checkpointing(model, reentrant: bool) -> None:
    """transformers ≥ 5 names it ``activation_checkpointing_enable``; earlier, ``gradient_checkpointing_enable``."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
    else:  # pragma: no cover - transformers 4
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})


class CheckpointedGPT(pl.LightningModule):
    """A GPT-2 from a config with activation checkpointing (active in train mode, as transformers runs it)."""

    def __init__(self, reentrant) -> None:
        super().__init__()
        config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                                         bos_token_id=0, eos_token_id=0)
        self.model = transformers.GPT2LMHeadModel(config)
        if reentrant is not None:
            _enable_checkpointing(self.model, reentrant)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).logits

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        return self.model(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def lm_loss(model, batch) -> torch.Tensor:
    (ids,) = batch
    logits = model(ids)
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))


def _sequences() -> TensorDataset:
    g = torch.Generator().manual_seed(5)
    start, stride = torch.randint(0, VOCAB, (48, 1), generator=g), torch.randint(1, 4, (48, 1), generator=g)
    return TensorDataset((start + stride * torch.arange(LENGTH)) % VOCAB)


def _run_gpt(reentrant, callbacks: list) -> tuple[pl.Trainer, CheckpointedGPT]:
    seed_all(0)
    module = CheckpointedGPT(reentrant)
    loader = DataLoader(_sequences(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(2))
    return fit(module, loader, callbacks, max_steps=6), module


@pytest.mark.slow
@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_a_checkpointed_gpt2_is_measured_as_the_same_model_without_checkpointing(reentrant):
    plain = training_state(*_run_gpt(reentrant, []))
    settings = dict(tol=1e-6, probe_size=16, mode="train")  # checkpointing runs in train mode only
    auto = HessianSharpness(every_n_steps=3, hessian=HessianSettings(**settings))
    differences = EdgeOfStability(every_n_steps=3, hessian=HessianSettings(**settings, backend="finite_difference"))
    trainer, module = _run_gpt(reentrant, [auto, differences])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)  # bitwise the same run
    # double backward through reentrant checkpointing cannot be taken: the check says so and differences serve
    assert auto.product_backend == ("finite_difference" if reentrant else "double_backward")
    # the reference: the same parameters, no dropout, so train mode is the function eval mode computes
    want = reference_top_eigenvalue(module, lm_loss, auto.batches)
    assert auto.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-3)
    assert differences.history[-1]["dyn/eos_sharpness"] == pytest.approx(want, rel=1e-3)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(torch.tanh(self.inner(x)))


class CheckpointedMLP(pl.LightningModule):
    """``torch.utils.checkpoint`` around each block (``use_reentrant`` as given), or a timm-style
    ``set_grad_checkpointing()`` flag read in ``forward`` whatever the mode."""

    def __init__(self, reentrant, timm_style: bool = False) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.embed = nn.Linear(6, 16)
        self.blocks = nn.ModuleList([Block(16), Block(16)])
        self.head = nn.Linear(16, 1)
        self.reentrant, self.grad_checkpointing = reentrant, not timm_style

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=self.reentrant) if self.grad_checkpointing else block(h)
        return self.head(h)

    def training_step(self, batch, batch_idx):
        return mse(self, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def mse(model, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def _regression() -> TensorDataset:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 6, generator=g)
    return TensorDataset(x, torch.sin(x.sum(1, keepdim=True)))


@pytest.mark.parametrize("reentrant,timm_style", [(False, False), (True, False), (False, True)],
                         ids=["non-reentrant", "reentrant", "timm-style"])
def test_torch_checkpoint_in_a_users_model(reentrant, timm_style):
    def run(callbacks):
        seed_all(0)
        module = CheckpointedMLP(reentrant, timm_style)
        if timm_style:
            module.set_grad_checkpointing()
        loader = DataLoader(_regression(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3))
        return fit(module, loader, callbacks, max_steps=8), module

    plain = training_state(*run([]))
    sharp = HessianSharpness(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=32))
    differences = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-6, probe_size=32,
                                                                          backend="finite_difference"))
    trainer, module = run([sharp, differences])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    assert sharp.product_backend == ("finite_difference" if reentrant else "double_backward")
    module.grad_checkpointing = False  # the reference: the same function, computed without checkpointing
    want = reference_top_eigenvalue(module, mse, sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-3)
    assert differences.history[-1]["dyn/eos_sharpness"] == pytest.approx(want, rel=1e-3)


def test_products_on_a_checkpointed_model_equal_those_without():
    x, y = _regression().tensors
    plain = CheckpointedMLP(False)
    plain.grad_checkpointing = False
    v = torch.randn(sum(p.numel() for p in plain.parameters()), generator=torch.Generator().manual_seed(0))
    exact = HessianOperator(plain, mse, [(x, y)], dtype=torch.float64).matvec(v.double())
    for reentrant in (False, True):
        model = CheckpointedMLP(reentrant)
        backends = ["finite_difference"] if reentrant else ["finite_difference", "double_backward"]
        for backend in backends:
            for batches in ([(x, y)], [(x[:32], y[:32]), (x[32:], y[32:])]):  # cached graph, and not
                op = HessianOperator(model, mse, batches, dtype=torch.float64, backend=backend)
                torch.testing.assert_close(op.matvec(v.double()), exact, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(HessianOperator(model, mse, [(x, y)], dtype=torch.float64).gradient(),
                                   HessianOperator(plain, mse, [(x, y)], dtype=torch.float64).gradient())
        assert all(p.grad is None for p in model.parameters())  # the module's own .grad is never written


class _Float32Only(torch.autograd.Function):
    """tanh with a hand-written backward that autograd cannot differentiate again (``x`` is saved
    detached), and that refuses float64 — a check in float64 cannot run through it."""

    @staticmethod
    def forward(ctx, x):
        if x.dtype == torch.float64:
            raise RuntimeError("this kernel has no float64 implementation")
        ctx.save_for_backward(x.detach())
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(x) ** 2)


class _FusedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 1)

    def forward(self, x):
        return self.b(_Float32Only.apply(self.a(x)))


def test_a_check_that_cannot_run_is_never_taken_for_a_pass():
    x, y = _regression().tensors
    net = _FusedNet()
    # double backward runs, silently without the kernel's second derivative; the float64 check cannot run
    assert check_measurable(net, mse, (x, y), owner="test", backend="auto") == "finite_difference"
    with pytest.raises(Exception, match="could not run.*no float64 implementation"):
        check_measurable(net, mse, (x, y), owner="test", backend="double_backward")
