"""Random probe vectors from a private generator (never the global RNG streams)."""

from __future__ import annotations

from typing import Literal, Optional

import torch

Distribution = Literal["rademacher", "gaussian"]


def private_generator(generator: Optional[torch.Generator], seed: int = 0) -> torch.Generator:
    """The generator to draw from: the caller's, or a fresh one seeded with ``seed``."""
    return generator if generator is not None else torch.Generator().manual_seed(seed)


def random_vectors(
    shape: tuple[int, ...],
    *,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator,
    distribution: Distribution = "gaussian",
) -> torch.Tensor:
    """Draw on the generator's device, then move (one copy per call, not per product)."""
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    gdev = generator.device
    if distribution == "gaussian":
        v = torch.randn(shape, generator=generator, device=gdev, dtype=torch.float64)
    else:
        v = torch.randint(0, 2, shape, generator=generator, device=gdev).to(torch.float64).mul_(2).sub_(1)
    return v.to(device=device, dtype=dtype)
