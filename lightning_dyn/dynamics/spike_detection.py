"""Gradient norms per layer and the detection of exploding or non-finite gradients.

From the per-parameter gradient norms ``‖g_p‖`` of one optimizer step (one fused reduction on the
device, read back when the step is inspected):

- per-layer norms ``‖g_layer‖ = (Σ_{p ∈ layer} ‖g_p‖²)^{1/2}`` (a layer is the module that owns the
  parameters) and the total ``‖g‖``;
- events: a non-finite loss; non-finite gradients (``layer``: the one nearest the loss — last in
  forward order — whose gradient is non-finite, where backpropagation first produced it); a spike
  ``‖g‖ > max(threshold, factor × median)`` over the running median of the last ``window`` finite
  totals (tested once ``warmup`` of them are known; ``layer``: the layer with the largest norm).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np


@dataclass
class GradientStep:
    """One optimizer step as inspected: its norms and the running median before it."""

    step: int
    total: float
    layer_norms: np.ndarray
    loss: float
    median: float


class GradientDetector:
    """Turns per-parameter norms into layer norms and events (module docstring).

    Args:
        layer_of: index of the owning layer of each parameter (in the norms' order).
        layer_names: names of the layers.
        threshold: absolute bound on ``‖g‖`` (``None``: none).
        factor: relative bound, ``‖g‖ > factor × running median`` (``None``: none).
        window: finite totals in the running median.
        warmup: the relative test needs this many finite totals first.
        recent: the window itself, when its owner keeps it (e.g. in a checkpoint); else a new one.
    """

    def __init__(self, layer_of: Sequence[int], layer_names: Sequence[str], *, threshold: Optional[float] = None,
                 factor: Optional[float] = 10.0, window: int = 100, warmup: int = 10,
                 recent: Optional[deque] = None) -> None:
        self.layer_of = np.asarray(layer_of, dtype=np.int64)
        self.layer_names = list(layer_names)
        self.threshold, self.factor, self.warmup = threshold, factor, warmup
        self.recent: deque[float] = deque(maxlen=window) if recent is None else recent
        # columns grouped by layer, so one reduceat sums each layer without mixing an inf into others
        self._order = np.argsort(self.layer_of, kind="stable")
        grouped = self.layer_of[self._order]
        self._starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        self._layers = grouped[self._starts]

    def median(self) -> float:
        return float(statistics.median(self.recent)) if self.recent else math.nan

    def bound(self) -> float:
        """The current spike bound: ``max(threshold, factor × median)`` over the tests that are
        active (``inf`` when none is)."""
        bounds = [] if self.threshold is None else [self.threshold]
        if self.factor is not None and len(self.recent) >= self.warmup:
            bounds.append(self.factor * self.median())
        return max(bounds) if bounds else math.inf

    def inspect(self, steps: Sequence[int], param_norms: np.ndarray,
                losses: Sequence[Optional[float]]) -> tuple[list[GradientStep], list[dict[str, Any]]]:
        """Layer norms and events of consecutive steps (rows of ``param_norms``), in order; each
        step's finite total joins the window before the next step is tested. A loss of ``None``
        (unknown) is not tested."""
        norms = np.atleast_2d(np.asarray(param_norms, dtype=np.float64))
        with np.errstate(invalid="ignore", over="ignore"):
            squares = norms[:, self._order] ** 2
            layer_norms = np.zeros((len(norms), len(self.layer_names)))
            layer_norms[:, self._layers] = np.sqrt(np.add.reduceat(squares, self._starts, axis=1))
            totals = np.sqrt(squares.sum(axis=1))
        records, events = [], []
        for step, total, layers, loss in zip(steps, totals.tolist(), layer_norms, losses):
            records.append(GradientStep(step, total, layers, math.nan if loss is None else loss, self.median()))
            if loss is not None and not math.isfinite(loss):
                events.append({"step": step, "event": "nonfinite_loss", "value": loss})
            if not math.isfinite(total):
                bad = np.flatnonzero(~np.isfinite(layers))
                events.append({"step": step, "event": "nonfinite_gradient", "layer": self.layer_names[int(bad[-1])],
                               "value": total})
                continue
            bound = self.bound()
            if total > bound:
                events.append({"step": step, "event": "gradient_spike",
                               "layer": self.layer_names[int(np.argmax(layers))], "value": total, "bound": bound})
            self.recent.append(total)
        return records, events
