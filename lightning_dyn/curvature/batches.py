"""Batches as the probe set holds them: nested tuples, lists and dicts of tensors."""

from __future__ import annotations

from typing import Any, Callable

import torch


def tree_map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], batch: Any) -> Any:
    """Apply ``fn`` to every tensor of a nested tuple/list/dict batch."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return type(batch)((k, tree_map_tensors(fn, v)) for k, v in batch.items())
    if isinstance(batch, (list, tuple)):
        mapped = [tree_map_tensors(fn, v) for v in batch]
        return type(batch)(*mapped) if hasattr(batch, "_fields") else type(batch)(mapped)
    return batch


def batch_size(batch: Any) -> int:
    """Number of samples in a batch: the leading dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0:
            raise ValueError("a probe batch must have a batch dimension")
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        try:
            return batch_size(v)
        except ValueError:
            continue
    raise ValueError(f"cannot find a tensor in the probe batch of type {type(batch).__name__}")
