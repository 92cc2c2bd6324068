"""Learning-rate schedulers under ``EdgeOfStability(action="reduce_lr")``, and a schedule that ends at 0.

Every scheduler family of ``torch.optim.lr_scheduler`` and the ``transformers`` warmup schedules:
after a reduction, each optimizer step must move the parameters by ``factor × the scheduler's
rate`` — measured from the step itself, ``η_eff = −⟨Δθ, g⟩/‖g‖²`` for plain SGD — while the
scheduler's own sequence of rates is bitwise the one of the run without the callback. The factor
survives a checkpoint (the resumed run ends bitwise where the straight one does). A cosine
schedule down to a rate of 0 is no failure: the sharpness is logged, without threshold or ratio.
"""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_dyn import EdgeOfStability, HessianSettings
from lightning_dyn.data import DigitsDataModule
from lightning_dyn.models import SquaredLossMLP
from tests.contract.harness import seed_all

STEPS, LR = 24, 1.5
transformers = pytest.importorskip("transformers")


def _schedulers():
    sched = torch.optim.lr_scheduler
    return {
        "LambdaLR": lambda o: sched.LambdaLR(o, lambda s: min(1.0, (s + 1) / 4)),
        "StepLR": lambda o: sched.StepLR(o, step_size=5, gamma=0.9),
        "MultiStepLR": lambda o: sched.MultiStepLR(o, milestones=[6, 12], gamma=0.8),
        "ExponentialLR": lambda o: sched.ExponentialLR(o, gamma=0.99),
        "ConstantLR": lambda o: sched.ConstantLR(o, factor=0.9, total_iters=6),
        "LinearLR": lambda o: sched.LinearLR(o, start_factor=0.5, total_iters=8),
        "PolynomialLR": lambda o: sched.PolynomialLR(o, total_iters=40, power=1.0),
        "CosineAnnealingLR": lambda o: sched.CosineAnnealingLR(o, T_max=40),
        "CosineAnnealingWarmRestarts": lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=10),
        "OneCycleLR": lambda o: sched.OneCycleLR(o, max_lr=LR, total_steps=40, cycle_momentum=False),
        "CyclicLR": lambda o: sched.CyclicLR(o, base_lr=0.5, max_lr=LR, step_size_up=5, cycle_momentum=False),
        "SequentialLR": lambda o: sched.SequentialLR(o, [sched.LinearLR(o, 0.5, total_iters=4),
                                                         sched.CosineAnnealingLR(o, T_max=40)], milestones=[4]),
        "ChainedScheduler": lambda o: sched.ChainedScheduler([sched.ExponentialLR(o, 0.99),
                                                              sched.StepLR(o, 5, 0.9)]),
        "MultiplicativeLR": lambda o: sched.MultiplicativeLR(o, lambda s: 0.99),
        "ReduceLROnPlateau": lambda o: sched.ReduceLROnPlateau(o, factor=0.5, patience=2),
        "transformers cosine with warmup": lambda o: transformers.get_cosine_schedule_with_warmup(o, 4, 40),
        "transformers linear with warmup": lambda o: transformers.get_linear_schedule_with_warmup(o, 4, 40),
    }


class Scheduled(SquaredLossMLP):
    def __init__(self, scheduler: str) -> None:
        super().__init__(widths=(64, 32, 10), lr=LR)
        self.scheduler = scheduler

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        config = {"scheduler": _schedulers()[self.scheduler](optimizer), "interval": "step"}
        if self.scheduler == "ReduceLROnPlateau":
            config["monitor"] = "train_loss"
        return {"optimizer": optimizer, "lr_scheduler": config}


