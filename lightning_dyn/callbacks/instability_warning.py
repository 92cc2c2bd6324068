"""InstabilityWarning: an alarm before the loss spikes, from cheap per-step signals.

Every optimizer step, after backward and before the update, three signals are read from what the
step already has (:mod:`lightning_dyn.dynamics.warning_signals`; no extra forward or backward):
the curvature along the last update against the optimizer's stability threshold, Adam's update RMS
against its running median, and the gradient norm's z-score. They are combined into one number
(:mod:`lightning_dyn.dynamics.early_warning`),

    risk_t = max_k score_k(t) / level_k          (≥ 1: the alarm),

logged every step as ``dyn/instability_risk`` with the scores beside it
(``dyn/warning/update_sharpness_ratio``, ``dyn/warning/update_rms_ratio``,
``dyn/warning/grad_norm_zscore``). Alarms at most ``merge`` steps apart are one episode: one
event in ``callback.events`` (the step, the risk, the scores, the signals that raised it) and,
every ``every_n_steps``, ``dyn/instability_risk_max`` (since the last) and ``dyn/instability_episodes``
in the callback metrics, where ``EarlyStopping`` can watch them.

TensorBoard gets a custom-scalars section (the risk, each score, the episodes) and, at fit end, the
figure ``dyn/instability_figure``: the training loss over the risk from ``FIGURE_MARGIN`` steps
before the run's first alarm to as many after, the loss spikes marked
(:func:`~lightning_dyn.dynamics.loss_spikes`). The losses are kept on the device until then: no
transfer on the way.

Actions (off by default; the decision is the same on every rank):

* ``"warn"``: a warning at each episode, naming the signals (``"skip"`` warns so too);
* ``"skip"``: every alarmed step's update is dropped — parameters, the optimizer's state and the
  step's buffer updates (BatchNorm statistics) as if the step had not happened
  (:class:`~lightning_dyn.callbacks.update_skip.UpdateSkip`); training stops after
  ``max_consecutive_skips`` in a row;
* ``"reduce_lr"``: the learning rate the optimizer steps with is multiplied by ``lr_factor`` from
  this very step, at most once every ``merge`` steps, in a way that lasts under any scheduler
  (:class:`~lightning_dyn.callbacks.LearningRateReduction`; ``dyn/lr_factor``);
* ``"stop"``: the alarmed update is dropped and training stops.

The signals concern one optimizer (``optimizer``, default the first); sharded parameters (FSDP2)
are refused at setup — each rank would hold a shard of the update.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from typing import Any, Literal, Optional

import torch
from lightning.pytorch.utilities import rank_zero_warn

from ..curvature.sharded import is_sharded
from ..curvature.update_curvature import UpdateCurvature
from ..dynamics.early_warning import SCORES, InstabilityDetector, Risk, alarm_episodes, loss_spikes
from ..dynamics.optimizer_thresholds import UnsupportedOptimizer, check_supported
from ..dynamics.update_stability import UpdateStability
from ..dynamics.warning_signals import WarningSignals
from .base import DynamicsCallback, Measurement
from .compat import ConfigurationError
from .figures import add_figure, warning_figure
from .lr_reduction import LearningRateReduction
from .optimizers import optimizer_at, stepped_parameters
from .update_skip import UpdateSkip
from .validation import check_choice, check_fraction, check_positive, check_positive_int

ACTIONS = ("none", "warn", "skip", "reduce_lr", "stop")
#: steps shown on either side of the first alarm in the fit-end figure
FIGURE_MARGIN = 150
#: actions that change training: decided identically on every rank, at every step
DECIDING = ("skip", "reduce_lr", "stop")


class InstabilityWarning(DynamicsCallback):
    """An early warning of loss spikes and divergence, with an optional action (module docstring).

    All arguments are keyword-only.

    Args:
        every_n_steps: put ``dyn/instability_risk_max`` and ``dyn/instability_episodes`` in the callback
            metrics every this many steps (the risk itself is logged every step).
        action: ``"none"`` (default: log only), ``"warn"``, ``"skip"``, ``"reduce_lr"`` or ``"stop"``.
        levels: the alarm level of each score, by name (``update_sharpness_ratio``, ``update_rms_ratio``,
            ``grad_norm_zscore``; missing names keep their calibrated defaults, ``inf`` turns one off).
        window: steps in the running median and mean/std of the update RMS and the gradient norm.
        warmup: steps those running statistics need before their scores count.
        merge: alarms at most this many steps apart form one episode (one event, warning, reduction).
        lr_factor: learning-rate multiplier of ``action="reduce_lr"``, in ``(0, 1)``.
        max_consecutive_skips: with ``action="skip"``, stop training after this many skips in a row.
        optimizer: index of the optimizer whose steps are watched.
        at_fit_end: also log the summary at the last step.
        seed: seed of the coordinate sample of models above a million parameters.
    """

    progress_bar_tag = None
    cost_unit = None
    layout_category = "instability warning (InstabilityWarning)"

    def __init__(
        self,
        *,
        every_n_steps: int = 50,
        action: Literal["none", "warn", "skip", "reduce_lr", "stop"] = "none",
        levels: Optional[dict[str, float]] = None,
        window: int = 128,
        warmup: int = 20,
        merge: int = 20,
        lr_factor: float = 0.5,
        max_consecutive_skips: int = 10,
        optimizer: int = 0,
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        check_choice("action", action, ACTIONS)
        if levels is not None:
            if not isinstance(levels, dict) or set(levels) - set(SCORES):
                raise ConfigurationError(f"`levels` must map score names ({', '.join(SCORES)}) to levels, got {levels!r}")
            for name, level in levels.items():
                check_positive(f"levels[{name!r}]", level)
        check_positive_int("window", window, minimum=2)
        check_positive_int("warmup", warmup)
        if warmup > window:
            raise ConfigurationError(f"`warmup` ({warmup}) must be at most `window` ({window})")
        check_positive_int("merge", merge)
        check_fraction("lr_factor", lr_factor)
        check_positive_int("max_consecutive_skips", max_consecutive_skips)
        check_positive_int("optimizer", optimizer, minimum=0)
        self.action, self.lr_factor, self.max_consecutive_skips = action, lr_factor, max_consecutive_skips
        self.optimizer_index = optimizer
        #: scores, risk, episodes and the running windows (checkpointed)
        self.detector = InstabilityDetector(levels, window=window, warmup=warmup, merge=merge)
        #: the raw per-step signals (the secant's running averages are checkpointed)
        self.signals = WarningSignals(UpdateStability(UpdateCurvature(seed=seed)))
        self.lr_reduction = LearningRateReduction()
        self.update_skip = UpdateSkip()
        #: the last step's verdict, and the raw signals it was scored from
        self.last_risk: Optional[Risk] = None
        self.last_signals: dict[str, float] = {}
        self.skips = 0
        self.consecutive_skips = 0
        self._risk_max = 0.0
        self._last_reduction: Optional[int] = None
        self._new_step = True
        self._loss: Optional[torch.Tensor] = None
        #: (step, loss on the device, risk) of the last FIGURE_MARGIN steps; then, from the first alarm, the figure's
        self._recent: deque = deque(maxlen=FIGURE_MARGIN)
        self._around: Optional[list] = None
        self._measured: Any = None
        self._params: list = []

    # -- setup ----------------------------------------------------------------------------------
    def prepare(self, trainer: Any, pl_module: Any) -> None:
        optimizer = optimizer_at(trainer, self.optimizer_index, "InstabilityWarning", required=True)
        try:
            check_supported(optimizer)
        except UnsupportedOptimizer as err:
            raise ConfigurationError(f"InstabilityWarning: {err}") from err
        self._measured = optimizer
        self._params = stepped_parameters(optimizer)
        if any(is_sharded(p) for p in self._params):
            raise ConfigurationError("InstabilityWarning: sharded parameters (FSDP2) are not supported: each rank "
                                     "holds a shard of the update, and the signals are of the whole of it")
        if self.action == "reduce_lr":
            self.lr_reduction.attach(optimizer)
        if self.action in ("skip", "stop"):
            self.update_skip.prepare(pl_module)

    def layout(self) -> dict[str, list[str]]:
        charts = {"instability risk: the largest score over its level (≥ 1: alarm)": ["dyn/instability_risk"],
                  "update sharpness / the optimizer's threshold (1: unstable along the update)":
                      ["dyn/warning/update_sharpness_ratio"],
                  "Adam's update RMS / its running median": ["dyn/warning/update_rms_ratio"],
                  "gradient-norm z-score": ["dyn/warning/grad_norm_zscore"],
                  "alarm episodes so far": ["dyn/instability_episodes"]}
        if not isinstance(self._measured, (torch.optim.Adam, torch.optim.AdamW)):  # no update RMS to show
            del charts["Adam's update RMS / its running median"]
        if self.action == "skip":
            charts["skipped steps"] = ["dyn/instability_skips"]
        if self.action == "reduce_lr":
            charts["learning-rate factor of action='reduce_lr' (× the scheduler's rate)"] = ["dyn/lr_factor"]
        return charts

    # -- every optimizer step -------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._new_step:  # the first micro-batch of an optimizer step
            self._new_step = False
            self.update_skip.snapshot()

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        loss = loss.detach()  # scaled by Lightning for accumulation: the micro-batches sum to the step's loss
        self._loss = loss if self._loss is None else self._loss + loss

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self._new_step = True
        measured = self._measured
        if measured is None or (optimizer is not measured and getattr(optimizer, "optimizer", None) is not measured):
            return
        with self.charged():
            step = trainer.global_step
            signals = self.last_signals = self.signals.observe(measured, self._params, step,
                                                               lr_scale=self.lr_reduction.factor)
            risk = self.last_risk = self.detector.update(step, signals)
            if math.isfinite(risk.value):
                self._risk_max = max(self._risk_max, risk.value)
            if risk.new_episode:
                self._record(risk)
            alarm = self.agree(trainer, risk.alarm) if self.action in DECIDING else risk.alarm
            if alarm:
                self._act(trainer, step, risk)
            else:
                self.consecutive_skips = 0
            self._log_step(trainer, step, risk)
            self._keep_for_figure(step, risk)

    def _keep_for_figure(self, step: int, risk: Risk) -> None:
        point, self._loss = (step, self._loss, risk.value), None
        if self._around is None:
            self._recent.append(point)
            if risk.new_episode:
                self._around = list(self._recent)
        elif len(self._around) < 2 * FIGURE_MARGIN:
            self._around.append(point)

    def _record(self, risk: Risk) -> None:
        self.events.append({"step": risk.step, "event": "instability_warning", "risk": risk.value,
                            "scores": dict(risk.scores), "raised_by": list(risk.raised_by)})
        if self.action in ("warn", "skip"):  # reduce_lr and stop say what they did when they do it
            what = "; updates skipped while the alarm lasts" if self.action == "skip" else ""
            rank_zero_warn(f"InstabilityWarning: {describe(risk)}{what}")

    def _act(self, trainer: Any, step: int, risk: Risk) -> None:
        if self.action == "reduce_lr":
            if self._last_reduction is None or step - self._last_reduction >= self.detector.merge:
                self.lr_reduction.reduce(self.lr_factor)
                self._last_reduction = step
                self.events.append({"step": step, "event": "reduce_lr", "lr_factor": self.lr_reduction.factor})
                rank_zero_warn(f"InstabilityWarning: {describe(risk)}; learning rate multiplied by {self.lr_factor} "
                               f"from this step (now {self.lr_reduction.factor:.4g}× the scheduler's)")
            return
        if self.action not in ("skip", "stop"):
            return
        self.update_skip.skip(self._params)
        self.skips += 1
        self.consecutive_skips += 1
        self.events.append({"step": step, "event": "skipped", "raised_by": list(risk.raised_by)})
        if self.action == "stop" or self.consecutive_skips >= self.max_consecutive_skips:
            reason = ("action='stop'" if self.action == "stop" else
                      f"{self.consecutive_skips} consecutive steps skipped (max_consecutive_skips="
                      f"{self.max_consecutive_skips})")
            trainer.should_stop = True
            self.events.append({"step": step, "event": "stopped", "reason": reason})
            rank_zero_warn(f"InstabilityWarning: stopping training at step {step} ({reason}): {describe(risk)}")

    def _log_step(self, trainer: Any, step: int, risk: Risk) -> None:
        scalars = {f"dyn/warning/{name}": value for name, value in risk.scores.items() if math.isfinite(value)}
        if risk.scores and math.isfinite(risk.value):  # none yet: nothing to tell; non-finite: an event, not a number
            scalars["dyn/instability_risk"] = risk.value
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    # -- the scheduled summary ------------------------------------------------------------------
    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        scalars = {"dyn/instability_risk_max": self._risk_max, "dyn/instability_episodes": float(self.detector.episodes)}
        self._risk_max = 0.0
        if self.action == "skip":
            scalars["dyn/instability_skips"] = float(self.skips)
        if self.action == "reduce_lr":
            scalars["dyn/lr_factor"] = self.lr_reduction.factor
        return Measurement(scalars)

    def may_write(self, tag: str) -> bool:
        return tag.startswith(("dyn/instability_", "dyn/warning/")) or tag == "dyn/lr_factor"

    def fit_end(self, trainer: Any, pl_module: Any) -> None:
        """The figure around the run's first alarm (module docstring)."""
        writer = self.tensorboard(trainer)
        if writer is None or not self._around:
            return
        known = [(s, l) for s, l, _ in self._around if l is not None]
        values = torch.stack([l.float().reshape(()) for _, l in known]).cpu().tolist() if known else []
        loss = [(s, v) for (s, _), v in zip(known, values)]
        risk = [(s, r) for s, _, r in self._around if math.isfinite(r)]
        episodes = alarm_episodes(risk, self.detector.merge)
        spikes = [loss[i][0] for i in loss_spikes([v for _, v in loss])] if loss else []
        first = next(s for s, _, r in self._around if r >= 1.0)
        add_figure(writer, "dyn/instability_figure",
                   warning_figure(loss, risk, episodes, spikes, title=f"training loss around the first alarm (step {first})"),
                   trainer.global_step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_end(trainer, pl_module)
        self.lr_reduction.detach()

    # -- state ----------------------------------------------------------------------------------
    @functools.cached_property  # Lightning reads it at every hook call; the arguments are fixed
    def state_key(self) -> str:
        return self._generate_state_key(action=self.action, optimizer=self.optimizer_index)

    def extra_state(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict(), "signals": self.signals.state_dict(),
                "lr_reduction": self.lr_reduction.state_dict(), "skips": self.skips,
                "consecutive_skips": self.consecutive_skips, "risk_max": self._risk_max,
                "last_reduction": self._last_reduction}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state["detector"])
        self.signals.load_state_dict(state["signals"])
        self.lr_reduction.load_state_dict(state["lr_reduction"])
        self.skips, self.consecutive_skips = state["skips"], state["consecutive_skips"]
        self._risk_max, self._last_reduction = state["risk_max"], state["last_reduction"]


def describe(risk: Risk) -> str:
    """One line: the step, the risk and the signals that raised it."""
    if not math.isfinite(risk.value):
        return f"step {risk.step}: non-finite gradient"
    parts = ", ".join(f"{name} {risk.scores[name]:.3g}" for name in risk.raised_by)
    return f"step {risk.step}: instability risk {risk.value:.3g} ({parts})"
