"""GradientExplosionMonitor and JacobianSpectrum on real Trainers: guards that skip, stop or raise,
events with their step and layer, what reaches TensorBoard, a NaN on one DDP rank."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import GradientExplosionError, GradientExplosionMonitor, JacobianSpectrum
from lightning_dyn.dynamics import GradientDetector
from tests.contract.harness import assert_bitwise_equal, seed_all, tensorboard_scalars

NAN_BATCH = 3  # the fourth batch, i.e. optimizer step 4


class Net(pl.LightningModule):
    """Linear–BatchNorm–Tanh–Linear–Tanh–Linear regression, with SGD+momentum or Adam."""

    def __init__(self, optimizer: str = "sgd", batchnorm: bool = True, nan_loss_on_rank: int = -1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16) if batchnorm else nn.Identity(), nn.Tanh(),
                                 nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
        self.optimizer, self.nan_loss_on_rank = optimizer, nan_loss_on_rank

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = F.mse_loss(self(batch[0]), batch[1])
        if self.global_rank == self.nan_loss_on_rank and self.global_step == 2:
            loss = loss + torch.tensor(float("nan"))  # a NaN loss with finite gradients, on one rank only
        return loss

    def configure_optimizers(self):
        if self.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=1e-2)
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _batches(num: int = 8, nan_at: tuple[int, ...] = (), scale_at: tuple[int, ...] = ()) -> list:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(num):
        x, y = torch.randn(8, 6, generator=g), torch.randn(8, 2, generator=g)
        if i in nan_at:
            x[2, 1] = float("nan")
        if i in scale_at:
            y = y * 1e4
        out.append((x, y))
    return out


def _fit(batches: list, callbacks: list, *, module=Net, logger=False, **kwargs):
    """Fit ``module()`` (a class or factory, built after seeding) on ``batches`` in order, one epoch."""
    seed_all(0)
    module = module()
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    kwargs = {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "logger": logger, "enable_checkpointing": False,
              "enable_progress_bar": False, "enable_model_summary": False, **kwargs}
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(module, loader)
    return trainer, module


@pytest.mark.parametrize("optimizer, accumulate", [("sgd", 1), ("adam", 1), ("sgd", 2)])
def test_skip_equals_the_run_with_that_batch_removed(optimizer, accumulate):
    batches = _batches(nan_at=(NAN_BATCH,))
    monitor = GradientExplosionMonitor(every_n_steps=2, action="skip")
    trainer, skipped = _fit(batches, [monitor], module=lambda: Net(optimizer), accumulate_grad_batches=accumulate)
    # with gradient accumulation the whole optimizer step goes: both of its micro-batches
    first = NAN_BATCH - NAN_BATCH % accumulate
    kept = batches[:first] + batches[first + accumulate:]
    reference_trainer, reference = _fit(kept, [], module=lambda: Net(optimizer), accumulate_grad_batches=accumulate)
    # parameters, BatchNorm statistics (restored after the NaN forward pass) and optimizer state
    # (momentum buffers, Adam moments and step counts) are those of the run that never saw the batch
    assert_bitwise_equal(reference.state_dict(), skipped.state_dict(), "module")
    assert_bitwise_equal(reference_trainer.optimizers[0].state_dict(), trainer.optimizers[0].state_dict(), "optimizer")
    step = NAN_BATCH // accumulate + 1
    kinds = [(e["step"], e["event"]) for e in monitor.events]
    assert (step, "nonfinite_loss") in kinds and (step, "nonfinite_gradient") in kinds and (step, "skipped") in kinds
    assert monitor.skips == 1 and trainer.global_step == 8 // accumulate  # Lightning's own counter still advances


def test_stop_and_raise_keep_the_parameters_finite():
    monitor = GradientExplosionMonitor(every_n_steps=2, action="stop")
    with pytest.warns(UserWarning, match="stopping training at step 4"):
        trainer, module = _fit(_batches(nan_at=(NAN_BATCH,)), [monitor])
    assert trainer.global_step == 4 and all(torch.isfinite(p).all() for p in module.parameters())
    assert monitor.events[-1]["event"] == "stopped"
    with pytest.raises(GradientExplosionError, match="step 4: nonfinite_loss"):
        _fit(_batches(nan_at=(NAN_BATCH,)), [GradientExplosionMonitor(action="raise")])


def test_consecutive_skips_budget_stops_with_a_message():
    monitor = GradientExplosionMonitor(every_n_steps=2, action="skip", max_consecutive_skips=3)
    with pytest.warns(UserWarning, match="3 consecutive steps skipped"):
        trainer, _ = _fit(_batches(nan_at=(2, 3, 4, 5, 6, 7)), [monitor])
    assert trainer.global_step == 5 and monitor.skips == 3


def test_log_inspects_at_the_logged_steps_with_the_true_step_and_layer():
    monitor = GradientExplosionMonitor(every_n_steps=4, action="warn", factor=10.0, warmup=3)
    with pytest.warns(UserWarning, match="gradient_spike in net.5 at step 7"):
        trainer, _ = _fit(_batches(scale_at=(6,)), [monitor], module=lambda: Net(batchnorm=False))
    spikes = [e for e in monitor.events if e["event"] == "gradient_spike"]
    # step 7's huge update (warn does not skip) makes step 8 spike too
    assert spikes[0]["step"] == 7 and spikes[0]["value"] > spikes[0]["bound"]
    # the spike did not move the running median it was tested against
    assert monitor.history[-1]["dyn/grad_norm_preclip_median"] < spikes[0]["value"] / 100


def test_nan_loss_is_detected_as_such_and_not_logged_as_a_number(tmp_path):
    monitor = GradientExplosionMonitor(every_n_steps=2)  # "none": the NaN update is taken, later steps are NaN too
    logger = TensorBoardLogger(tmp_path)
    _fit(_batches(nan_at=(NAN_BATCH,)), [monitor], logger=logger)
    assert [(e["step"], e["event"]) for e in monitor.events[:2]] == [(4, "nonfinite_loss"), (4, "nonfinite_gradient")]
    series = tensorboard_scalars(logger.log_dir)
    assert [s for s, _ in series["dyn/grad_norm_preclip"]] == [2]
    # two events (loss and gradient) at each of the steps 4 … 8
    assert [v for _, v in series["dyn/grad_events"]] == [0, 2, 6, 10]


def test_detector_names_the_layer_where_backprop_produced_the_nan():
    # parameters of layers in/hidden/out; the inf in 'hidden' must not leak into 'out'
    detector = GradientDetector([0, 0, 1, 2], ["in", "hidden", "out"], factor=None)
    records, events = detector.inspect([5], np.array([[np.nan, 1.0, np.inf, 2.0]]), [0.3])
    assert [(e["event"], e["layer"]) for e in events] == [("nonfinite_gradient", "hidden")]
    assert records[0].layer_norms[2] == 2.0
    # several steps at once: layer norms, totals, and a spike tested against the window before it
    detector = GradientDetector([1, 0, 1], ["a", "b"], threshold=5.0, factor=2.0, warmup=2)
    records, events = detector.inspect([1, 2, 3, 4], np.array([[3.0, 4.0, 0.0]] * 3 + [[6.0, 8.0, 8.0]]), [0.1] * 4)
    assert records[0].total == 5.0 and list(records[0].layer_norms) == [4.0, 3.0]
    assert [(e["step"], e["layer"], e["bound"]) for e in events] == [(4, "b", 10.0)]


def test_tensorboard_gets_layout_histogram_and_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path)
    monitor = GradientExplosionMonitor(every_n_steps=2, figure_every_n_steps=4)
    jacobian = JacobianSpectrum(every_n_steps=4, probe_size=4, k=2, density_runs=1, density_steps=6)
    _fit(_batches(), [monitor, jacobian], logger=logger)
    tags: dict[str, list[str]] = {}
    for events in Path(logger.log_dir).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent), size_guidance={"images": 0, "histograms": 0})
        acc.Reload()
        for kind, names in acc.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, []).extend(names)
    assert "dyn/grad_norm_preclip_layers" in tags["histograms"]
    assert {"dyn/backprop_depth_profile", "dyn/jacobian_singular_values"} <= set(tags["images"])
    assert "dyn/backprop_lyapunov" in tags["scalars"] and "dyn/jacobian_sigma_max" in tags["scalars"]
    # the blocks were found automatically: the two hidden layers of the Sequential
    assert monitor.signal is not None and monitor.signal.names == ["net.2", "net.4"]


def test_bad_setups_fail_before_training():
    from lightning_dyn import ConfigurationError

    class Frozen(Net):
        def __init__(self):
            super().__init__()
            self.net.requires_grad_(False)
            self.dummy = nn.Parameter(torch.zeros(()), requires_grad=False)

        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) + 0 * self.dummy

    with pytest.raises(ConfigurationError, match="no parameters that receive gradients"):
        _fit(_batches(2), [GradientExplosionMonitor()], module=Frozen)


# -- DDP: a NaN loss on one rank only ----------------------------------------------------------------
class _NetNanOnRank1(Net):
    def __init__(self):
        super().__init__(batchnorm=False, nan_loss_on_rank=1)


class _Dump(pl.Callback):
    def __init__(self, monitor, out):
        self.monitor, self.out = monitor, out

    def on_train_end(self, trainer, pl_module):
        params = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps({
            "events": [(e["step"], e["event"]) for e in self.monitor.events], "skips": self.monitor.skips,
            "params": params.tolist(), "step": trainer.global_step}))


@pytest.mark.slow
def test_ddp_nan_loss_on_one_rank_skips_on_both_without_hanging(tmp_path):
    torch.multiprocessing.set_sharing_strategy("file_system")
    monitor = GradientExplosionMonitor(every_n_steps=2, action="skip")
    _fit(_batches(), [monitor, _Dump(monitor, str(tmp_path))], module=_NetNanOnRank1,
         strategy="ddp_spawn", devices=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["params"] == ranks[1]["params"] and all(map(math.isfinite, ranks[0]["params"]))
    assert ranks[0]["skips"] == ranks[1]["skips"] == 1 and ranks[0]["step"] == ranks[1]["step"] == 4
    assert (3, "nonfinite_loss") in map(tuple, ranks[1]["events"])  # detected on rank 1 only ...
    assert (3, "nonfinite_loss") not in map(tuple, ranks[0]["events"])
    assert (3, "skipped") in map(tuple, ranks[0]["events"])  # ... and skipped on both


class _ManualNet(Net):
    """Manual optimization that calls ``loss.backward()`` itself: Lightning never sees the loss."""

    def __init__(self):
        super().__init__(batchnorm=False)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        optimizer.zero_grad()
        F.mse_loss(self(batch[0]), batch[1]).backward()
        optimizer.step()


def test_manual_optimization_without_lightning_backward_has_no_loss_to_test():
    monitor = GradientExplosionMonitor(every_n_steps=2, action="skip")
    _fit(_batches(), [monitor], module=_ManualNet)
    assert monitor.events == [] and len(monitor.history) == 4  # the unknown loss is not a NaN loss
    monitor = GradientExplosionMonitor(every_n_steps=2, action="skip")
    _fit(_batches(nan_at=(NAN_BATCH,)), [monitor], module=_ManualNet)
    assert [(e["step"], e["event"]) for e in monitor.events] == [(4, "nonfinite_gradient"), (4, "skipped")]
