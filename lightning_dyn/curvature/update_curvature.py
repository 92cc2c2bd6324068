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

import functools
from typing import Any, Optional, Sequence

import torch

#: entries in one sampled block (256 bytes of float32: whole cache lines)
BLOCK = 64
#: a parameter is sampled by blocks when it gives at least this many; by single entries otherwise
MIN_BLOCKS = 8


class UpdateCurvature:
    """The secant curvature along each update (module docstring), from consecutive gradients.

    Call :meth:`observe` once per optimizer step, *before* the step, with the parameters and their
    gradients (and, for a preconditioned method, the metric ``P/η`` of the step about to be taken).
    It returns the curvature along the previous update, or ``None`` at the first step (and after a
    step it was not shown).

    Args:
        smoothing: weight of the newest value in the exponential average ``smoothed``.
        max_coordinates: above this many parameter entries, the secant's sums run over a fixed
            random sample of about this many coordinates — blocks of ``BLOCK`` consecutive entries,
            the same share of every parameter: a ratio estimator of the secant; ``None``: always
            all of them.
        seed: seed of that sample.
    """

    def __init__(self, *, smoothing: float = 0.1, max_coordinates: Optional[int] = 1_000_000, seed: int = 0) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        if max_coordinates is not None and max_coordinates < 1:
            raise ValueError(f"max_coordinates must be positive or None, got {max_coordinates!r}")
        self.smoothing, self.max_coordinates, self.seed = smoothing, max_coordinates, seed
        self._sample: Optional[list[tuple[torch.Tensor, int]]] = None
        self.smoothed: Optional[float] = None
        self.last: Optional[float] = None
        self.count = 0
        self._params: Optional[torch.Tensor] = None
        self._grads: Optional[torch.Tensor] = None
        self._metric: Optional[torch.Tensor] = None
        self._sample_shapes: list = []
        self._metric_source: Optional[Sequence[torch.Tensor]] = None
        self._metric_taken: Optional[torch.Tensor] = None
        #: how many coordinates the sums run over (all of them below ``max_coordinates``)
        self.sampled_coordinates = 0
        self._total = 0
        #: ``‖g‖`` of the gradients last observed (from the sample, scaled to all coordinates, above
        #: ``max_coordinates``), read back in the same transfer as the secant
        self.gradient_norm: Optional[float] = None

    def observe(self, params: Sequence[torch.Tensor], grads: Sequence[Optional[torch.Tensor]],
                metric: Optional[Sequence[torch.Tensor]] = None) -> Optional[float]:
        """The secant along the update since the last call (``None`` if there is none), then keep
        ``params``, ``grads`` (``None`` entries count as zero) and ``metric`` for the next one.

        Kept as flat vectors (in float32 at least; over the sample above ``max_coordinates``): per
        call one gather of the parameters and one of the gradients, two differences and two dot
        products — a handful of passes over memory and of kernel launches, however many tensors the
        model has. A ``metric`` passed again as the same list object is taken as unchanged (it is
        flattened, and sampled, once); :meth:`weigh_next` sets one already flat instead."""
        params = [p.detach() for p in params]
        sample = self._coordinates(params)
        dtype = functools.reduce(torch.promote_types, [p.dtype for p in params], torch.float32)
        flat_params = _flatten(params, sample, dtype)
        flat_grads = _flatten([torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)],
                              sample, dtype)
        if metric is not None and (metric is not self._metric_source or self._metric_taken is None
                                   or self._metric_taken.shape != flat_params.shape):
            self._metric_source, self._metric_taken = metric, _flatten(metric, sample, dtype)
        value = None
        squared_norm = torch.dot(flat_grads, flat_grads)
        if self._params is not None and self._params.device != flat_params.device:  # restored from a checkpoint
            self._params, self._grads = self._params.to(flat_params.device), self._grads.to(flat_params.device)
            self._metric = None if self._metric is None else self._metric.to(flat_params.device)
        if self._params is not None and self._params.shape == flat_params.shape and self._params.dtype == dtype:
            step = self._params.sub_(flat_params)  # θ_t − θ_{t+1} = −d
            change = self._grads.sub_(flat_grads)  # g_t − g_{t+1} = −Δg
            weighted = step if self._metric is None else step * self._metric
            curvature, length, squared_norm = torch.stack(
                [torch.dot(step, change), torch.dot(weighted, step), squared_norm]).tolist()
            value = curvature / length if length > 0 else None
        else:
            squared_norm = squared_norm.item()
        self.gradient_norm = (squared_norm * self._total / max(1, self.sampled_coordinates)) ** 0.5
        self._params, self._grads = flat_params, flat_grads
        if value is not None and value == value:
            self.last = value
            self.smoothed = value if self.smoothed is None else (
                self.smoothed + self.smoothing * (value - self.smoothed))
            self.count += 1
        else:
            value = None
        # the metric of the step about to be taken weighs the update it produces, seen next call
        self._metric = None if metric is None else self._metric_taken
        return value

    def _coordinates(self, params: list[torch.Tensor]) -> Optional[list[tuple[torch.Tensor, int]]]:
        """The fixed sample of coordinates, or ``None`` for all of them: for each parameter, rows of
        its flat entries viewed as ``(n // width, width)`` — whole blocks of ``BLOCK`` consecutive
        entries where the tensor is large enough to give several, single entries otherwise — drawn
        uniformly without replacement in the same proportion from every parameter (stratified).
        Blocks read only the memory sampled; scattered entries would touch every cache line."""
        total = self._total = sum(p.numel() for p in params)
        if self.max_coordinates is None or total <= self.max_coordinates:
            self.sampled_coordinates = total
            return None
        shapes = [p.shape for p in params]
        if self._sample is None or self._sample_shapes != shapes:
            generator = torch.Generator().manual_seed(self.seed)
            fraction = self.max_coordinates / total
            self._sample = []
            for p in params:
                width = BLOCK if fraction * (p.numel() // BLOCK) >= MIN_BLOCKS else 1
                rows = p.numel() // width
                chosen = torch.randperm(rows, generator=generator)[:max(1, round(fraction * rows))]
                self._sample.append((torch.sort(chosen).values.to(p.device), width))
            self._sample_shapes = shapes
            self._metric_source = self._metric_taken = None
            self.sampled_coordinates = sum(len(rows) * width for rows, width in self._sample)
        return self._sample

    @property
    def gradient(self) -> Optional[torch.Tensor]:
        """The gradients last observed as a flat vector (over the sample), until the next call."""
        return self._grads

    def weigh_next(self, flat_metric: torch.Tensor) -> None:
        """The metric of the step about to be taken, flat over the secant's coordinates (:meth:`flatten`),
        in place of one passed to the :meth:`observe` call just made (which this follows)."""
        self._metric = flat_metric.to(self._params.dtype) if self._params is not None else None

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Tensors shaped like the parameters, flattened over the secant's coordinates (their sample
        above ``max_coordinates``), in float32 at least: other per-parameter state (an optimizer's
        moments) read on the same coordinates."""
        tensors = [t.detach() for t in tensors]
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors], torch.float32)
        return _flatten(tensors, self._coordinates(tensors), dtype)

    def forget(self) -> None:
        """Drop the kept step (the next call returns ``None``): after a step that was not taken."""
        self._params = self._grads = self._metric = None
        self._metric_source = self._metric_taken = None

    def state_dict(self, *, kept: bool = False) -> dict[str, Any]:
        """The averages; with ``kept``, also the flat parameters, gradients and metric kept from the
        last step (on the host: the size of the sample), so a resumed run computes the secant of
        its first step as the uninterrupted run does. Without them that step starts a new secant."""
        state: dict[str, Any] = {"smoothed": self.smoothed, "last": self.last, "count": self.count}
        if kept:
            state["kept"] = {name: None if t is None else t.detach().cpu().clone()
                             for name, t in (("params", self._params), ("grads", self._grads), ("metric", self._metric))}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothed, self.last, self.count = state["smoothed"], state["last"], state["count"]
        self.forget()
        kept = state.get("kept")
        if kept is not None:  # moved to the parameters' device at the next call
            self._params, self._grads, self._metric = kept["params"], kept["grads"], kept["metric"]


def _flatten(tensors: Sequence[torch.Tensor], sample: Optional[list], dtype: torch.dtype) -> torch.Tensor:
    """The tensors' entries (their sampled rows, ``UpdateCurvature._coordinates``) in one flat vector."""
    if sample is None:
        pieces = [t.reshape(-1) for t in tensors]
    else:
        pieces = []
        for t, (rows, width) in zip(tensors, sample):
            flat = t.reshape(-1)
            pieces.append(flat[:flat.numel() - flat.numel() % width].view(-1, width).index_select(0, rows).reshape(-1))
    device = pieces[0].device
    return torch.cat([piece if piece.dtype == dtype and piece.device == device else piece.to(device=device, dtype=dtype)
                      for piece in pieces]).detach()
