"""The conditions every measurement runs in: its own RNG seed and module modes, and kernels a
second derivative can go through — all restored after, so training is untouched."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn


@contextlib.contextmanager
def twice_differentiable_kernels() -> Iterator[None]:
    """Run the model the way a second derivative can go through it.

    Two things in everyday models have a first derivative but no second: the fused attention
    kernels behind ``F.scaled_dot_product_attention`` (flash / memory-efficient, on CPU too) and
    ``torch.compile``'d code (AOTAutograd refuses double backward). Inside this context attention
    runs the math kernel — the same function, composed of differentiable operations — and
    compiled modules run eagerly (``torch.compiler.set_stance("force_eager")``, where available).
    Training itself is untouched: both settings are restored on exit.
    """
    with contextlib.ExitStack() as stack:
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        except ImportError:  # pragma: no cover - torch < 2.3
            pass
        set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
        if set_stance is not None:
            stack.enter_context(set_stance("force_eager"))
        yield


@contextlib.contextmanager
def measurement_context(model: nn.Module, *, train: Optional[bool], seed: int,
                        second_order: bool = True) -> Iterator[None]:
    """Set train/eval mode (``None``: leave every module's flag as it is) and a private RNG seed,
    and — for a measurement that differentiates twice — twice-differentiable kernels
    (:func:`twice_differentiable_kernels`; first-order measurements, central differences, keep the
    fast kernels); restore modes and global RNG streams after."""
    modes = [(m, m.training) for m in model.modules()]
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    kernels = twice_differentiable_kernels() if second_order else contextlib.nullcontext()
    with torch.random.fork_rng(devices=cuda), kernels:
        torch.default_generator.manual_seed(seed)
        for d in cuda:
            torch.cuda.default_generators[d].manual_seed(seed)
        if train is not None:
            model.train(train)
        try:
            yield
        finally:
            for m, flag in modes:
                m.training = flag


def train_flags(model: nn.Module, mode: str) -> Optional[bool]:
    """What :func:`measurement_context` sets for a measurement in ``mode``: ``"eval"`` — every module
    in eval mode; ``"train"`` — the modes training has, i.e. each module's flag left as it is
    (``None``), so a submodule its user put in eval mode (a frozen BatchNorm, a fine-tuning recipe)
    stays there; on a module whose root is in eval mode — outside training — every submodule in
    train mode, as ``model.train()``."""
    if mode == "eval":
        return False
    return None if model.training else True
