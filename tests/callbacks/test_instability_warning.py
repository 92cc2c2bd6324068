"""InstabilityWarning on real Trainers: it fires before constructed instabilities with known answers
(GD on a quadratic with η stepped past 2/λ; Adam on a one-dimensional quadratic, which spikes at
constant curvature), stays silent on a stable run, skips bitwise, decides identically on two DDP
ranks, reduces the learning rate in a way that lasts, and resumes with its detector's state."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_dyn import InstabilityWarning
from lightning_dyn.dynamics import loss_spikes
from tests.callbacks.test_gradient_explosion import Net, _batches, _Dump, _fit
from tests.contract.harness import assert_bitwise_equal, fit, seed_all, tensorboard_scalars
from tests.helpers import fit_config_and_report


class Quadratic(pl.LightningModule):
    """½ Σ λ_i x_i² from x = 1, in float64, with the learning rate multiplied by ``factor`` from
    step ``step_up_at`` on (a step-wise ``LambdaLR``) and the loss of every step kept."""

    def __init__(self, lams, *, optimizer: str = "sgd", lr: float, step_up_at: int = 10**9, factor: float = 1.0,
                 betas=(0.9, 0.99)) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.ones(len(lams), dtype=torch.float64))
        self.register_buffer("lams", torch.tensor(lams, dtype=torch.float64))
        self.optimizer, self.lr, self.step_up_at, self.factor, self.betas = optimizer, lr, step_up_at, factor, betas
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = 0.5 * (self.lams * self.x.square()).sum()
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        if self.optimizer == "adam":
            opt = torch.optim.Adam(self.parameters(), lr=self.lr, betas=self.betas)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        rule = lambda s: self.factor if s >= self.step_up_at else 1.0  # noqa: E731
        return [opt], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, rule), "interval": "step"}]

    def train_dataloader(self):
        return DataLoader(torch.zeros(10**5, 1), batch_size=1)


#: on a deterministic problem the level of the update sharpness is the threshold itself (the shipped
#: default, 1.25, is calibrated for the batch noise of mini-batch runs)
AT_THE_THRESHOLD = {"update_sharpness_ratio": 1.0}


def _run(module, callbacks, steps, **kwargs):
    trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, logger=kwargs.pop("logger", False),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)
    trainer.fit(module)
    return trainer


def test_fires_when_gd_steps_past_two_over_lambda_before_the_loss_rises(tmp_path):
    """GD on ½Σλx² with η = 1.9 (ηλ_max = 1.9: stable), then η = 2.2 from step 100: the top mode
    grows by |1 − 2.2| = 1.2 a step and the loss by 1.44, back above its initial value ~60 steps
    later. The update's curvature is λ_max = 1 exactly (the top mode leads the update), so the ratio
    is ηλ/2 = 1.1 at the step the rate goes up: the alarm comes before the loss has risen at all."""
    module = Quadratic([1.0, 0.5, 0.1], lr=1.9, step_up_at=100, factor=2.2 / 1.9)
    warning = InstabilityWarning(levels=AT_THE_THRESHOLD)
    _run(module, [warning], 200, logger=TensorBoardLogger(tmp_path))
    losses = module.losses
    alarms = [e for e in warning.events if e["event"] == "instability_warning"]
    assert [e["step"] for e in alarms] == [100]
    assert alarms[0]["raised_by"] == ["update_sharpness_ratio"]
    assert alarms[0]["scores"]["update_sharpness_ratio"] == pytest.approx(1.1, rel=1e-6)
    assert losses[100] < losses[99] < losses[98]  # still falling when the alarm comes ...
    unstable = next(t for t, loss in enumerate(losses) if t > 100 and loss > losses[0])
    assert unstable - 100 >= 50  # ... and back above the initial loss 50+ steps later
    # TensorBoard: the risk every step (1.1 from step 100 on) and the figure around the alarm
    risk = dict(tensorboard_scalars(tmp_path)["dyn/instability_risk"])
    assert sorted(risk) == list(range(1, 200)) and risk[100] == pytest.approx(1.1, rel=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert "dyn/instability_figure" in events.Tags()["images"]


def test_fires_before_adam_spikes_on_a_one_dimensional_quadratic():
    """Adam on ½λx² at constant curvature: as x → 0 the second moment decays (β₂ = 0.99) and the
    preconditioned step η/P grows until ηλ/P passes Adam's threshold (2+2β₁)/(1−β₁); the iterate
    then grows again and the loss spikes. The update-sharpness ratio (λ/P against that threshold)
    crosses 1 first."""
    module = Quadratic([1.0], optimizer="adam", lr=0.1)
    warning = InstabilityWarning(levels=AT_THE_THRESHOLD)
    _run(module, [warning], 1000)
    onsets = loss_spikes(module.losses)
    alarms = [e for e in warning.events if e["event"] == "instability_warning"]
    assert onsets and alarms
    first = next(e for e in alarms if e["step"] > 300)  # after the first, transient oscillations
    spike = next(s for s in onsets if s > 300)
    assert "update_sharpness_ratio" in first["raised_by"]
    assert 5 <= spike - first["step"] <= 50, (first, onsets)


def test_silent_on_a_stable_run():
    """The main job (full-batch GD at η = 0.1 on digits) for its first 1200 steps: progressive
    sharpening below 2/η, the loss falling — no alarm at the default levels, the risk below 1
    throughout. (On mini-batch runs the defaults allow about one false alarm in 2000 steps:
    the benchmark's held-out rate.)"""
    from lightning_dyn.data import DigitsDataModule
    from lightning_dyn.models import SquaredLossMLP

    seed_all(0)  # not pl.seed_everything: its PL_GLOBAL_SEED would re-seed later tests' DDP workers
    warning = InstabilityWarning()

    class Risks(pl.Callback):
        values: list = []

        def on_train_batch_end(self, trainer, pl_module, *args):
            if warning.last_risk.scores:
                self.values.append(warning.last_risk.value)

    trainer = pl.Trainer(max_steps=1200, callbacks=[warning, Risks()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(SquaredLossMLP(widths=(64, 200, 200, 10), lr=0.1), DigitsDataModule(n=1000, batch_size=None))
    assert warning.events == [] and len(Risks.values) == 1199 and max(Risks.values) < 1.0


def _forced(action, **kw):
    """A warning that alarms on a gradient-norm jump: a short window and a low level."""
    return InstabilityWarning(action=action, window=4, warmup=3, levels={"grad_norm_zscore": 3.0,
                                                                         "update_sharpness_ratio": math.inf}, **kw)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_skip_equals_the_run_with_the_alarmed_batches_removed(optimizer):
    batches = _batches(num=12, scale_at=(6,))
    warning = _forced("skip")
    trainer, skipped = _fit(batches, [warning], module=lambda: Net(optimizer))
    steps = [e["step"] for e in warning.events if e["event"] == "skipped"]
    assert 6 in steps and warning.skips == len(steps)
    kept = [b for i, b in enumerate(batches) if i not in steps]
    reference_trainer, reference = _fit(kept, [], module=lambda: Net(optimizer))
    # parameters, BatchNorm statistics and optimizer state (momentum, Adam's moments and step count)
    assert_bitwise_equal(reference.state_dict(), skipped.state_dict(), "module")
    assert_bitwise_equal(reference_trainer.optimizers[0].state_dict(), trainer.optimizers[0].state_dict(), "optimizer")
    assert trainer.global_step == 12  # Lightning's own counter still advances


def test_stop_drops_the_alarmed_update_and_stops():
    warning = _forced("stop")
    with pytest.warns(UserWarning, match="stopping training at step 6"):
        trainer, module = _fit(_batches(num=12, scale_at=(6,)), [warning])
    reference_trainer, reference = _fit(_batches(num=6), [])
    assert trainer.global_step == 7 and warning.events[-1]["event"] == "stopped"
    assert_bitwise_equal(reference.state_dict(), module.state_dict(), "module")


def test_reduce_lr_keeps_gd_stable_under_the_scheduler_and_lasts():
    """η stepped to 2.2 (ηλ = 2.2, unstable): the reduction by ½ at the alarm gives ηλ = 1.1 for the
    rest of the run although the scheduler keeps its own rate at 2.2."""
    module = Quadratic([1.0, 0.5, 0.1], lr=1.9, step_up_at=100, factor=2.2 / 1.9)
    warning = InstabilityWarning(action="reduce_lr", levels=AT_THE_THRESHOLD)
    with pytest.warns(UserWarning, match="learning rate multiplied by 0.5"):
        trainer = _run(module, [warning], 400)
    assert warning.lr_reduction.factor == 0.5
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(2.2)  # the schedule itself, untouched
    assert loss_spikes(module.losses) == [] and module.losses[-1] < module.losses[99]


def test_a_nonfinite_gradient_is_infinite_risk_an_event_and_no_number_on_the_chart(tmp_path):
    warning = InstabilityWarning(action="skip", warmup=2)
    logger = TensorBoardLogger(tmp_path)
    with pytest.warns(UserWarning, match="non-finite gradient"):  # the warning of a skip's own episode
        _fit(_batches(num=8, nan_at=(5,)), [warning], logger=logger)
    assert [(e["step"], e["event"]) for e in warning.events] == [(5, "instability_warning"), (5, "skipped")]
    assert warning.events[0]["raised_by"] == ["nonfinite_gradient"]
    risk = tensorboard_scalars(logger.log_dir)["dyn/instability_risk"]
    assert [s for s, _ in risk] == [s for s in range(1, 8) if s != 5] and all(math.isfinite(v) for _, v in risk)


class _NetSpikeOnRank1(Net):
    """Rank 1's loss is scaled up at step 6: the global gradient jumps on both ranks."""

    def __init__(self):
        super().__init__(batchnorm=False)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * 1e3 if self.global_rank == 1 and self.global_step == 6 else loss


@pytest.mark.slow
def test_ddp_ranks_take_the_same_decisions(tmp_path):
    torch.multiprocessing.set_sharing_strategy("file_system")
    warning = _forced("skip")
    _fit(_batches(num=16), [warning, _Dump(warning, str(tmp_path))], module=_NetSpikeOnRank1,
         strategy="ddp_spawn", devices=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["events"] == ranks[1]["events"] and (6, "skipped") in map(tuple, ranks[0]["events"])
    assert ranks[0]["params"] == ranks[1]["params"] and ranks[0]["skips"] == ranks[1]["skips"] >= 1


def test_resume_keeps_the_detectors_state_and_the_reduction(tmp_path):
    deterministic = dict(module_kwargs={"dropout": 0.0}, loader_kwargs={"shuffle": False}, max_steps=-1)
    # a level the contract run's update sharpness (ratio 0.07 → 0.001) crosses before the checkpoint (step 12):
    # the resumed run must go on at the reduced rate, with the detector's windows and episode count
    kwargs = dict(action="reduce_lr", warmup=3, merge=5, levels={"update_sharpness_ratio": 0.004})
    straight = InstabilityWarning(**kwargs)
    _, module_a = fit([straight], tmp_path / "a", max_epochs=6, **deterministic)
    first = InstabilityWarning(**kwargs)
    trainer, _ = fit([first], tmp_path / "b", max_epochs=3, **deterministic)
    trainer.save_checkpoint(tmp_path / "b.ckpt")
    second = InstabilityWarning(**kwargs)
    _, module_c = fit([second], tmp_path / "c", max_epochs=6, ckpt_path=str(tmp_path / "b.ckpt"), **deterministic)
    reductions = [e["step"] for e in straight.events if e["event"] == "reduce_lr"]
    assert reductions and max(reductions) <= 12 and second.events == straight.events
    assert second.detector.state_dict() == straight.detector.state_dict()
    assert second.lr_reduction.factor == straight.lr_reduction.factor
    assert_bitwise_equal(module_a.state_dict(), module_c.state_dict(), "module")


def test_the_config_runs_from_yaml_and_the_report_tells_the_alarms(tmp_path):
    """``configs/early_warning.yaml`` (the main job with the warning) for its first 150 steps: no
    alarm yet (the first comes at step 2070, README), the summary says so and the figure is written."""
    run_dir, report = fit_config_and_report("early_warning", tmp_path, "--trainer.max_steps", "150")
    assert "InstabilityWarning: no alarm in 149 steps" in report
    assert (run_dir / "instability_warning.png").stat().st_size > 10_000


def test_two_reductions_on_one_optimizer_compose_and_leave_the_schedule_alone():
    """EdgeOfStability(action="reduce_lr") beside InstabilityWarning(action="reduce_lr"): one pair of
    step hooks applies the product of both factors, and the scheduler's rate is put back bitwise
    (with a pair of hooks each, the second restored the first's reduced rate: the schedule drifted)."""
    from lightning_dyn import EdgeOfStability, HessianSettings
    from lightning_dyn.callbacks import LearningRateReduction

    p = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([p], lr=1.0)
    first, second = LearningRateReduction(), LearningRateReduction()
    first.attach(optimizer), second.attach(optimizer)
    first.reduce(0.5), second.reduce(0.25)
    for _ in range(3):
        p.grad = torch.ones(1, dtype=torch.float64)
        optimizer.step()
        assert optimizer.param_groups[0]["lr"] == 1.0
    assert p.item() == 1.0 - 3 * 0.125
    first.detach(), second.detach()
    p.grad = torch.ones(1, dtype=torch.float64)
    optimizer.step()  # no hooks left
    assert p.item() == 1.0 - 3 * 0.125 - 1.0

    # on a real Trainer: both callbacks' reductions (set before the fit) compose to 0.25 × the schedule
    module = Quadratic([1.0, 0.5, 0.1], lr=1.6)
    eos = EdgeOfStability(every_n_steps=50, action="reduce_lr", hessian=HessianSettings(probe_size=1))
    warning = InstabilityWarning(action="reduce_lr", levels={name: math.inf for name in AT_THE_THRESHOLD})
    eos.lr_reduction.reduce(0.5), warning.lr_reduction.reduce(0.5)
    trainer = _run(module, [eos, warning], 40)
    assert trainer.optimizers[0].param_groups[0]["lr"] == 1.6  # the schedule, bitwise
    want = torch.tensor([(1 - 0.4 * lam) ** 40 for lam in (1.0, 0.5, 0.1)], dtype=torch.float64)
    torch.testing.assert_close(module.x.detach(), want, rtol=1e-12, atol=0)
