"""Skipping one optimizer step's update: parameters, optimizer state and buffers as if it had not happened.

A callback that decides in ``on_before_optimizer_step`` (after backward, before the update) drops
the update by setting the gradients of the parameters that optimizer steps to ``None``: every
``torch.optim`` optimizer leaves a parameter without a gradient untouched — its value and its
state (momentum, Adam's moments and step count). The step's forward pass may have moved buffers
(BatchNorm running statistics); they are restored from a copy taken before it
(:meth:`UpdateSkip.snapshot`, at the first micro-batch of the step). Lightning's own counters
(``global_step``, step-wise schedulers) still advance. The decision must be the same on every rank
(the owner agrees on it first), so the replicas stay identical.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


class UpdateSkip:
    """Drops one optimizer step's update (module docstring)."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []
        self._snapshot: list[torch.Tensor] = []

    def prepare(self, pl_module: Any) -> None:
        """Keep the module's buffers, to restore them on a skipped step."""
        self._buffers = list(pl_module.buffers())

    def snapshot(self) -> None:
        """Copy the buffers before the step's forward pass (call at its first micro-batch)."""
        if self._buffers:
            with torch.no_grad():
                self._snapshot = [b.clone() for b in self._buffers]

    def skip(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Drop the update of ``params`` (those the deciding optimizer steps) and restore the buffers."""
        for p in params:
            p.grad = None
        with torch.no_grad():
            for buffer, saved in zip(self._buffers, self._snapshot):
                buffer.copy_(saved)

    def __getstate__(self) -> dict[str, Any]:  # ddp_spawn pickles callbacks: the module's tensors stay behind
        return {"_buffers": [], "_snapshot": []}
