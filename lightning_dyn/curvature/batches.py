"""Batches as the probe set holds them: any collection of tensors a data loader yields.

A batch is whatever Lightning itself can move between devices: a tensor, or tuples, lists,
namedtuples, mappings (``dict``, ``transformers``' ``BatchEncoding``, any ``Mapping``) and
dataclasses of tensors, nested. The traversal is Lightning's own
(``lightning_utilities.core.apply_func.apply_to_collection``), so a batch that trains can be
measured; the samples are along the leading dimension of its tensors.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from lightning_utilities.core.apply_func import apply_to_collection


def tree_map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], batch: Any) -> Any:
    """Apply ``fn`` to every tensor of a batch (module docstring), keeping its structure and types."""
    return apply_to_collection(batch, torch.Tensor, fn)


def tensors_of(batch: Any) -> list[torch.Tensor]:
    """The tensors of a batch, in a fixed traversal order."""
    found: list[torch.Tensor] = []
    apply_to_collection(batch, torch.Tensor, found.append)
    return found


def batch_size(batch: Any) -> int:
    """Number of samples in a batch: the leading dimension of its first tensor that has one."""
    for t in tensors_of(batch):
        if t.dim() > 0:
            return t.shape[0]
    if isinstance(batch, torch.Tensor):
        raise ValueError("a probe batch must have a batch dimension")
    raise ValueError(f"cannot find a tensor with a batch dimension in the probe batch of type {type(batch).__name__}")


def select_samples(batch: Any, index: torch.Tensor) -> Any:
    """The samples ``index`` of a batch (a sub-batch of the same structure)."""
    return tree_map_tensors(lambda t: t[index.to(t.device)] if t.dim() > 0 else t, batch)


def concatenate(batches: Sequence[Any]) -> Any:
    """One batch holding the samples of ``batches`` (of one structure), in order. Raises
    ``ValueError`` when their tensors differ beyond the sample dimension (e.g. sequences padded
    to each batch's own longest: pad to a fixed length)."""
    columns = list(zip(*(tensors_of(b) for b in batches)))
    for column in columns:
        if len({tuple(t.shape[1:]) for t in column}) > 1:
            shapes = sorted({tuple(t.shape) for t in column})
            raise ValueError(f"the batches cannot be joined into one: a tensor has shapes {shapes[:3]} in different "
                             "batches (padded to each batch's longest sequence?); pad to a fixed length")
    joined = iter([torch.cat(column) if column[0].dim() > 0 else column[0] for column in columns])
    return tree_map_tensors(lambda _: next(joined), batches[0])
