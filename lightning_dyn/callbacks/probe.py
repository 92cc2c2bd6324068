"""The probe set and the loss a measurement differentiates.

A measurement is of a fixed function: the training loss on a fixed *probe set*, drawn once at
the start of training, reproducibly, so that successive measurements see the same function and
a warm start is meaningful. By default the probe set is the first ``probe_size`` samples the
train dataloader yields; drawing them forks and restores the global RNG streams (a shuffling
sampler draws its seed from them), so training sees the same data order as without us.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from ..curvature.hessian import HessianOperator, batch_size, tree_map_tensors
from .rng import preserved_rng

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def _take(batch: Any, n: int) -> Any:
    return tree_map_tensors(lambda t: t[:n] if t.dim() > 0 else t, batch)


def draw_probe_batches(dataloader: Any, probe_size: int, device: torch.device, seed: int = 0) -> list[Any]:
    """The first ``probe_size`` samples of ``dataloader``, as a list of batches on ``device``."""
    batches, count = [], 0
    with preserved_rng(seed):
        for batch in dataloader:
            n = batch_size(batch)
            take = min(n, probe_size - count)
            batches.append(tree_map_tensors(lambda t: t.detach().to(device), _take(batch, take)))
            count += take
            if count >= probe_size:
                break
    return batches


def canonical_order(*tensors: torch.Tensor) -> torch.Tensor:
    """A content-defined order of the samples (lexicographic in the tensors' entries), so every
    rank — and one process on the same data — sees the probe set in the same order."""
    keys = torch.cat([t.reshape(len(t), -1).double() for t in tensors], 1)
    return torch.from_numpy(np.lexsort(keys.cpu().numpy().T[::-1]).copy())


@contextlib.contextmanager
def muted_logging(pl_module: nn.Module) -> Iterator[None]:
    """Make ``self.log``/``self.log_dict`` no-ops while the measurement calls ``training_step``."""
    had = {name: name in vars(pl_module) for name in ("log", "log_dict")}
    pl_module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    pl_module.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, present in had.items():
            if not present:
                delattr(pl_module, name)


def training_step_loss(pl_module: nn.Module, batch: Any) -> torch.Tensor:
    """The loss an unmodified ``LightningModule`` trains on: ``training_step(batch, 0)``, a tensor
    or a dict with ``"loss"``; its own ``self.log`` calls are muted."""
    with muted_logging(pl_module):
        out = pl_module.training_step(batch, 0)
    if isinstance(out, dict):
        out = out.get("loss")
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            "training_step must return the loss (a tensor or a dict with 'loss') for the default loss; "
            "otherwise pass loss_fn(pl_module, batch)"
        )
    return out


def check_twice_differentiable(pl_module: nn.Module, loss_fn: LossFn, batch: Any) -> Optional[str]:
    """A reason the loss cannot serve a Hessian measurement, or ``None`` when it can (evaluated
    like a measurement: BatchNorm statistics, modes and RNG streams are left alone)."""
    try:
        with torch.enable_grad():
            loss = HessianOperator(pl_module, loss_fn, [batch], distributed=False).loss()
    except (TypeError, ValueError) as err:
        return str(err)
    if not loss.requires_grad:
        return "the loss does not require grad (computed under torch.no_grad() or detached?)"
    if not torch.isfinite(loss.detach()).all():
        return f"the loss on the probe set is not finite ({float(loss.detach())})"
    return None
