"""A learning-rate reduction that lasts: a factor applied around each optimizer step.

A callback that reduces the learning rate by writing ``group["lr"] *= f`` loses the reduction at
the scheduler's next step: ``LambdaLR``, ``OneCycleLR``, ``CyclicLR``, cosine-with-warmup and the
``transformers`` schedules recompute the rate from their own state and overwrite it (the
recursive schedulers keep it, but compound it with their own arithmetic). So the scheduler's rate
is never touched: a step pre-hook (``Optimizer.register_step_pre_hook``) multiplies every group's
rate by ``factor`` just before the update, and a post-hook puts the scheduler's value back right
after. The optimizer steps with ``factor × scheduled rate`` under every scheduler — chainable,
closed-form, ``ReduceLROnPlateau``, ``SequentialLR`` — while the scheduler, ``LearningRateMonitor``
and the optimizer's checkpointed state hold the schedule itself. ``factor`` is part of the owning
callback's state (checkpointed) and is logged by it as ``dyn/lr_factor``.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Optional

import torch


class _StepHooks:
    """The one pair of step hooks of an optimizer, applying the product of every reduction attached
    to it. Two reductions with a pair of hooks each would restore in the wrong order (post-hooks run
    in registration order): the second would put back the first's reduced rate, and the schedule
    would drift by the first's factor at every step."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.reductions: list["LearningRateReduction"] = []
        self._scheduled: Optional[list[Any]] = None
        self.handles = [optimizer.register_step_pre_hook(self._before_step),
                        optimizer.register_step_post_hook(self._after_step)]

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        factor = math.prod(r.factor for r in self.reductions)
        if factor != 1.0:
            self._scheduled = [group["lr"] for group in optimizer.param_groups]
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * factor

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._scheduled is not None:
            for group, lr in zip(optimizer.param_groups, self._scheduled):
                group["lr"] = lr  # the scheduler's own value, bitwise
            self._scheduled = None


#: the hooks of each optimizer that has reductions attached
_HOOKS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, _StepHooks]" = weakref.WeakKeyDictionary()


class LearningRateReduction:
    """A persistent multiplier on one optimizer's learning rates.

    A reduction written into ``group["lr"]`` is overwritten at the scheduler's next step
    (``LambdaLR``, ``OneCycleLR``, the ``transformers`` schedules recompute the rate from their own
    state). This object leaves the scheduler's rate alone: a step pre-hook
    (``Optimizer.register_step_pre_hook``) multiplies every group's rate by :attr:`factor` just
    before the update, a post-hook puts the scheduler's value back right after. The optimizer steps
    with ``factor ×`` the scheduled rate under every scheduler; the scheduler, ``LearningRateMonitor``
    and the optimizer's checkpointed state hold the schedule itself. Several reductions on one
    optimizer (two callbacks with ``action="reduce_lr"``) share one pair of hooks and compose: the
    optimizer steps with the product of their factors. Its owner checkpoints :meth:`state_dict` and
    logs :attr:`factor` (``dyn/lr_factor``).
    """

    def __init__(self) -> None:
        #: the product of every reduction so far (1 when none)
        self.factor = 1.0
        self._optimizer: Optional[torch.optim.Optimizer] = None

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply the factor around every step of ``optimizer`` from now on (once per optimizer)."""
        if self._optimizer is optimizer:
            return
        self.detach()
        hooks = _HOOKS.get(optimizer)
        if hooks is None:
            hooks = _HOOKS[optimizer] = _StepHooks(optimizer)
        hooks.reductions.append(self)
        self._optimizer = optimizer

    def detach(self) -> None:
        optimizer, self._optimizer = self._optimizer, None
        hooks = None if optimizer is None else _HOOKS.get(optimizer)
        if hooks is None:
            return
        hooks.reductions = [r for r in hooks.reductions if r is not self]
        if not hooks.reductions:
            for handle in hooks.handles:
                handle.remove()
            del _HOOKS[optimizer]

    def reduce(self, by: float) -> None:
        """Multiply the learning rate the optimizer steps with by ``by`` from the next step on."""
        self.factor *= by

    def __getstate__(self) -> dict[str, Any]:  # ddp_spawn pickles callbacks: hooks stay behind
        return {"factor": self.factor, "_optimizer": None}

    def state_dict(self) -> dict[str, float]:
        return {"factor": self.factor}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.factor = float(state["factor"])
