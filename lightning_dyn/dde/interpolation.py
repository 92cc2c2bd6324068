"""Dense output and histories of a delay equation: cubic Hermite interpolation.

Between mesh nodes ``t_a < t_b`` with values ``y_a, y_b`` and derivatives ``f_a, f_b``, with
``h = t_b − t_a`` and ``x = (s − t_a)/h``,

    y(s) ≈ (2x³ − 3x² + 1) y_a + (x³ − 2x² + x) h f_a + (3x² − 2x³) y_b + (x³ − x²) h f_b,

which is ``O(h⁴)`` accurate and exact on cubic pieces (Bellen & Zennaro 2003, §4.2).
"""

from __future__ import annotations

import bisect
from typing import Callable, Union

import torch

#: ``y`` for ``t < t0``: ``None`` (the constant ``y0``), a constant, a callable ``φ(t)``, or samples ``(times, values)``
History = Union[None, float, torch.Tensor, Callable[[torch.Tensor], torch.Tensor], tuple]


def hermite(s: torch.Tensor, ta: torch.Tensor, tb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor,
            fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Cubic Hermite interpolant on ``[ta, tb]`` through ``(ya, fa)`` and ``(yb, fb)`` at ``s``."""
    h = tb - ta
    x = (s - ta) / h
    x2, x3 = x * x, x * x * x
    return (2 * x3 - 3 * x2 + 1) * ya + (x3 - 2 * x2 + x) * h * fa + (3 * x2 - 2 * x3) * yb + (x3 - x2) * h * fb


class SampledHistory:
    """A history given as samples ``(times, values)``: Hermite interpolation with finite-difference slopes
    (one-sided at the ends, centred inside)."""

    def __init__(self, times: torch.Tensor, values: torch.Tensor) -> None:
        if times.dim() != 1 or len(times) < 2 or values.shape[0] != len(times):
            raise ValueError("history=(times, values) needs 1-D increasing times (≥ 2) and values with one row per time")
        self.times, self.values = times, values
        self.host = times.tolist()
        if any(b <= a for a, b in zip(self.host, self.host[1:])):
            raise ValueError("history times must be strictly increasing")
        dt = times[1:] - times[:-1]
        shape = (-1,) + (1,) * (values.dim() - 1)
        d = (values[1:] - values[:-1]) / dt.view(shape)
        self.slopes = torch.cat([d[:1], (d[1:] + d[:-1]) / 2, d[-1:]])

    def __call__(self, s: torch.Tensor, s_host: float) -> torch.Tensor:
        k = min(max(bisect.bisect_right(self.host, s_host) - 1, 0), len(self.host) - 2)
        return hermite(s, self.times[k], self.times[k + 1], self.values[k], self.values[k + 1],
                       self.slopes[k], self.slopes[k + 1])


def as_history(history: History) -> History:
    """Samples ``(times, values)`` become a :class:`SampledHistory`; anything else is kept."""
    return SampledHistory(*history) if isinstance(history, tuple) else history


def history_value(history: History, s: torch.Tensor, s_host: float, y0: torch.Tensor) -> torch.Tensor:
    """``φ(s)`` shaped like ``y0`` (``y0`` itself when the history is ``None``)."""
    if history is None:
        return y0
    if isinstance(history, SampledHistory):
        value = history(s, s_host)
    elif callable(history):
        value = history(s)
    else:
        value = torch.as_tensor(history, dtype=y0.dtype, device=y0.device)
    return value.to(y0.dtype).expand_as(y0) if value.shape != y0.shape else value


def check_history(history: History, y0: torch.Tensor, t0: float, max_delay: float) -> None:
    """A ``ValueError`` when ``φ(t0 − max τ)`` does not broadcast to ``y0``'s shape."""
    if history is None:
        return
    probe_host = t0 - max_delay
    probe = torch.as_tensor(probe_host, dtype=y0.dtype, device=y0.device)
    value = (history(probe, probe_host) if isinstance(history, SampledHistory)
             else history(probe) if callable(history) else torch.as_tensor(history))
    try:
        ok = torch.broadcast_shapes(tuple(value.shape), tuple(y0.shape)) == tuple(y0.shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"history gives shape {tuple(value.shape)} at t = {probe_host:.4g}, which does not match "
                         f"the state y0 of shape {tuple(y0.shape)}")
