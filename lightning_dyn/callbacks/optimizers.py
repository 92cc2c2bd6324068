"""Which optimizer a measurement is about, and the parameters it steps.

A run may hold several optimizers (a GAN's generator and discriminator under manual optimization)
or one over a subset of the trainable parameters (a head trained on a frozen-by-omission
backbone). A curvature measurement is about one optimizer's step, so it is of the parameters that
optimizer updates — those in its parameter groups that require grad — not of everything that
requires grad: parameters another optimizer steps, or none does, are left out.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info

from .compat import ConfigurationError


def real_optimizers(trainer: Any) -> list[torch.optim.Optimizer]:
    """The trainer's optimizers (none when ``configure_optimizers`` returned none: Lightning then
    stands a ``_MockOptimizer`` in)."""
    return [o for o in trainer.optimizers if type(o).__name__ != "_MockOptimizer"]


def optimizer_at(trainer: Any, index: int, owner: str, *, required: bool) -> Optional[torch.optim.Optimizer]:
    """``trainer.optimizers[index]``, or ``None`` when the run has no optimizer and none is
    ``required``; a clear error for an index the run does not have."""
    optimizers = real_optimizers(trainer)
    if not optimizers:
        if required:
            raise ConfigurationError(f"{owner} needs an optimizer (configure_optimizers returned none)")
        return None
    if not 0 <= index < len(optimizers):
        raise ConfigurationError(f"{owner}: `optimizer={index}` but the run has {len(optimizers)} optimizer(s) "
                                 f"({', '.join(type(o).__name__ for o in optimizers)}); indices start at 0")
    return optimizers[index]


def stepped_parameters(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """The parameters ``optimizer`` updates: those of its groups that require grad (each once)."""
    seen: set[int] = set()
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def describe_measured(trainer: Any, pl_module: Any, index: int, owner: str) -> None:
    """Check ``index`` at setup (:func:`optimizer_at`) and say in one line what is measured when the
    choice matters: several optimizers, or trainable parameters the measured optimizer does not step."""
    optimizer = optimizer_at(trainer, index, owner, required=False)
    if optimizer is None:
        return
    optimizers = real_optimizers(trainer)
    stepped = stepped_parameters(optimizer)
    ids = {id(p) for p in stepped}
    left_out = [p for p in pl_module.parameters() if p.requires_grad and id(p) not in ids]
    if len(optimizers) == 1 and not left_out:
        return
    which = f"optimizer {index} ({type(optimizer).__name__}) of {len(optimizers)}"
    rest = (f"; {sum(p.numel() for p in left_out):,} trainable entries it does not step are left out"
            if left_out else "")
    rank_zero_info(f"{owner}: measuring the {sum(p.numel() for p in stepped):,} parameters {which} steps{rest} "
                   "(choose another with `optimizer=`)")
