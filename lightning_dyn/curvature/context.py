"""The conditions every measurement runs in: its own RNG seed and module modes, and kernels a
second derivative can go through — all restored after, so training is untouched."""

from __future__ import annotations

import contextlib
from typing import Iterator

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
def measurement_context(model: nn.Module, *, train: bool, seed: int, second_order: bool = True) -> Iterator[None]:
    """Set train/eval mode and a private RNG seed, and — for a measurement that differentiates
    twice — twice-differentiable kernels (:func:`twice_differentiable_kernels`; first-order
    measurements, central differences, keep the fast kernels); restore modes and global RNG
    streams after."""
    modes = [(m, m.training) for m in model.modules()]
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    kernels = twice_differentiable_kernels() if second_order else contextlib.nullcontext()
    with torch.random.fork_rng(devices=cuda), kernels:
        torch.default_generator.manual_seed(seed)
        for d in cuda:
            torch.cuda.default_generators[d].manual_seed(seed)
        model.train(train)
        try:
            yield
        finally:
            for m, flag in modes:
                m.training = flag
