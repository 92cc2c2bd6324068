"""A GPT-2 from a ``transformers`` config, as people train one: SDPA attention (the default), tied
input/output embeddings, Dropout, AdamW with linear warmup, gradient clipping and accumulation —
with every applicable callback attached at once."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, GradientExplosionMonitor, HessianSharpness, JacobianSpectrum
from tests.journeys.common import fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all

transformers = pytest.importorskip("transformers")

VOCAB, LENGTH, LR = 64, 8, 3e-3


class TinyGPT(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                         bos_token_id=0, eos_token_id=0)
        self.model = transformers.GPT2LMHeadModel(config)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).logits

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        loss = self.model(input_ids=ids, labels=ids).loss
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=0.01)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


def next_token_loss(model, batch) -> torch.Tensor:
    """The language-model loss written out (shifted cross-entropy), for the reference."""
    (ids,) = batch
    logits = model(ids)
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))


def sequences(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    start, stride = torch.randint(0, VOCAB, (n, 1), generator=g), torch.randint(1, 4, (n, 1), generator=g)
    return TensorDataset((start + stride * torch.arange(LENGTH)) % VOCAB)


class UniqueGradientNorm(pl.Callback):
    """The global gradient norm with every parameter counted once, by hand, before clipping."""

    def __init__(self) -> None:
        self.norms: dict[int, float] = {}
        self.counted_twice: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        unique = {id(p): p for p in pl_module.parameters()}.values()
        self.norms[trainer.global_step + 1] = math.sqrt(sum(float(p.grad.double().square().sum()) for p in unique))
        per_module = [p for m in pl_module.modules() for p in m.parameters(recurse=False)]
        self.counted_twice[trainer.global_step + 1] = math.sqrt(sum(float(p.grad.double().square().sum())
                                                                    for p in per_module))


def _run(callbacks: list) -> tuple[pl.Trainer, TinyGPT]:
    seed_all(0)
    module = TinyGPT()
    loader = DataLoader(sequences(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
    trainer = fit(module, loader, callbacks, max_steps=12, accumulate_grad_batches=2, gradient_clip_val=1.0)
    return trainer, module


def test_gpt2_with_every_callback_is_measured_right_and_left_alone():
    plain = training_state(*_run([]))
    spy = UniqueGradientNorm()
    eos = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-5, probe_size=16), density_at_fit_end=False)
    sharp = HessianSharpness(every_n_steps=4, hessian=HessianSettings(tol=1e-5, probe_size=16))
    monitor = GradientExplosionMonitor(every_n_steps=4)
    jacobian = JacobianSpectrum(every_n_steps=6, k=1, probe_size=4, method="lanczos", num_probes=4, density_runs=0,
                                input_fn=_embed,
                                forward_fn=lambda m, x: m.model(inputs_embeds=x).logits)
    trainer, module = _run([spy, eos, sharp, monitor, jacobian])
    observed = training_state(trainer, module)
    torch.testing.assert_close(observed, plain, rtol=0, atol=0)  # bitwise the same run

    # tied wte/lm_head counted once: the norm of the gradient the optimizer sees
    for h in monitor.history:
        assert h["dyn/grad_norm_preclip"] == pytest.approx(spy.norms[h["step"]], rel=1e-5)
        assert spy.counted_twice[h["step"]] > 1.05 * spy.norms[h["step"]]  # what counting twice would log

    # HessianSharpness at fit end: the top eigenvalue of the probe loss, against float64 ARPACK
    assert [h["step"] for h in sharp.history] == [4, 8, 12]
    want = reference_top_eigenvalue(module, next_token_loss, sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=2e-4)

    # EdgeOfStability under AdamW: the preconditioned sharpness, from the optimizer state by hand
    optimizer = trainer.optimizers[0]
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    eps = optimizer.param_groups[0]["eps"]
    pieces, never = [], 0
    for p in module.parameters():
        state = optimizer.state[p]
        t = float(state["step"])
        v = state["exp_avg_sq"].reshape(-1).double()
        P = (1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + eps)
        pieces.append(torch.where(v > 0, P.rsqrt(), torch.zeros_like(v)))
        never += int((v == 0).sum())
    last = eos.history[-1]
    assert last["dyn/never_updated_coordinates"] == never
    want = reference_top_eigenvalue(module, next_token_loss, eos.batches, scale=torch.cat(pieces))
    assert last["dyn/preconditioned_sharpness"] == pytest.approx(want, rel=2e-4)
    assert last["dyn/stability_threshold"] == pytest.approx((2 + 2 * beta1) / ((1 - beta1) * LR))

    # the Jacobian measured through SDPA attention, without a workaround
    assert [h["step"] for h in jacobian.history] == [6, 12]
    assert all(h["dyn/jacobian_sigma_max"] > 0 for h in jacobian.history)


_EMBEDDING = torch.nn.Embedding(VOCAB, 32)


def _embed(batch) -> torch.Tensor:
    with torch.no_grad():
        return _EMBEDDING(batch[0])


class CompiledGPT(TinyGPT):
    """The same GPT-2, compiled as people do (``torch.compile`` of the whole ``transformers`` model)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.compile(self.model, backend="aot_eager")


@pytest.mark.slow
def test_the_same_gpt2_compiled_is_measured_right_and_left_alone():
    def run(callbacks):
        seed_all(0)
        module = CompiledGPT()
        loader = DataLoader(sequences(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
        return fit(module, loader, callbacks, max_steps=8), module

    plain = training_state(*run([]))
    spy = UniqueGradientNorm()
    eos = EdgeOfStability(every_n_steps=4, hessian=HessianSettings(tol=1e-5, probe_size=16), density_at_fit_end=False)
    sharp = HessianSharpness(every_n_steps=4, hessian=HessianSettings(tol=1e-5, probe_size=16))
    monitor = GradientExplosionMonitor(every_n_steps=4)
    trainer, module = run([spy, eos, sharp, monitor])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    for h in monitor.history:
        assert h["dyn/grad_norm_preclip"] == pytest.approx(spy.norms[h["step"]], rel=1e-5)
    # the reference on the uncompiled model with the same parameters
    eager = TinyGPT()
    eager.model.load_state_dict(module.model._orig_mod.state_dict())
    assert [h["step"] for h in sharp.history] == [4, 8]
    want = reference_top_eigenvalue(eager, next_token_loss, sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=2e-4)
    assert [h["step"] for h in eos.history] == [4, 8] and eos.history[-1]["dyn/preconditioned_sharpness"] > 0
