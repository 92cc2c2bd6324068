"""Measuring how fast a noisy oscillator network leaves (or returns to) incoherence, by simulation.

Linearised about incoherence, the expected local order parameters ``E e^{iθ_i}`` of identical
oscillators with noise ``D`` evolve by ``ż = (−D + (K/2) C) z`` (``C`` the coupling matrix): the
noise enters exactly, as ``E e^{i√(2D)ΔW} = e^{−DΔt}``. Projected on a left eigenvector ``ψ`` of the
coupling's top eigenvalue ``μ``, ``a(t) = E[(1/N) Σ_i ψ_i e^{iθ_i(t)}]`` grows as ``e^{σt}`` with
``σ = Kμ/2 − D``; the critical coupling is where ``σ`` crosses 0 (``K_c = 2D/μ``).

The measurement: every system of a batch starts from the same phases — wrapped-Cauchy quantiles of
first moment ``amplitude`` at the Kronecker points ``u_i = {iφ}`` (golden ratio ``φ``), so the
initial projection carries no sampling noise — and gets its own Brownian path; ``log |mean a(t)|``
is fitted by least squares over ``[0, t_end]``. The statistical error of ``σ`` is about
``1/(amplitude·√(N·batch)·t_end)``; nonlinear saturation biases it by ``O(amplitude²)``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def kronecker_phases(z1: torch.Tensor) -> torch.Tensor:
    """Deterministic phases whose empirical law at node ``i`` is the wrapped Cauchy of first moment
    ``z1[i]``: the quantile ``θ_i = arg z₁ + 2 arctan(((1−ρ)/(1+ρ)) tan(π(u_i − ½)))`` at
    ``u_i = (iφ + ½N⁻¹) mod 1`` (low discrepancy jointly in node and quantile)."""
    n = z1.shape[-1]
    u = (torch.arange(n, dtype=torch.float64) * GOLDEN + 0.5 / n) % 1.0
    z1 = z1.to(torch.complex128)
    rho = z1.abs()
    return torch.angle(z1) + 2 * torch.atan((1 - rho) / (1 + rho) * torch.tan(math.pi * (u - 0.5)))


def incoherence_growth_rate(network: nn.Module, *, profile: Optional[torch.Tensor] = None, amplitude: float = 0.1,
                            batch: int = 128, t_end: float = 2.0, step_size: float = 0.02, method: str = "heun",
                            num_saves: int = 21, generator: Optional[torch.Generator] = None) -> float:
    """``σ``: the growth rate of ``|E (1/N) Σ_i ψ_i e^{iθ_i}|`` from a state ``amplitude`` away from
    incoherence (see the module).

    Args:
        network: a noisy :class:`~lightning_dyn.KuramotoNetwork` of identical oscillators (its
            frequencies add a rotation only).
        profile: ``ψ`` at the nodes — a left eigenfunction of the limit kernel's top eigenvalue
            (``None``: constant, right for all-to-all, Erdős–Rényi and rings); e.g. ``g(x_i)`` for
            a rank-one kernel ``f ⊗ g``.
        amplitude: the initial first moment at every node.
        batch: independent noise realisations averaged.
    """
    if network.noise <= 0:
        raise ValueError("the growth rate from incoherence is measured on a noisy network (noise > 0)")
    if not 0 < amplitude < 1:
        raise ValueError(f"amplitude must be in (0, 1), got {amplitude!r}")
    n = network.num_nodes
    dtype = network.frequencies.dtype
    psi = torch.ones(n, dtype=dtype) if profile is None else profile.to(dtype)
    theta0 = kronecker_phases(torch.full((n,), amplitude, dtype=torch.complex128)).to(dtype).expand(batch, n).clone()
    t, theta = network.simulate(theta0, (0.0, t_end), step_size=step_size, method=method, num_saves=num_saves,
                                generator=generator)
    a = (psi * torch.exp(1j * theta)).mean(-1).mean(-1).abs()
    return float(exponential_rate(t, a))


def exponential_rate(times: torch.Tensor, amplitude: torch.Tensor) -> torch.Tensor:
    """``σ`` of ``amplitude ≈ c·e^{σt}``: the least-squares slope of ``log amplitude`` against ``times``;
    ``amplitude`` of shape ``(T, ...)`` gives one rate per trailing entry."""
    design = torch.stack((times, torch.ones_like(times)), dim=1).to(torch.float64)
    logs = torch.log(amplitude.to(torch.float64)).reshape(len(times), -1)
    return torch.linalg.lstsq(design, logs).solution[0].reshape(amplitude.shape[1:])


def critical_coupling_from_rates(couplings, rates) -> float:
    """Where the line fitted through ``(K, σ(K))`` crosses ``σ = 0`` (two or more couplings):
    ``σ = Kμ/2 − D`` is linear in ``K`` about incoherence."""
    K = torch.as_tensor(couplings, dtype=torch.float64)
    sigma = torch.as_tensor(rates, dtype=torch.float64)
    if K.numel() < 2 or K.shape != sigma.shape:
        raise ValueError("need matching couplings and rates, at least two of each")
    slope, intercept = torch.linalg.lstsq(torch.stack((K, torch.ones_like(K)), dim=1), sigma[:, None]).solution[:, 0]
    return float(-intercept / slope)


__all__ = ["critical_coupling_from_rates", "exponential_rate", "incoherence_growth_rate", "kronecker_phases"]
