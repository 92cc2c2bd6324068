"""Random probe vectors from a private generator (never the global RNG streams)."""

from __future__ import annotations

from typing import Literal, Optional

import torch

Distribution = Literal["rademacher", "gaussian"]


def private_generator(generator: Optional[torch.Generator], seed: int = 0) -> torch.Generator:
    """The generator to draw from: the caller's, or a fresh one seeded with ``seed``."""
    return generator if generator is not None else torch.Generator().manual_seed(seed)


def generator_bytes(generator: torch.Generator) -> bytes:
    """A generator's state as plain bytes: a state tensor would cross a process boundary of torch's
    multiprocessing (``ddp_spawn``) through a file descriptor; bytes cross any."""
    return bytes(generator.get_state().numpy())


def generator_from_bytes(state: bytes) -> torch.Generator:
    """The generator whose state :func:`generator_bytes` returned."""
    generator = torch.Generator()
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator


def random_vectors(
    shape: tuple[int, ...],
    *,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator,
    distribution: Distribution = "gaussian",
) -> torch.Tensor:
    """Draw on ``device``: from ``generator`` itself when it lives there, else from a generator on
    ``device`` seeded by one draw of ``generator`` (reproducible, and no host-to-device copy)."""
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    device = torch.device(device)
    if generator.device.type != device.type:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        generator = torch.Generator(device=device).manual_seed(seed)
    if distribution == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype).mul_(2).sub_(1)
