"""The curvature along the update, every step, from the gradients training computes anyway.

An optimizer step moves the parameters by ``d = θ_{t+1} − θ_t``. The gradient at the next step
differs from this one by the Hessian averaged along the segment:

    ∇L(θ_{t+1}) − ∇L(θ_t) = H̄ d,     H̄ = ∫₀¹ ∇²L(θ_t + s d) ds,

so the *secant* ``dᵀ(g_{t+1} − g_t) / dᵀd = dᵀH̄d / dᵀd`` is the directional sharpness of the
update (a Rayleigh quotient of ``H̄``). It costs no product: two dot products of tensors training
already has, and a copy of the parameters and the gradient kept from the previous step. What it
bounds and how close it runs:

* ``dᵀH̄d / dᵀd ≤ λ_max(H̄)`` — the Rayleigh quotient never exceeds the top eigenvalue of the
  averaged Hessian (on a quadratic, ``H̄ = H``: it is a lower bound of the sharpness);
* gradient descent's update is ``d = −η g``; when the iterate oscillates along the top eigenvector
  (the edge of stability, Cohen et al. 2021) ``d`` aligns with it and the secant approaches
  ``λ_max`` itself — it is the curvature the step actually meets, the quantity whose crossing of
  ``2/η`` makes the loss go up (``L(θ+d) − L(θ) = gᵀd + ½ dᵀH̄d``: with ``d = −ηg`` the loss rises
  exactly when the secant along ``g`` exceeds ``2/η``, the "critical sharpness" of Kalra et al.,
  arXiv:2601.16979, measured by them with extra forward passes);
* for a preconditioned method (Adam: ``d = −η P⁻¹ m``) the metric is ``P``: ``dᵀH̄d / dᵀ(P/η)d``
  bounds ``λ_max(η P⁻¹ H)`` from below in the same way, the quantity compared with Adam's threshold.

With mini-batches, ``g_t`` and ``g_{t+1}`` come from different batches. The cross term
``dᵀg_{t+1}`` is unbiased, but ``dᵀg_t`` includes the batch's own noise (for SGD,
``−η‖g_B‖²`` where the full gradient would give ``−η g_Bᵀ∇L``), which adds
``(1 − g_Bᵀ∇L/‖g_B‖²)/η`` to the estimate: up to half the SGD threshold once the noise dominates
the gradient. The estimate is exact for full-batch training and a noisy upper-biased one for small
batches; an exponential average (``smoothed``) is kept beside the raw value.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch


class UpdateCurvature:
    """The secant curvature along each update (module docstring), from consecutive gradients.

    Call :meth:`observe` once per optimizer step, *before* the step, with the parameters and their
    gradients (and, for a preconditioned method, the metric ``P/η`` of the step about to be taken).
    It returns the curvature along the previous update, or ``None`` at the first step (and after a
    step it was not shown).

    Args:
        smoothing: weight of the newest value in the exponential average ``smoothed``.
        max_coordinates: above this many parameter entries, the secant's sums run over a fixed
            random sample of this many coordinates (module docstring); ``None``: always all of them.
        seed: seed of that sample.
    """

    def __init__(self, *, smoothing: float = 0.1, max_coordinates: Optional[int] = 1_000_000, seed: int = 0) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        if max_coordinates is not None and max_coordinates < 1:
            raise ValueError(f"max_coordinates must be positive or None, got {max_coordinates!r}")
        self.smoothing, self.max_coordinates, self.seed = smoothing, max_coordinates, seed
        self._sample: Optional[list[Optional[torch.Tensor]]] = None
        self.smoothed: Optional[float] = None
        self.last: Optional[float] = None
        self.count = 0
        self._params: Optional[list[torch.Tensor]] = None
        self._grads: Optional[list[torch.Tensor]] = None
        self._metric: Optional[list[torch.Tensor]] = None
        self._sample_shapes: list = []

    @torch.no_grad()
    def observe(self, params: Sequence[torch.Tensor], grads: Sequence[Optional[torch.Tensor]],
                metric: Optional[Sequence[torch.Tensor]] = None) -> Optional[float]:
        """The secant along the update since the last call (``None`` if there is none), then keep
        ``params``, ``grads`` (``None`` entries count as zero) and ``metric`` for the next one.

        Two buffers the size of the parameters, allocated once; per call two in-place differences,
        two dot products and two copies — about thirteen passes over the parameters' memory."""
        params = [p.detach() for p in params]
        grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
        sample = self._coordinates(params)
        if sample is not None:
            params, grads = _take(params, sample), _take(grads, sample)
            metric = None if metric is None else _take(metric, sample)
        value = None
        if self._params is not None and len(self._params) == len(params) and all(
                a.shape == p.shape and a.dtype == p.dtype for a, p in zip(self._params, params)):
            torch._foreach_sub_(self._params, params)  # θ_t − θ_{t+1} = −d
            torch._foreach_sub_(self._grads, grads)  # g_t − g_{t+1} = −Δg
            curvature = _dot(self._params, self._grads)
            weighted = self._params if self._metric is None else torch._foreach_mul(self._params, self._metric)
            length = _dot(weighted, self._params)
            value = curvature / length if length > 0 else None
            torch._foreach_copy_(self._params, params)
            torch._foreach_copy_(self._grads, grads)
        else:
            self._params = [p.clone() for p in params]
            self._grads = [g.clone() for g in grads]
        if value is not None and value == value:
            self.last = value
            self.smoothed = value if self.smoothed is None else (
                self.smoothed + self.smoothing * (value - self.smoothed))
            self.count += 1
        else:
            value = None
        # the metric of the step about to be taken weighs the update it produces, seen next call
        self._metric = None if metric is None else [m.detach() for m in metric]
        return value

    def _coordinates(self, params: list[torch.Tensor]) -> Optional[list[Optional[torch.Tensor]]]:
        """The fixed sample of coordinates (one index tensor per parameter), or ``None`` for all."""
        total = sum(p.numel() for p in params)
        if self.max_coordinates is None or total <= self.max_coordinates:
            return None
        shapes = [p.shape for p in params]
        if self._sample is None or self._sample_shapes != shapes:
            generator = torch.Generator().manual_seed(self.seed)
            fraction = self.max_coordinates / total
            self._sample = [
                torch.sort(torch.randperm(p.numel(), generator=generator)[:max(1, round(fraction * p.numel()))])
                .values.to(p.device) for p in params]
            self._sample_shapes = shapes
        return self._sample

    def forget(self) -> None:
        """Drop the kept step (the next call returns ``None``): after a step that was not taken."""
        self._params = self._grads = self._metric = None

    def state_dict(self) -> dict[str, Any]:
        """The averages (the kept tensors are not checkpointed: the first step after a resume
        starts a new secant)."""
        return {"smoothed": self.smoothed, "last": self.last, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothed, self.last, self.count = state["smoothed"], state["last"], state["count"]
        self.forget()


def _take(tensors: Sequence[torch.Tensor], sample: list) -> list[torch.Tensor]:
    """Each tensor's sampled entries, flat."""
    return [t.reshape(-1).index_select(0, i) for t, i in zip(tensors, sample)]


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """``Σ_i ⟨a_i, b_i⟩`` over lists of tensors (each dot in the tensors' dtype, summed in float64)."""
    return float(torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)).double() for x, y in zip(a, b)]).sum())
