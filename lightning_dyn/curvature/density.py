"""Spectral density by stochastic Lanczos quadrature (SLQ).

For a unit vector ``v`` and ``m`` Lanczos steps from it, the Gauss quadrature rule with nodes
``θ_j`` (eigenvalues of ``T_m``) and weights ``τ_j = (e₁ᵀ s_j)²`` approximates the spectral
measure of ``A`` seen from ``v``: ``vᵀ f(A) v ≈ Σ_j τ_j f(θ_j)``. Averaging over random ``v``
estimates the density ``φ(t) = (1/n) Σ_i δ(t − λ_i)``, smoothed with a Gaussian of width ``σ``:
``φ_σ(t) = (1/R) Σ_r Σ_j τ_j^{(r)} 𝒩(t; θ_j^{(r)}, σ²)``
(Lin, Saad & Yang 2016, "Approximating spectral densities of large matrices"; Ghorbani, Krishnan
& Xiao 2019, arXiv:1901.10159; Yao et al. 2020, PyHessian, arXiv:1912.07145). The density
integrates to 1 and its mean ``Σ τ_j θ_j`` is an unbiased estimate of ``tr(A)/n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..sampling import Distribution, private_generator
from .lanczos import LanczosIteration
from .operator import CurvatureOperator


@dataclass
class SpectralDensity:
    """A smoothed spectral density and the raw quadrature rules behind it.

    Attributes:
        grid: points ``t`` (float64 array).
        density: ``φ_σ(t)`` on the grid (integrates to 1).
        nodes: Ritz values of each run, a list of arrays.
        weights: quadrature weights of each run (each sums to 1).
        sigma: smoothing width.
        mean: ``∫ t φ(t) dt``, an estimate of ``tr(A)/n``; ``mean_stderr`` its standard error.
        num_matvecs: products spent.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    sigma: float
    mean: float
    mean_stderr: float
    num_matvecs: int


def spectral_density(
    op: CurvatureOperator,
    num_runs: int = 10,
    lanczos_steps: int = 30,
    *,
    num_points: int = 1000,
    sigma: Optional[float] = None,
    distribution: Distribution = "rademacher",
    generator: Optional[torch.Generator] = None,
) -> SpectralDensity:
    """Estimate the spectral density of ``op`` with ``num_runs × lanczos_steps`` products.

    Args:
        op: a symmetric :class:`CurvatureOperator`.
        num_runs: random start vectors.
        lanczos_steps: Lanczos steps per run (quadrature nodes per run).
        num_points: grid size.
        sigma: Gaussian smoothing width; default 1% of the spectral range seen.
        distribution: start vectors, ``"rademacher"`` or ``"gaussian"`` (normalised).
        generator: private generator (default: a fresh one, seed 0).
    """
    if num_runs < 1 or lanczos_steps < 1 or num_points < 2:
        raise ValueError("num_runs and lanczos_steps must be >= 1 and num_points >= 2")
    generator = private_generator(generator)
    start_count = op.num_matvecs
    nodes, weights = [], []
    for _ in range(num_runs):
        v = op.space.random((op.size,), device=op.device, dtype=op.dtype, generator=generator, distribution=distribution)
        lanczos = LanczosIteration(op.matvec, v, max_steps=lanczos_steps, generator=generator, restart=False,
                                   space=op.space, dimension=op.dimension)
        while not lanczos.exhausted and lanczos.num_steps < lanczos.max_steps:
            lanczos.step()
        theta, S, _ = lanczos.ritz()
        nodes.append(theta)
        weights.append(S[0, :] ** 2)
    all_nodes = np.concatenate(nodes)
    lo, hi = float(all_nodes.min()), float(all_nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(abs(hi), 1.0)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points)
    density = np.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        density += (tau[None, :] * np.exp(-0.5 * ((grid[:, None] - theta[None, :]) / sigma) ** 2)).sum(axis=1)
    density /= num_runs * sigma * np.sqrt(2 * np.pi)
    run_means = np.array([float(np.dot(t, w)) for t, w in zip(nodes, weights)])
    stderr = float(run_means.std(ddof=1) / np.sqrt(num_runs)) if num_runs > 1 else float("nan")
    return SpectralDensity(grid, density, nodes, weights, float(sigma), float(run_means.mean()), stderr,
                           op.num_matvecs - start_count)
