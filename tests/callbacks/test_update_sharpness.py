"""EdgeOfStability's per-step curvature along the update, against an independent float64 computation."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_dyn import EdgeOfStability
from lightning_dyn.curvature import HessianOperator
from lightning_dyn.data import DigitsDataModule
from lightning_dyn.models import SquaredLossMLP
from lightning_dyn.report import read_scalars


class Parameters(pl.Callback):
    """The parameters after every optimizer step (global_step → flat float64 vector)."""

    def __init__(self):
        self.at = {}

    def _keep(self, trainer, pl_module):
        self.at[trainer.global_step] = torch.cat([p.detach().double().reshape(-1) for p in pl_module.parameters()])

    def on_train_start(self, trainer, pl_module):
        self._keep(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._keep(trainer, pl_module)


def _run(tmp_path, module, steps=30, **eos):
    eos_cb, params = EdgeOfStability(every_n_steps=10, **eos), Parameters()
    dm = DigitsDataModule(n=200)
    trainer = pl.Trainer(max_steps=steps, callbacks=[eos_cb, params], logger=TensorBoardLogger(tmp_path, name="r"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1)
    trainer.fit(module, dm)
    return read_scalars(next(tmp_path.rglob("events.out.tfevents.*")).parent), params.at, dm, eos_cb


def test_full_batch_update_sharpness_is_the_curvature_along_each_step(tmp_path):
    module = SquaredLossMLP(widths=(64, 32, 10), lr=0.5)
    series, at, dm, eos = _run(tmp_path, module)
    values = dict(series["dyn/update_sharpness"])
    assert sorted(values) == list(range(1, 30))  # every step but the first (no update before it)
    # independent: dᵀH̄d/dᵀd with H̄ the float64 Hessian averaged along d = θ_s − θ_{s−1} by Simpson's
    # rule (the first step is long — the curvature changes by 40% along it — the later ones short)
    reference = SquaredLossMLP(widths=(64, 32, 10)).double()
    batch = next(iter(dm.train_dataloader()))
    batch = [t.double() if t.is_floating_point() else t for t in batch]
    for s in (1, 10, 20, 29):
        d = at[s] - at[s - 1]
        quotients = []
        for w in (0.0, 0.5, 1.0):
            torch.nn.utils.vector_to_parameters(at[s - 1] + w * d, reference.parameters())
            op = HessianOperator(reference, lambda m, b: m.criterion(m(b[0]), b[1]), [batch])
            quotients.append(float(d @ op.matvec(d) / (d @ d)))
        exact = (quotients[0] + 4 * quotients[1] + quotients[2]) / 6
        assert values[s] == pytest.approx(exact, rel=1e-3), s
    # a Rayleigh quotient: never above the measured top eigenvalue (of the nearby Hessian)
    for s, sharp in series["dyn/eos_sharpness"]:
        if s in values:
            assert values[s] <= sharp * 1.02
    ratio = dict(series["dyn/update_sharpness_ratio"])
    assert ratio[10] == pytest.approx(values[10] / (2 / 0.5))


def test_adam_update_sharpness_is_in_the_preconditioned_metric(tmp_path):
    module = SquaredLossMLP(widths=(64, 32, 10), optimizer="adam", lr=0.01)
    series, *_ = _run(tmp_path, module)
    values = dict(series["dyn/update_sharpness"])
    assert len(values) >= 25
    # the secant in the metric P/η is a Rayleigh quotient of the measured operator η P⁻¹H (same units)
    for s, sharp in series["dyn/preconditioned_sharpness"]:
        if s in values:
            assert 0 < values[s] <= sharp * 1.05
    assert "dyn/update_sharpness_ratio" in series


def test_update_sharpness_can_be_turned_off(tmp_path):
    series, *_ = _run(tmp_path, SquaredLossMLP(widths=(64, 32, 10)), steps=12, update_sharpness=False)
    assert "dyn/update_sharpness" not in series and "dyn/eos_sharpness" in series


def test_max_overhead_thins_the_schedule_by_its_rule(tmp_path):
    """Measurements at multiples of every_n_steps, taken only while spent ≤ max_overhead × step
    (gradient evaluations of a training batch: products × 2 × probe batches, plus a gradient and a
    product — 3 — for each of the batch sharpness's 4 mini-batches)."""
    from lightning_dyn.callbacks.budget import OverheadBudget
    from lightning_dyn.callbacks import ConfigurationError

    fixed = EdgeOfStability(every_n_steps=5)
    budgeted = EdgeOfStability(every_n_steps=5, max_overhead=0.5, at_fit_end=False)
    for cb in (fixed, budgeted):
        trainer = pl.Trainer(max_steps=60, callbacks=[cb], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(SquaredLossMLP(widths=(64, 16, 10)), DigitsDataModule(n=100, batch_size=50))
    assert [h["step"] for h in fixed.history][:12] == list(range(5, 61, 5))
    # replay the rule from the products each measurement spent: the same steps
    spent, expected = 0.0, []
    products = iter(h["hvps"] for h in budgeted.history)
    for step in range(5, 61, 5):
        if spent <= 0.5 * step:
            expected.append(step)
            spent += next(products) * 2 * budgeted.hessian_measurement.probe_batches_equivalent + 4 * 3
    assert [h["step"] for h in budgeted.history] == expected
    assert len(expected) < 12
    assert budgeted.hessian_measurement.probe_batches_equivalent == 1.0  # the default probe: one batch
    assert sum(len(b[0]) for b in budgeted.batches) == 50
    with pytest.raises(ConfigurationError, match="max_overhead"):
        OverheadBudget(1.5)


def test_a_binding_budget_resumes_at_the_same_steps(tmp_path):
    """The budget's spent count is checkpointed: a fit resumed from a real checkpoint skips and
    measures at the same steps, with the same values, as the same fit run straight through."""
    from tests.contract.harness import fit

    deterministic = dict(module_kwargs={"dropout": 0.0}, loader_kwargs={"shuffle": False}, max_steps=-1)

    def make():
        return EdgeOfStability(every_n_steps=1, max_overhead=0.9, at_fit_end=False, batch_sharpness=2)

    straight = make()
    fit([straight], tmp_path / "a", max_epochs=20, **deterministic)
    first = make()
    trainer, _ = fit([first], tmp_path / "b", max_epochs=10, **deterministic)
    ckpt = tmp_path / "b.ckpt"
    trainer.save_checkpoint(ckpt)
    second = make()
    fit([second], tmp_path / "c", max_epochs=20, ckpt_path=str(ckpt), **deterministic)
    steps = [h["step"] for h in straight.history]
    assert 3 <= len(steps) < 40, steps  # the budget thinned the every-step schedule
    assert any(s > 40 for s in steps), steps  # and measured after the checkpoint (step 40)
    assert [h for h in second.history if h["step"] > 40] == [h for h in straight.history if h["step"] > 40]
    assert second.hessian_measurement.budget.spent == straight.hessian_measurement.budget.spent
