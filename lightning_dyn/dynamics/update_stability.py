"""The curvature along each update against the optimizer's stability threshold at that step.

:class:`~lightning_dyn.curvature.UpdateCurvature` gives the secant ``dᵀ(g_{t+1} − g_t)/dᵀMd`` of
consecutive training gradients along the update ``d`` just taken, in a metric ``M``. This object
chooses ``M`` and the threshold from the optimizer, so the ratio

    ρ_t = secant / threshold(η_t)

is in the units of :func:`~lightning_dyn.dynamics.stability_threshold`: ``ρ ≥ 1`` means the step
met curvature at or beyond what the optimizer can take stably (the loss goes up along ``d`` on a
quadratic). ``M`` is that of the measured operator ``D H D`` of
:func:`~lightning_dyn.dynamics.stability_scaling`: ``M = I`` for SGD with one learning rate
(threshold ``2/η``, its momentum variants); ``M = 1/D²`` in the units of the largest rate for
Adam/AdamW/RMSprop and per-group rates — with one rate ``M = P``, Adam's step being
``d = −η P⁻¹ m``, so the secant is the curvature of ``P⁻¹H`` along ``d``, in the units of
``λ_max(P⁻¹H)``, against ``(2+2β₁)/((1−β₁)η)`` (Cohen et al., arXiv:2207.14484). ``lr_scale`` is a multiplier the optimizer steps with beyond its groups' rates
(a lasting learning-rate reduction). The preconditioner moves slowly (β₂ = 0.999): ``M`` is
read at every step on the secant's coordinates for Adam/AdamW with one learning rate (the common
case: one gather of ``v``); otherwise (per-group rates, RMSprop) it is built for all coordinates by
:func:`~lightning_dyn.dynamics.stability_scaling` at steps 1, 2, 4, … (Adam's bias correction moves
it fast at first), then every ``METRIC_EVERY`` steps. The threshold is read at every step (a
scheduler moves it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ..curvature.update_curvature import UpdateCurvature
from .optimizer_thresholds import UnsupportedOptimizer, stability_scaling, stability_threshold

#: the preconditioner of the metric is refreshed this often (steps)
METRIC_EVERY = 50


class UpdateStability:
    """The update sharpness and its ratio to the optimizer's threshold (module docstring).

    Args:
        curvature: the secant estimator (default: a new :class:`~lightning_dyn.curvature.UpdateCurvature`).
    """

    def __init__(self, curvature: Optional[UpdateCurvature] = None) -> None:
        self.curvature = UpdateCurvature() if curvature is None else curvature
        self._metric: Optional[list[torch.Tensor]] = None
        self._threshold_units: Optional[float] = None
        self._metric_step: Optional[int] = None

    def observe(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter], step: int, *,
                lr_scale: float = 1.0, moments: Optional["AdamMoments"] = None) -> Optional[tuple[float, float]]:
        """Call once per optimizer step, before it, with the parameters it steps (their ``.grad``
        set). Returns ``(secant, ratio)`` of the update taken since the last call — ``ratio`` NaN
        when the threshold is not defined (a learning rate of 0) — or ``None`` when there is none
        (the first call, after a step not taken, before an adaptive method's first step).

        Adam/AdamW whose groups share one learning rate and their hyperparameters: the metric is
        the exact ``P`` of the step about to be taken (:meth:`~lightning_dyn.dynamics.update_stability.AdamMoments.preconditioner`, with this
        step's gradient), on the secant's coordinates, at every step (``moments``:
        :meth:`adam_moments`, when the caller already has them). Otherwise it is refreshed on the
        schedule of the module docstring."""
        grads = [p.grad for p in params]
        if moments is None:
            moments = self.adam_moments(optimizer, params)
        if moments is not None:
            value = self.curvature.observe(params, grads)
            self.curvature.weigh_next(moments.preconditioner(self.curvature.gradient))
            threshold = _threshold(optimizer, lr_scale)
        else:
            ready = True
            if self._metric_step is None or step - self._metric_step >= min(METRIC_EVERY, max(1, self._metric_step)):
                ready = self._refresh(optimizer, params, lr_scale)
                self._metric_step = step if ready else None
            value = self.curvature.observe(params, grads, self._metric)
            if not ready:  # an adaptive method before its first step: this update's metric is unknown
                self.curvature.forget()
            threshold = self._threshold_now(optimizer, lr_scale) if value is not None else math.nan
        if value is None:
            return None
        return value, (value / threshold if 0 < threshold < math.inf else math.nan)

    def adam_moments(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter], *,
                     first_moment: bool = False) -> Optional["AdamMoments"]:
        """Adam's second moment (and, with ``first_moment``, its first) on the secant's coordinates —
        zeros at ``t = 0`` before the first step — or ``None``: not Adam/AdamW, groups that differ in
        rate or hyperparameters, AMSGrad, or some parameters with a state and some without. The
        metric needs ``v`` alone; the update RMS needs ``m`` too."""
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            return None
        groups = optimizer.param_groups
        keys = [(float(g["lr"]), tuple(g["betas"]), float(g["eps"]), bool(g.get("amsgrad", False))) for g in groups]
        if len(set(keys)) != 1 or keys[0][3]:
            return None
        states = [optimizer.state.get(p, {}) for p in params]
        (beta1, beta2), eps = keys[0][1], keys[0][2]
        flatten = self.curvature.flatten
        if params and not any(states):  # before the first step: the moments start at 0
            zeros = torch.zeros_like(flatten(params))
            return AdamMoments(beta1, beta2, eps, 0.0, zeros, zeros.clone() if first_moment else None)
        if not states or any("exp_avg_sq" not in state for state in states):
            return None
        return AdamMoments(beta1, beta2, eps, float(states[0]["step"]), flatten([st["exp_avg_sq"] for st in states]),
                           flatten([st["exp_avg"] for st in states]) if first_moment else None)

    def _refresh(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter], lr_scale: float) -> bool:
        """The metric ``1/D²`` of the measured operator ``D H D``; with one learning rate
        ``1/D² = P`` does not depend on it. False before an adaptive method's first step (no
        preconditioner yet)."""
        try:
            scaling = stability_scaling(optimizer, params, lr_scale=lr_scale)
        except RuntimeError:  # an adaptive optimizer before its first step: no preconditioner yet
            self._metric, self._threshold_units = None, None
            return False
        if scaling.scale is None:  # SGD with one rate: H itself, the threshold read at each step
            self._metric, self._threshold_units = None, None
            return True
        eta = largest_rate(optimizer, lr_scale)
        scale2 = scaling.scale.to(torch.promote_types(params[0].dtype, torch.float32)).square()
        # coordinates with D = 0 (never updated, or a rate of 0) do not move: they weigh nothing
        metric = torch.where(scale2 > 0, eta / scale2.clamp_min(torch.finfo(scale2.dtype).tiny), 0.0)
        self._metric = [m.view_as(p).to(p.dtype) for m, p in
                        zip(torch.split(metric, [p.numel() for p in params]), params)]
        self._threshold_units = scaling.threshold
        return True

    def _threshold_now(self, optimizer: torch.optim.Optimizer, lr_scale: float) -> float:
        """The threshold in the units of the step just taken, at this step's learning rate."""
        if self._threshold_units is None:
            return _threshold(optimizer, lr_scale)
        return self._threshold_units / largest_rate(optimizer, lr_scale)

    def state_dict(self, *, kept: bool = False) -> dict[str, Any]:
        """The secant's state (``kept``: :meth:`~lightning_dyn.curvature.UpdateCurvature.state_dict`). The metric is not
        checkpointed: a resumed run refreshes it at its first step."""
        return self.curvature.state_dict(kept=kept)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curvature.load_state_dict(state)
        self._metric_step = None


@dataclass
class AdamMoments:
    """Adam's state after ``t`` steps on the secant's coordinates: ``v`` flat, and ``m`` when asked
    for (copies, advanced in place to the step about to be taken)."""

    beta1: float
    beta2: float
    eps: float
    t: float
    v: torch.Tensor
    m: Optional[torch.Tensor] = None

    def preconditioner(self, gradient: torch.Tensor) -> torch.Tensor:
        """``P = (1−β₁^{t+1})(√(v_{t+1}/(1−β₂^{t+1})) + ε)`` of the step about to be taken with
        ``gradient``, ``v_{t+1} = β₂v + (1−β₂)g²``: the step is ``d = −η P⁻¹ m_{t+1}`` (decoupled
        weight decay aside). Computed once per gradient."""
        cached = getattr(self, "_P", None)
        if cached is not None and cached[0] is gradient:
            return cached[1]
        t = self.t + 1.0
        # in place on the flat copy of v, which nothing else holds
        P = self.v.mul_(self.beta2).addcmul_(gradient, gradient, value=1 - self.beta2)
        P.div_(1 - self.beta2**t).sqrt_().add_(self.eps).mul_(1 - self.beta1**t)
        self._P = (gradient, P)
        return P

    def normalised_update(self, gradient: torch.Tensor) -> torch.Tensor:
        """``m̂/(√v̂ + ε) = P⁻¹ m_{t+1}``, ``m_{t+1} = β₁m + (1−β₁)g``: the update about to be taken,
        over ``η`` (needs ``m``; advances it in place: once per gradient)."""
        assert self.m is not None, "the update needs the first moment (adam_moments(first_moment=True))"
        P = self.preconditioner(gradient)
        return self.m.mul_(self.beta1).add_(gradient, alpha=1 - self.beta1).div_(P)

    def update_rms(self, gradient: torch.Tensor) -> float:
        """``RMS(m̂/(√v̂ + ε))``: the root mean square of the normalised update about to be taken."""
        u = self.normalised_update(gradient)
        return float(torch.linalg.vector_norm(u)) / max(1, u.numel()) ** 0.5


def _threshold(optimizer: torch.optim.Optimizer, lr_scale: float) -> float:
    try:
        return stability_threshold(optimizer, lr_scale=lr_scale)
    except (UnsupportedOptimizer, ValueError):
        return math.nan


def largest_rate(optimizer: torch.optim.Optimizer, lr_scale: float = 1.0) -> float:
    """The largest positive learning rate the optimizer steps with (1 when all are 0)."""
    return max((float(g["lr"]) * lr_scale for g in optimizer.param_groups if float(g["lr"]) * lr_scale > 0),
               default=1.0)
