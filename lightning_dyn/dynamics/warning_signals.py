"""Cheap per-step signals of a coming instability, from what an optimizer step already has.

Read once per optimizer step, after backward and before the update, from the gradients and the
optimizer's state — no extra forward or backward pass:

* ``update_sharpness_ratio`` — the curvature along the update just taken against the optimizer's
  stability threshold at this step (:class:`~lightning_dyn.dynamics.update_stability.UpdateStability`):
  ``ρ = dᵀ(g_{t+1} − g_t) / dᵀMd`` over ``threshold(η_t)``. On a quadratic the loss rises along
  ``d`` once ``ρ > 1`` and grows by ``|1 − ηλ|`` a step (Cohen et al. 2021; arXiv:2207.14484 for
  Adam's preconditioned form).
* ``update_rms`` — for Adam/AdamW, the root mean square of the normalised update about to be taken,
  ``u = m̂_t / (√v̂_t + ε)`` with ``m_t = β₁m_{t−1} + (1−β₁)g_t``, ``v_t = β₂v_{t−1} + (1−β₂)g_t²`` and
  the bias corrections (decoupled weight decay left out). In steady state ``RMS(u)`` is stable; when
  the gradient grows faster than the second-moment estimate follows (β₂ = 0.999 averages over
  ~1000 steps) ``v`` underestimates ``g²`` and the update grows — the precursor of Adam's loss
  spikes in Wortsman et al., arXiv:2309.14322 (spikes 1–8 steps after). ``None`` for other optimizers.
* ``grad_norm`` — ``‖g_t‖`` of the step's gradient (pre-clip).

All three come from the secant's flat buffers (above a million coordinates, a fixed sample of
them — :class:`~lightning_dyn.curvature.UpdateCurvature`): one transfer to the host for the secant
and the norm, one more for the update RMS (Adam's moments are gathered once, for the secant's
metric and the update RMS).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .update_stability import UpdateStability

class WarningSignals:
    """The raw per-step signals (module docstring).

    Args:
        stability: the update-sharpness estimator (default: a new :class:`UpdateStability`).
    """

    def __init__(self, stability: Optional[UpdateStability] = None) -> None:
        self.stability = UpdateStability() if stability is None else stability

    def observe(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter], step: int, *,
                lr_scale: float = 1.0) -> dict[str, float]:
        """The signals of the step about to be taken (call before it, gradients set). A signal not
        defined at this step (the first secant, an optimizer without a second moment) is absent."""
        signals: dict[str, float] = {}
        moments = self.stability.adam_moments(optimizer, params, first_moment=True)
        observed = self.stability.observe(optimizer, params, step, lr_scale=lr_scale, moments=moments)
        if observed is not None and observed[1] == observed[1]:
            signals["update_sharpness_ratio"] = observed[1]
        curvature = self.stability.curvature
        if curvature.gradient_norm is not None:
            signals["grad_norm"] = curvature.gradient_norm
        if moments is not None and curvature.gradient is not None:
            signals["update_rms"] = moments.update_rms(curvature.gradient)
        return signals

    def state_dict(self) -> dict[str, Any]:
        """The secant's state with the tensors kept from the last step (so a resumed run scores its
        first step as the uninterrupted run does)."""
        return self.stability.state_dict(kept=True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stability.load_state_dict(state)