class StepSpy(pl.Callback):
    """The scheduler's rate before each step, and the rate the step actually took."""

    def __init__(self) -> None:
        self.scheduled: list[float] = []
        self.taken: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.scheduled.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._theta = torch.cat([p.detach().reshape(-1).double() for p in pl_module.parameters()])
        self._grad = torch.cat([p.grad.reshape(-1).double() for p in pl_module.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        theta = torch.cat([p.detach().reshape(-1).double() for p in pl_module.parameters()])
        self.taken.append(float(-(theta - self._theta) @ self._grad / (self._grad @ self._grad)))


def _fit(scheduler: str, callbacks: list, *, steps: int = STEPS, **kwargs) -> tuple[pl.Trainer, Scheduled]:
    seed_all(0)
    module = Scheduled(scheduler)
    trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", **{"enable_checkpointing": False, **kwargs})
    trainer.fit(module, DigitsDataModule(n=200, batch_size=200))
    return trainer, module


def _eos() -> EdgeOfStability:
    return EdgeOfStability(every_n_steps=2, hessian=HessianSettings(probe_size=200), action="reduce_lr",
                           lr_factor=0.5)


@pytest.mark.parametrize("scheduler", list(_schedulers()))
def test_a_reduction_lasts_under_every_scheduler(scheduler):
    plain = StepSpy()
    _fit(scheduler, [plain])
    spy, eos = StepSpy(), _eos()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*learning rate multiplied.*")
        _fit(scheduler, [spy, eos])
    assert eos.lr_reduction.factor < 1, "the run never crossed its threshold: no reduction to check"
    assert spy.scheduled == plain.scheduled  # the scheduler's own rates, untouched
    reduced = {e["step"] for e in eos.events if e["event"] == "reduce_lr"}
    factor = 1.0
    for step, (scheduled, taken) in enumerate(zip(spy.scheduled, spy.taken)):  # step index = global_step before it
        if step in reduced:
            factor *= 0.5
        assert taken == pytest.approx(scheduled * factor, rel=1e-3), f"step {step + 1}"
    assert factor == eos.lr_reduction.factor
    assert [h["dyn/lr_factor"] for h in eos.history][-1] == factor
    for h in eos.history[:-1]:  # the threshold is of the rate the optimizer steps with: the schedule's (read
        # after the scheduler stepped, or before, for ReduceLROnPlateau, which Lightning steps last) × the factor
        rates = {spy.scheduled[h["step"]], spy.scheduled[h["step"] - 1]}
        assert any(h["dyn/stability_threshold"] == pytest.approx(2 / (r * h["dyn/lr_factor"]), rel=1e-6)
                   for r in rates)


@pytest.mark.slow
def test_the_reduction_is_checkpointed(tmp_path):
    straight = _eos()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*learning rate multiplied.*")
        _, whole = _fit("OneCycleLR", [straight])
        assert min(e["step"] for e in straight.events if e["event"] == "reduce_lr") < STEPS // 2  # before the checkpoint
        first = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=STEPS // 2, save_top_k=-1)
        _fit("OneCycleLR", [_eos(), first], steps=STEPS // 2, enable_checkpointing=True)
        resumed = _eos()
        seed_all(0)
        module = Scheduled("OneCycleLR")
        trainer = pl.Trainer(max_steps=STEPS, callbacks=[resumed], logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
        trainer.fit(module, DigitsDataModule(n=200, batch_size=200), ckpt_path=first.last_model_path or
                    str(next(tmp_path.glob("*.ckpt"))))
    assert resumed.lr_reduction.factor == straight.lr_reduction.factor
    for (name, a), b in zip(whole.state_dict().items(), module.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_schedule_that_ends_at_zero_is_no_failure():
    class ToZero(Scheduled):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=0.0)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    seed_all(0)
    eos = EdgeOfStability(every_n_steps=5, hessian=HessianSettings(probe_size=100))
    trainer = pl.Trainer(max_steps=10, callbacks=[eos], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(ToZero("LambdaLR"), DigitsDataModule(n=100, batch_size=100))
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.0
    assert not [w for w in caught if "not finite" in str(w.message)]
    assert eos.events == []
    last = eos.history[-1]
    assert last["step"] == 10 and last["dyn/eos_sharpness"] > 0
    assert not {"dyn/stability_threshold", "dyn/sharpness_ratio", "dyn/regime"} & set(last)
    assert "learning rate 0" in eos.summary()
    assert "dyn/stability_threshold" in eos.history[0]  # at step 5 the rate was not 0
