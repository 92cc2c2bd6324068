"""Natural frequencies for oscillator networks: Lorentzian (Cauchy) and Gaussian laws.

``sampling="quantile"`` places ``ω_i = F⁻¹((i − ½)/N)``, the midpoint quantiles of the law
(deterministic, reproducible, and without the sampling noise that blurs a finite-N
synchronisation transition); ``sampling="random"`` draws i.i.d. from a private generator.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

FrequencyLaw = Literal["lorentzian", "gaussian"]


def natural_frequencies(
    num_nodes: int,
    law: FrequencyLaw = "lorentzian",
    scale: float = 0.5,
    *,
    center: float = 0.0,
    sampling: Literal["quantile", "random"] = "quantile",
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``N`` natural frequencies.

    Args:
        num_nodes: ``N`` (≥ 2).
        law: ``"lorentzian"`` (density ``γ/(π(ω²+γ²))``, ``scale`` = half-width ``γ``) or
            ``"gaussian"`` (``scale`` = standard deviation ``σ``).
        center: the law's center.
        sampling: ``"quantile"`` (deterministic midpoint quantiles) or ``"random"``.
        generator: private generator for ``sampling="random"`` (default: seed 0).
    """
    if not isinstance(num_nodes, int) or num_nodes < 2:
        raise ValueError(f"num_nodes must be an integer >= 2, got {num_nodes!r}")
    if law not in ("lorentzian", "gaussian"):
        raise ValueError(f"law must be 'lorentzian' or 'gaussian', got {law!r}")
    if sampling not in ("quantile", "random"):
        raise ValueError(f"sampling must be 'quantile' or 'random', got {sampling!r}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    if sampling == "quantile":
        u = (torch.arange(num_nodes, dtype=torch.float64) + 0.5) / num_nodes
    else:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        u = torch.rand(num_nodes, generator=g, dtype=torch.float64)
    if law == "lorentzian":
        z = torch.tan(math.pi * (u - 0.5))
    else:
        z = torch.special.ndtri(u)
    return (center + scale * z).to(dtype)


def density_at_center(law: FrequencyLaw, scale: float) -> float:
    """``g(0)`` of the (centred) law: ``1/(πγ)`` Lorentzian, ``1/(σ√(2π))`` Gaussian."""
    if law == "lorentzian":
        return 1.0 / (math.pi * scale)
    if law == "gaussian":
        return 1.0 / (scale * math.sqrt(2 * math.pi))
    raise ValueError(f"law must be 'lorentzian' or 'gaussian', got {law!r}")
