"""Twisted states of Kuramoto networks on ring-type (translation-invariant) digraph measures.

On a measure invariant under rotation of the circle — ``η_x`` is ``ν`` shifted by ``x``: atoms
``Σ_m w_m δ_{x+a_m}`` and kernels ``w((y − x) mod 1)`` — identical noise-free oscillators
``θ̇(x) = ω + K ∫ sin(θ(y) − θ(x)) dη_x(y)`` have the **q-twisted states**
``θ(x) = 2πqx + Ωt`` (Wiley, Strogatz & Girvan 2006; on digraph measures Kuehn & Xu 2022) rotating at

    Ω = ω + K ∫ sin(2πq d) dν(d).

Linearised, the Fourier mode ``e^{2πikx}`` of a perturbation grows at

    λ_k = K ∫ cos(2πq d)(e^{2πik d} − 1) dν(d),

so the state is stable iff ``Re λ_k < 0`` for every ``k ≠ 0``. For the directed ring
``ν = δ_a``: ``Ω = ω + K sin(2πqa)``, ``Re λ_k = −K cos(2πqa)(1 − cos 2πka)``, stable iff
``cos(2πqa) > 0``; an ``N``-node ring with ``a = 1/N`` keeps ``|q| < N/4``. On ``N`` nodes
(``num_nodes``) the modes are ``k = 1, …, N − 1``, lattice offsets are ``s/N`` and kernels are summed
over the nodes as the deterministic sample does; in the limit (``num_nodes=None``) kernels are
integrated and ``k`` runs to ``num_modes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..ensembles.digraph_measures import DigraphMeasure, grid_positions


@dataclass(frozen=True)
class TwistedState:
    """``frequency`` Ω; ``growth_rates[k−1] = Re λ_k``; ``stability``: ``"stable"`` (every
    ``Re λ_k < 0``), ``"unstable"`` (some ``> 0``) or ``"neutral"`` (the largest is 0 to round-off)."""

    winding: int
    frequency: float
    growth_rates: torch.Tensor
    stability: Literal["stable", "unstable", "neutral"]

    @property
    def max_growth_rate(self) -> float:
        return float(self.growth_rates.max())

    @property
    def stable(self) -> bool:
        return self.stability == "stable"


def twisted_state(measure: DigraphMeasure, winding: int, coupling: float, *, frequency: float = 0.0,
                  num_nodes: Optional[int] = None, num_modes: int = 1024, num_points: int = 4096) -> TwistedState:
    """The ``q``-twisted state's rotation frequency and linear stability (see the module)."""
    if not measure.is_translation_invariant:
        raise ValueError("twisted states need a translation-invariant measure: atoms, and kernels built by "
                         "translation_invariant() or uniform()")
    if num_nodes is not None and (not isinstance(num_nodes, int) or num_nodes < 2):
        raise ValueError(f"num_nodes must be an integer >= 2 or None, got {num_nodes!r}")
    q = int(winding)
    k = torch.arange(1, (num_nodes if num_nodes is not None else num_modes + 1), dtype=torch.float64)
    offsets, masses = [], []
    for atom in measure.atoms:
        offsets.append(torch.tensor([atom.fraction(num_nodes)], dtype=torch.float64))
        masses.append(torch.tensor([atom.weight], dtype=torch.float64))
    for part in measure.kernels:
        n = num_nodes if num_nodes is not None else num_points
        d = torch.arange(1, n, dtype=torch.float64) / n if num_nodes is not None else grid_positions(n)
        offsets.append(d)
        masses.append(part.weight * part.profile(d).to(torch.float64) / n)
    d, m = torch.cat(offsets), torch.cat(masses)
    omega = frequency + coupling * float((m * torch.sin(2 * math.pi * q * d)).sum())
    rates = coupling * ((m * torch.cos(2 * math.pi * q * d))[None, :]
                        * (torch.cos(2 * math.pi * k[:, None] * d[None, :]) - 1)).sum(1)
    top = float(rates.max())
    scale = abs(coupling) * float(m.abs().sum()) * 1e-10
    stability = "unstable" if top > scale else "stable" if top < -scale else "neutral"
    return TwistedState(q, omega, rates, stability)


__all__ = ["TwistedState", "twisted_state"]
