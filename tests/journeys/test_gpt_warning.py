"""InstabilityWarning on the GPT-2 of ``test_gpt.py`` (a ``transformers`` config: SDPA attention,
tied embeddings, Dropout, AdamW with warmup, gradient accumulation), beside EdgeOfStability and
GradientExplosionMonitor: the run is bitwise the one without them, and every raw signal is checked
against a computation from what the optimizer actually did."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_dyn import EdgeOfStability, GradientExplosionMonitor, HessianSettings, InstabilityWarning
from tests.contract.harness import seed_all
from tests.journeys.common import fit, training_state
from tests.journeys.test_gpt import TinyGPT, sequences

pytest.importorskip("transformers")


class Spy(pl.Callback):
    """What each optimizer step did, by hand: the parameters and gradients before it, the parameters
    after it, Adam's state after it, and the rate it stepped with."""

    def __init__(self, warning: InstabilityWarning) -> None:
        self.warning, self.steps, self.signals = warning, [], {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.signals[trainer.global_step] = dict(self.warning.last_signals)  # attached before this spy
        self._before = (torch.cat([p.detach().flatten() for p in params]).double(),
                        torch.cat([p.grad.flatten() for p in params]).double(), optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not hasattr(self, "_before"):
            return
        optimizer = trainer.optimizers[0]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        theta, grad, lr = self._before
        after = torch.cat([p.detach().flatten() for p in params]).double()
        state = [optimizer.state[p] for p in params]
        beta1, beta2 = optimizer.param_groups[0]["betas"]
        t = float(state[0]["step"])
        v = torch.cat([s["exp_avg_sq"].flatten() for s in state]).double()
        P = (1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + optimizer.param_groups[0]["eps"])
        self.steps.append({"theta": theta, "grad": grad, "after": after, "lr": lr, "P": P,
                           "wd": optimizer.param_groups[0]["weight_decay"]})
        del self._before


def _run(callbacks):
    seed_all(0)
    module = TinyGPT()
    loader = DataLoader(sequences(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
    return fit(module, loader, callbacks, max_steps=10, accumulate_grad_batches=2), module


def test_gpt2_warning_signals_are_what_adamw_did_and_the_run_is_left_alone():
    plain = training_state(*_run([]))
    warning = InstabilityWarning(every_n_steps=5, warmup=3)
    spy = Spy(warning)
    eos = EdgeOfStability(every_n_steps=5, hessian=HessianSettings(probe_size=16))
    trainer, module = _run([warning, spy, eos, GradientExplosionMonitor(every_n_steps=5)])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)  # bitwise the same run
    (beta1, _), steps = trainer.optimizers[0].param_groups[0]["betas"], spy.steps
    for t in range(1, len(steps)):
        got, before, now = spy.signals[t], steps[t - 1], steps[t]
        # the gradient norm before the step (tied wte/lm_head once: the optimizer's parameters)
        assert got["grad_norm"] == pytest.approx(float(now["grad"].norm()), rel=1e-5)
        # Adam's normalised update u = (θ(1 − η·wd) − θ') / η: the update this step applied
        u = (now["theta"] * (1 - now["lr"] * now["wd"]) - now["after"]) / now["lr"]
        assert got["update_rms"] == pytest.approx(float(u.square().mean().sqrt()), rel=1e-4)
        # the secant of the previous update in Adam's metric P, against Adam's threshold at this step's rate
        d = before["after"] - before["theta"]
        secant = float(d @ (now["grad"] - before["grad"])) / float(d @ (before["P"] * d))
        threshold = (2 + 2 * beta1) / ((1 - beta1) * now["lr"])
        assert got["update_sharpness_ratio"] == pytest.approx(secant / threshold, rel=1e-3)
    assert [h["step"] for h in warning.history] == [5, 10]
    assert all(math.isfinite(h["dyn/instability_risk_max"]) for h in warning.history)
