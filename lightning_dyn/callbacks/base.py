"""What every lightning_dyn callback shares: the schedule, the hygiene, the logging, the state.

A subclass implements :meth:`DynamicsCallback.measure` (and, if it needs one, :meth:`prepare`);
this class decides *when* to measure (every ``every_n_steps`` optimizer steps and at fit end,
never twice at one step), wraps each measurement so it cannot disturb training (global RNG
streams forked and restored, train/eval flags restored, grad mode on), times it, logs the
result the Lightning way, and keeps the series in a checkpointable state. Steps that are not
measured cost one integer comparison: no device work and no host sync.

Logging: every measurement goes to every logger at its own step (whatever ``log_every_n_steps``
is), and into the callback metrics — through ``pl_module.log(logger=False)`` in the loop, so
``EarlyStopping``/``ModelCheckpoint`` can monitor the scalars and the progress bar shows them;
directly at fit end, where ``self.log`` is not allowed. Non-finite results are
reported (a warning and an event in the state), never logged as numbers.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from ..curvature.sharded import reshard
from ..sampling import generator_bytes, generator_from_bytes
from .compat import CALLBACK_BASES, ConfigurationError, tensorboard_writer
from .figures import write_layout
from .validation import check_positive_int
from .rng import preserved_rng


@dataclass
class Measurement:
    """What :meth:`DynamicsCallback.measure` returns: scalars by tag, and its cost in products."""

    scalars: dict[str, float]
    hvps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def rank_zero_buffers(trainer: Any, module: nn.Module) -> Iterator[None]:
    """Under DDP, measure with global rank 0's buffers on every rank, restored bitwise after.

    Each rank's BatchNorm running statistics move with its own batches (DDP broadcasts rank 0's
    at the start of the next forward pass), so in eval mode every rank would otherwise measure a
    slightly different function. Outside DDP this does nothing."""
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if getattr(trainer, "world_size", 1) <= 1 or not buffers or not torch.distributed.is_initialized():
        yield
        return
    with torch.no_grad():
        own = [b.clone() for b in buffers]
        for b in buffers:
            torch.distributed.broadcast(b, src=0)
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in zip(buffers, own):
                b.copy_(saved)


#: strategies whose parameters or gradients are not where a callback can read them, and why
UNSUPPORTED_STRATEGIES = {
    "FSDPStrategy": (
        "FSDPStrategy (FSDP1) keeps each module's parameters flattened into one sharded FlatParameter, so neither "
        "the parameters a measurement differentiates nor per-layer gradients exist as tensors of the model. Use "
        "ModelParallelStrategy with fully_shard in configure_model (FSDP2, which Lightning recommends for new "
        "code): every callback but SGDLyapunov supports it"),
    "DeepSpeedStrategy": (
        "DeepSpeed partitions gradients (ZeRO-2) and parameters (ZeRO-3) in its own buffers and steps the optimizer "
        "itself, so gradients are not in `.grad` and the parameters are not the model's tensors. Use "
        "ModelParallelStrategy with fully_shard (FSDP2) or DDP"),
}


@contextlib.contextmanager
def preserved_modes(module: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


class DynamicsCallback(*CALLBACK_BASES):  # type: ignore[misc]
    """Base class of the lightning_dyn callbacks (see the module docstring).

    Args:
        every_n_steps: measure every this many optimizer steps (``trainer.global_step``).
        at_fit_end: measure once more when training ends (unless that step was just measured).
        seed: seed of the callback's private ``torch.Generator`` (random start vectors, probes).
    """

    #: the tag shown in the progress bar, if any
    progress_bar_tag: Optional[str] = None
    #: the heading of this callback's charts on the custom-scalars page
    layout_category: str = "lightning_dyn"
    #: what ``Measurement.hvps`` counts, logged as ``dyn/cost/<name>_<unit>`` (``None``: seconds only)
    cost_unit: Optional[str] = "hvps"

    def __init__(self, every_n_steps: int = 50, at_fit_end: bool = True, seed: int = 0) -> None:
        check_positive_int("every_n_steps", every_n_steps)
        if not isinstance(at_fit_end, bool):
            raise ConfigurationError(f"`at_fit_end` must be a bool, got {at_fit_end!r}")
        if not isinstance(seed, int):
            raise ConfigurationError(f"`seed` must be an integer, got {seed!r}")
        self.every_n_steps = every_n_steps
        self.at_fit_end = at_fit_end
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.last_step = -1
        self.total_hvps = 0
        self.total_seconds = 0.0
        #: true while the fit-end measurement runs (slower schedules measure then too)
        self.measuring_at_fit_end = False

    # -- pickling (``ddp_spawn`` sends the callbacks to the new processes) -----------------------
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "generator": generator_bytes(self.generator)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({**state, "generator": generator_from_bytes(state["generator"])})

    # -- for subclasses ---------------------------------------------------------------------
    def prepare(self, trainer: Any, pl_module: Any) -> None:
        """Called once when training starts (probe set, checks). Raise :class:`~lightning_dyn.ConfigurationError`
        for a setup the callback cannot serve, so the user hears it now, not 10,000 steps in."""

    def measure(self, trainer: Any, pl_module: Any) -> Measurement:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Subclass state to checkpoint (warm starts, running estimates)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    @property
    def cost_name(self) -> str:
        return type(self).__name__

    def monitorable(self, tag: str) -> bool:
        """Whether ``tag`` also goes into the callback metrics (for ``EarlyStopping``, ``ModelCheckpoint``,
        the progress bar); every tag goes to the loggers. Each ``pl_module.log`` call costs Lightning
        time growing with the number of logged keys, so per-layer series can stay logger-only."""
        return True

    def agree(self, trainer: Any, decision: bool) -> bool:
        """A decision every rank takes identically: true if any rank's is."""
        return bool(trainer.strategy.reduce_boolean_decision(decision, all=False))

    def tensorboard(self, trainer: Any) -> Optional[Any]:
        """The TensorBoard ``SummaryWriter`` on global rank 0, else ``None``."""
        return tensorboard_writer(trainer)

    # -- Lightning hooks ----------------------------------------------------------------------
    @functools.cached_property  # Lightning reads it at every hook call; the arguments are fixed
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, seed=self.seed)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        refused = UNSUPPORTED_STRATEGIES.get(type(getattr(trainer, "strategy", None)).__name__)
        if refused:
            raise ConfigurationError(f"{type(self).__name__}: {refused}")
        with self.charged(), self.hygiene(pl_module):
            self.prepare(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step > 0 and step != self.last_step and self.due(step):
            self._measure_and_log(trainer, pl_module, in_loop=True)
        elif self.last_step < 0 and step > 0 and trainer.is_last_batch and self._awaited(trainer):
            # an epoch ends before the first scheduled measurement while EarlyStopping or
            # ModelCheckpoint waits for one of our tags: measure now, once, rather than let it
            # fail with "metric not available" (later epochs find the last value)
            self._measure_and_log(trainer, pl_module, in_loop=True)

    def due(self, step: int) -> bool:
        """Whether the schedule measures at optimizer step ``step`` (``step > 0``): every
        ``every_n_steps`` (a subclass with a budget skips some)."""
        return step % self.every_n_steps == 0

    def may_write(self, tag: str) -> bool:
        """Whether this callback may log ``tag`` (a subclass with a fixed set of tags narrows it)."""
        return True

    def _awaited(self, trainer: Any) -> bool:
        """A monitor (``EarlyStopping``, ``ModelCheckpoint``) waits for a ``dyn/`` tag not logged yet."""
        watchers = list(getattr(trainer, "early_stopping_callbacks", [])) + \
            list(getattr(trainer, "checkpoint_callbacks", []))
        wanted = {getattr(w, "monitor", None) for w in watchers}
        return any(isinstance(tag, str) and tag.startswith("dyn/") and tag not in trainer.callback_metrics
                   and self.may_write(tag) for tag in wanted)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.at_fit_end and trainer.global_step != self.last_step:
            self._measure_and_log(trainer, pl_module, in_loop=False)
        with self.charged():
            self.fit_end(trainer, pl_module)
        if self.history:  # what the whole run cost, setup and fit-end extras included
            totals = {f"dyn/cost/{self.cost_name}_total_seconds": self.total_seconds}
            if self.cost_unit:
                totals[f"dyn/cost/{self.cost_name}_total_{self.cost_unit}"] = float(self.total_hvps)
            for logger in trainer.loggers:
                logger.log_metrics(totals, step=trainer.global_step)

    def fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Work when training ends, after the last measurement (figures, a fit-end density): timed
        into the totals, and products added to ``total_hvps`` by the subclass."""

    @contextlib.contextmanager
    def charged(self) -> Iterator[None]:
        """Add the wall time of the block to ``total_seconds``: everything the callback does — setup,
        measurements, their logging and figures, fit-end extras — is its cost."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.total_seconds += time.perf_counter() - start

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "history": list(self.history),
            "events": list(self.events),
            "generator": self.generator.get_state(),
            "total_hvps": self.total_hvps,
            "total_seconds": self.total_seconds,
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step = state_dict["last_step"]
        self.history = list(state_dict["history"])
        self.events = list(state_dict["events"])
        self.generator.set_state(state_dict["generator"])
        self.total_hvps = state_dict["total_hvps"]
        self.total_seconds = state_dict["total_seconds"]
        self.load_extra_state(state_dict["extra"])

    # -- the measurement ------------------------------------------------------------------------
    @contextlib.contextmanager
    def hygiene(self, pl_module: Any) -> Iterator[None]:
        """Global RNG streams forked and restored, module modes restored, grad mode on; under FSDP2
        every module resharded after (a forward pass without a parameter backward — a Jacobian, a
        loss — leaves gathered parameters registered in the module, which training does not expect)."""
        try:
            with preserved_rng(), preserved_modes(pl_module), torch.enable_grad():
                yield
        finally:
            reshard(pl_module)

    def _measure_and_log(self, trainer: Any, pl_module: Any, *, in_loop: bool) -> None:
        with self.charged():
            self._measure_and_log_charged(trainer, pl_module, in_loop=in_loop)

    def _measure_and_log_charged(self, trainer: Any, pl_module: Any, *, in_loop: bool) -> None:
        step = trainer.global_step
        start = time.perf_counter()
        self.measuring_at_fit_end = not in_loop
        with self.hygiene(pl_module), rank_zero_buffers(trainer, pl_module):
            try:
                result: Optional[Measurement] = self.measure(trainer, pl_module)
                failure = None
            except FloatingPointError as err:
                result, failure = None, str(err)
        seconds = time.perf_counter() - start
        self.last_step = step
        if result is None:
            self._report_nonfinite(step, failure)
            return
        finite = {k: float(v) for k, v in result.scalars.items() if math.isfinite(float(v))}
        nonfinite = sorted(set(result.scalars) - set(finite))
        if nonfinite:
            self._report_nonfinite(step, f"non-finite {', '.join(nonfinite)}")
        self.total_hvps += result.hvps
        self.history.append({"step": step, **finite, "hvps": result.hvps})
        cost = {f"dyn/cost/{self.cost_name}_seconds": seconds}
        if self.cost_unit:
            cost[f"dyn/cost/{self.cost_name}_{self.cost_unit}"] = float(result.hvps)
        self._log(trainer, pl_module, {**finite, **cost}, in_loop=in_loop)
        if len(self.history) == 1 and self.layout():
            write_layout(self.tensorboard(trainer), self.layout_category, self.layout())
        self.on_measured(trainer, pl_module, step, result)

    def on_measured(self, trainer: Any, pl_module: Any, step: int, result: Measurement) -> None:
        """Called after each logged measurement (TensorBoard artefacts, actions)."""

    def layout(self) -> dict[str, list[str]]:
        """This callback's charts on TensorBoard's custom-scalars page, title → exact tags (written
        after the first measurement, beside every other attached callback's)."""
        return {}

    def _report_nonfinite(self, step: int, reason: Optional[str]) -> None:
        self.events.append({"step": step, "event": "nonfinite_measurement", "reason": reason})
        rank_zero_warn(f"{type(self).__name__}: the measurement at step {step} is not finite ({reason}); not logged")

    def _log(self, trainer: Any, pl_module: Any, scalars: dict[str, float], *, in_loop: bool) -> None:
        # Loggers receive every measurement at its own step, whatever `log_every_n_steps` is (as
        # LearningRateMonitor does); `pl_module.log(logger=False)` puts the scalars where
        # EarlyStopping, ModelCheckpoint and the progress bar look. At fit end `self.log` is not
        # allowed, so the callback metrics are set directly.
        monitorable = {tag: value for tag, value in scalars.items() if self.monitorable(tag)}
        if in_loop:
            for tag, value in monitorable.items():
                pl_module.log(tag, value, on_step=True, on_epoch=False, prog_bar=tag == self.progress_bar_tag,
                              logger=False, batch_size=1, sync_dist=False)
        else:
            for tag, value in monitorable.items():
                trainer.callback_metrics[tag] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
