"""The contract every lightning_dyn callback meets, checked on real Trainers.

Each test runs over every entry of ``tests/contract/registry.py``.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import typing

import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_dyn import ConfigurationError, GradientExplosionMonitor, HessianSettings, HessianSharpness
from tests.contract.harness import (
    HistoryRecorder,
    assert_bitwise_equal,
    fit,
    tensorboard_scalars,
    training_state,
)
from tests.contract.registry import ENTRIES

entries = pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])


# 1. Observes without disturbing ------------------------------------------------------------------
@entries
def test_observes_without_disturbing(entry, tmp_path):
    trainer, module = fit([], tmp_path / "plain", logger=TensorBoardLogger(tmp_path / "plain"))
    baseline = training_state(trainer, module)
    callback = entry.factory()
    trainer, module = fit([callback], tmp_path / "observed", logger=TensorBoardLogger(tmp_path / "observed"))
    assert len(callback.history) >= 3, "the callback must actually have measured"
    assert_bitwise_equal(baseline, training_state(trainer, module), "state")


# 2. Costs little: only scheduled steps are measured, and the cost is reported --------------------
@entries
def test_measures_on_schedule_and_reports_cost(entry, tmp_path):
    callback = entry.factory()
    fit([callback], tmp_path, max_steps=14)
    n = callback.every_n_steps
    expected = [s for s in range(1, 15) if s % n == 0] + ([14] if 14 % n else [])
    assert [h["step"] for h in callback.history] == expected
    assert callback.total_seconds > 0


# 3. Logs the Lightning way ------------------------------------------------------------------------
@entries
def test_logs_scalars_to_tensorboard_and_other_loggers(entry, tmp_path):
    callback = entry.factory()
    n = callback.every_n_steps
    tb = TensorBoardLogger(tmp_path, name="tb")
    csv_logger = CSVLogger(tmp_path, name="csv")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=entry.tags[0], mode="max", every_n_train_steps=n)
    trainer, _ = fit([callback, ckpt], tmp_path, max_steps=3 * n + 1, logger=[tb, csv_logger],
                     enable_checkpointing=True)
    series = tensorboard_scalars(tb.log_dir)
    for tag in entry.tags:
        assert tag in series, f"{tag} missing from TensorBoard ({sorted(series)})"
        assert all(math.isfinite(v) for _, v in series[tag])
    steps = [s for s, _ in series[entry.tags[0]]]
    assert len(steps) == 4 and steps[-1] == 3 * n + 1, steps  # three in the loop, one at fit end
    values = [v for _, v in series[entry.tags[0]]]
    history = [h[entry.tags[0]] for h in callback.history]
    assert values == pytest.approx(history, rel=1e-6)
    # a monitor can use the decision scalar
    assert ckpt.best_model_score is not None and math.isfinite(float(ckpt.best_model_score))
    assert entry.tags[0] in trainer.callback_metrics
    with open(csv_logger.log_dir + "/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(1 for r in rows if r.get(entry.tags[0])) == 4


# 4. Survives resume -------------------------------------------------------------------------------
@entries
def test_resume_continues_the_same_series(entry, tmp_path):
    # training itself must resume bitwise: no Dropout (Lightning does not checkpoint the global
    # RNG), no shuffling, and a checkpoint at an epoch boundary (4 steps an epoch)
    deterministic = dict(module_kwargs={"dropout": 0.0}, loader_kwargs={"shuffle": False}, max_steps=-1)
    straight = entry.factory()
    fit([straight], tmp_path / "a", max_epochs=3, **deterministic)
    first = entry.factory()
    trainer, _ = fit([first], tmp_path / "b", max_epochs=2, **deterministic)
    ckpt = tmp_path / "b.ckpt"
    trainer.save_checkpoint(ckpt)
    second = entry.factory()
    fit([second], tmp_path / "c", max_epochs=3, ckpt_path=str(ckpt), **deterministic)
    assert len(straight.history) == 3
    assert [h["step"] for h in second.history] == [h["step"] for h in straight.history]
    # bitwise, products per measurement included: same warm starts, same generator state
    assert second.history == straight.history


# 5. DDP-correct ----------------------------------------------------------------------------------
@pytest.mark.slow
@entries
def test_ddp_two_processes_measure_the_global_loss(entry, tmp_path):
    frozen = dict(module_kwargs={"lr": 0.0, "batchnorm": False}, loader_kwargs={"shuffle": False})
    # this sandbox refuses to resize the memfd of torch's default "file_descriptor" strategy
    torch.multiprocessing.set_sharing_strategy("file_system")
    single = entry.factory(**entry.ddp_kwargs)
    # with the threads of one DDP rank (Lightning gives each of the 2 processes half the cores):
    # a chaotic simulation (SGDLyapunov) amplifies the rounding differences of another thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    try:
        fit([single], tmp_path / "single", max_steps=8, **frozen)
    finally:
        torch.set_num_threads(threads)
    callback = entry.factory(**entry.ddp_kwargs)
    fit([callback, HistoryRecorder(callback, str(tmp_path))], tmp_path / "ddp", max_steps=8,
        strategy="ddp_spawn", devices=2, **frozen, **entry.ddp_trainer_kwargs)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1], "every rank must see the same measurements"
    assert [h["step"] for h in ranks[0]] == [h["step"] for h in single.history]
    for got, want in zip(ranks[0], single.history):
        assert got[entry.ddp_tag] == pytest.approx(want[entry.ddp_tag], rel=1e-5)


# 6. Fails clearly ---------------------------------------------------------------------------------
@entries
def test_bad_arguments_raise_naming_the_argument(entry):
    for kwargs, name in entry.bad_kwargs:
        with pytest.raises((MisconfigurationException, ValueError), match=name):
            entry.factory(**kwargs)


def _no_grad_loss(pl_module, batch):
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(pl_module(batch[0]), batch[1])


@entries
def test_a_setup_it_cannot_serve_fails_before_training(entry, tmp_path):
    kwargs, match = ({"loss_fn": _no_grad_loss}, "no_grad") if entry.accepts_loss_fn else entry.unservable
    assert kwargs, f"{entry.name}: a callback that takes no loss names its unservable setup in the registry"
    callback = entry.factory(**kwargs)
    with pytest.raises(ConfigurationError, match=match):
        fit([callback], tmp_path)
    assert callback.history == []


@entries
def test_a_nan_measurement_is_reported_not_logged(entry, tmp_path):
    if not entry.accepts_loss_fn and entry.nan_after is None:
        pytest.skip(entry.nan_skip_reason)
    state = {"trainer": None}

    def after_step_4() -> bool:
        return bool(state["trainer"]) and state["trainer"].global_step > 4

    def loss_going_nan(pl_module, batch):
        loss = torch.nn.functional.cross_entropy(pl_module(batch[0]), batch[1])
        return loss * float("nan") if after_step_4() else loss

    kwargs = entry.nan_after(after_step_4) if entry.nan_after else {"loss_fn": loss_going_nan}
    callback = entry.factory(**kwargs)
    tb = TensorBoardLogger(tmp_path)

    class Capture(HistoryRecorder):
        def on_train_start(self, trainer, pl_module):
            state["trainer"] = trainer

    with pytest.warns(UserWarning, match="not finite"):
        fit([Capture(callback, str(tmp_path)), callback], tmp_path, logger=tb)
    assert [h["step"] for h in callback.history] == [4]
    assert [e["step"] for e in callback.events] == [8, 12]
    assert [s for s, _ in tensorboard_scalars(tb.log_dir)[entry.tags[0]]] == [4]


# 7. Works with both imports -----------------------------------------------------------------------
@entries
def test_accepted_by_both_lightning_packages(entry, tmp_path):
    import lightning.pytorch
    import pytorch_lightning

    for package in ("lightning", "pytorch_lightning"):
        callback = entry.factory()
        assert isinstance(callback, (lightning.pytorch.Callback, pytorch_lightning.Callback))
        fit([callback], tmp_path / package, package=package)
        assert len(callback.history) == 3


# 8. Configurable from YAML ------------------------------------------------------------------------
@entries
def test_every_argument_is_typed_documented_and_parsed_from_yaml(entry):
    cls = type(entry.factory())
    hints = typing.get_type_hints(cls.__init__)
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for name in params:
        assert name in hints, f"{cls.__name__}.__init__ argument {name!r} has no type annotation"
        assert name in (cls.__doc__ or ""), f"{cls.__name__} docstring does not document {name!r}"
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(cls, "callback")
    cfg = parser.parse_string("callback:\n  every_n_steps: 7\n")
    callback = parser.instantiate_classes(cfg).callback
    assert isinstance(callback, cls) and callback.every_n_steps == 7
    if "hessian" in params:  # the settings object is a nested mapping in YAML
        cfg = parser.parse_string("callback:\n  hessian:\n    k: 3\n    backend: finite_difference\n")
        callback = parser.instantiate_classes(cfg).callback
        assert isinstance(callback.hessian, HessianSettings)
        assert (callback.k, callback.backend, callback.tol) == (3, "finite_difference", HessianSettings().tol)


# 9. One vocabulary ---------------------------------------------------------------------------------
@entries
def test_arguments_are_keyword_only_with_the_common_ones(entry):
    cls = type(entry.factory())
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}
    positional = [n for n, p in params.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert not positional, f"{cls.__name__} takes {positional} positionally"
    with pytest.raises(TypeError):
        cls(10)
    assert {"every_n_steps", "at_fit_end", "seed"} <= set(params)
    for word, meaning in (("mode", ("eval", "train")), ("action", ("none", "warn", "stop"))):
        if word in params:
            assert set(meaning) <= set(typing.get_args(typing.get_type_hints(cls.__init__)[word])), word


def test_a_spelling_of_an_earlier_version_says_what_it_is_now():
    with pytest.raises(ValueError, match="action='none'.*since lightning_dyn 1.0"):
        GradientExplosionMonitor(action="log")
    with pytest.raises(ValueError, match="HessianSettings"):
        HessianSharpness(hessian={"k": 2})


# 5b. An action that changes training is one decision on every rank, and it lasts -----------------
@pytest.mark.slow
def test_reduce_lr_is_one_decision_on_every_rank_and_lasts(tmp_path):
    """``EdgeOfStability(action="reduce_lr")`` under ``ddp_spawn``: both ranks reduce at the same
    measurement (band 0.99 makes the first measurement the edge), keep the same factor after it
    (their measurements stay equal, so their parameters do), as one process decides."""
    from lightning_dyn import EdgeOfStability

    torch.multiprocessing.set_sharing_strategy("file_system")
    frozen = dict(module_kwargs={"batchnorm": False}, loader_kwargs={"shuffle": False})

    def eos():
        return EdgeOfStability(every_n_steps=2, hessian=HessianSettings(probe_size=128, tol=1e-6),
                               action="reduce_lr", act_on="edge", band=0.99, lr_factor=0.5)

    single = eos()
    with pytest.warns(UserWarning, match="learning rate multiplied"):
        fit([single], tmp_path / "single", max_steps=8, **frozen)
    callback = eos()
    fit([callback, HistoryRecorder(callback, str(tmp_path))], tmp_path / "ddp", max_steps=8, strategy="ddp_spawn",
        devices=2, **frozen)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]
    # reduced once, at the first measurement, and kept (the schedule of decisions one process takes too;
    # the values differ from one process's: each rank trains on its own half of the batches)
    assert [h["dyn/lr_factor"] for h in ranks[0]] == [1.0, 0.5, 0.5, 0.5] == \
        [h["dyn/lr_factor"] for h in single.history]
    assert single.lr_reduction.factor == 0.5 and single.lr_reduction.state_dict() == {"factor": 0.5}
