"""Mean-field theory of Kuramoto-type networks: critical coupling and the Lorentzian order parameter.

For ``dθ_i/dt = ω_i + (K/N) Σ_j A_ij sin(θ_j − θ_i)`` with frequencies of symmetric unimodal
density ``g``, incoherence loses stability at (Kuramoto 1975; Strogatz 2000)
``K_c = 2 / (π g(0))`` all-to-all, and on graphs converging to a graphon ``W``
``K_c = 2 / (π g(0) λ_max(W))`` (Chiba & Medvedev 2019; Erdős–Rényi: ``λ_max = p``). For the
Lorentzian of half-width ``γ``, ``K_c = 2γ`` and the stationary order parameter is
``r = √(1 − K_c/K)`` for ``K > K_c`` (Ott & Antonsen 2008), 0 below; for the Gaussian of
standard deviation ``σ``, ``K_c = σ·√(8/π)``.

With noise instead of heterogeneity — identical oscillators, ``dθ_i = (ω + coupling) dt + √(2D) dW_i``
— on a digraph measure ``x ↦ η_x`` with kernel operator ``(Tf)(x) = ∫ f dη_x``, incoherence loses
stability at ``K_c = 2D/μ_max(T)`` (``μ_max`` the eigenvalue of largest real part; Strogatz &
Mirollo 1991 all-to-all, Kuehn & Xu 2022 on digraph measures): ``2D`` all-to-all, ``2D/p`` for
Erdős–Rényi, ``2D/⟨f, g⟩`` for a rank-one kernel ``f ⊗ g``, ``2D(1 − 2α)`` for the power law
``x^{−α} y^{−α}`` (hubs synchronise anything as ``α → ½``). All-to-all the stationary order
parameter solves ``r = I₁(Kr/D)/I₀(Kr/D)``. A firing-rate network ``u̇ = −u + g ∫ σ(u) dη_x``
with ``σ'(0) = s`` leaves ``u = 0`` in a pitchfork at ``g_c = 1/(s μ_max)``.
"""

from __future__ import annotations

import math
from typing import Optional

import scipy.optimize
import scipy.special

from ..ensembles.digraph_measures import DigraphMeasure
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


def _positive_top_eigenvalue(measure: Optional[DigraphMeasure], num_points: int) -> float:
    mu = 1.0 if measure is None else measure.top_eigenvalue(num_points)
    if not mu > 1e-9:  # a compact kernel operator always has 0 in its spectrum: μ_max ≥ 0 up to round-off
        raise ValueError(f"the kernel operator's top eigenvalue must be positive (real part), got {mu}")
    return mu


def noisy_critical_coupling(noise: float, measure: Optional[DigraphMeasure] = None, *, num_points: int = 2000) -> float:
    """``K_c = 2D/μ_max`` for identical noisy oscillators on ``measure`` (``None``: all-to-all, ``2D``)."""
    if not noise > 0:
        raise ValueError(f"noise must be a positive intensity D, got {noise!r}")
    return 2.0 * noise / _positive_top_eigenvalue(measure, num_points)


def critical_gain(measure: Optional[DigraphMeasure] = None, *, slope: float = 1.0, num_points: int = 2000) -> float:
    """The firing-rate network's pitchfork ``g_c = 1/(σ'(0) μ_max)`` (``slope = σ'(0)``, 1 for tanh)."""
    return 1.0 / (slope * _positive_top_eigenvalue(measure, num_points))


def noisy_order_parameter(coupling: float, noise: float) -> float:
    """All-to-all identical noisy oscillators' stationary ``r``: the positive root of
    ``r = I₁(Kr/D)/I₀(Kr/D)`` above ``K_c = 2D``, 0 below."""
    if not noise > 0:
        raise ValueError(f"noise must be a positive intensity D, got {noise!r}")
    if coupling <= 2 * noise:
        return 0.0
    a = coupling / noise
    ratio = lambda r: scipy.special.i1e(a * r) / scipy.special.i0e(a * r) - r  # noqa: E731
    return float(scipy.optimize.brentq(ratio, 1e-12, 1.0, xtol=1e-14))
