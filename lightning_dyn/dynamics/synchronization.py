"""Mean-field theory of Kuramoto-type networks: critical coupling and the Lorentzian order parameter.

For ``dθ_i/dt = ω_i + (K/N) Σ_j A_ij sin(θ_j − θ_i)`` with frequencies of symmetric unimodal
density ``g``, incoherence loses stability at (Kuramoto 1975; Strogatz 2000)
``K_c = 2 / (π g(0))`` all-to-all, and on graphs converging to a graphon ``W``
``K_c = 2 / (π g(0) λ_max(W))`` (Chiba & Medvedev 2019; Erdős–Rényi: ``λ_max = p``). For the
Lorentzian of half-width ``γ``, ``K_c = 2γ`` and the stationary order parameter is
``r = √(1 − K_c/K)`` for ``K > K_c`` (Ott & Antonsen 2008), 0 below; for the Gaussian of
standard deviation ``σ``, ``K_c = σ·√(8/π)``.
"""

from __future__ import annotations

import math
from typing import Optional

from ..ensembles.frequencies import FrequencyLaw, density_at_center
from ..ensembles.graphs import Graphon, graphon_top_eigenvalue


def critical_coupling(law: FrequencyLaw = "lorentzian", scale: float = 0.5, graphon: Optional[Graphon] = None,
                      *, num_points: int = 2000) -> float:
    """``K_c = 2/(π g(0) λ_max(W))``; ``graphon=None`` is all-to-all (``λ_max = 1``)."""
    lam = 1.0 if graphon is None else graphon_top_eigenvalue(graphon, num_points)
    if not lam > 0:
        raise ValueError(f"the graphon's top eigenvalue must be positive, got {lam}")
    return 2.0 / (math.pi * density_at_center(law, scale) * lam)


def lorentzian_order_parameter(coupling: float, critical: float) -> float:
    """Stationary ``r = √(1 − K_c/K)`` above ``K_c``, 0 below (Lorentzian frequencies)."""
    return math.sqrt(1.0 - critical / coupling) if coupling > critical else 0.0
