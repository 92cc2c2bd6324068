"""Lyapunov exponents of a product of random linear maps, by QR re-orthonormalisation.

For i.i.d. (or stationary) random maps ``A_1, A_2, …`` on ``R^d`` the limits

    λ_1 + … + λ_j = lim_{n→∞} (1/n) log vol_j(A_n ⋯ A_1 V)        (Oseledets)

exist almost surely. Benettin's algorithm estimates them: keep an orthonormal ``Q`` (d×k), and at
every step factor ``A Q = Q' R``; then ``λ_i ≈ (1/n) Σ_t log |R_t[i, i]|``. The standard error
is by batch means: the steps after a burn-in are cut into ``num_blocks`` consecutive blocks, and
the spread of the per-block means gives the error of their average (Flyvbjerg & Petersen 1989).

Invariant subspaces. Linearised SGD at an interpolating minimum leaves the tangent space of the
minimum manifold fixed (exponent exactly 0). The exponents that decide stability live on the
normal space N; a start vector in N stays there only in exact arithmetic, and round-off leaks it
into the tangent directions, whose exponent 0 then swallows a negative top exponent. ``project``
re-projects onto N every ``project_every`` steps (Chemnitz & Engel,
arXiv:2407.20209).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..sampling import private_generator, random_vectors

Step = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LyapunovSpectrum:
    """Result of :func:`lyapunov_spectrum`.

    Attributes:
        exponents: the top-``k`` exponents, shape ``batch_shape + (k,)``, largest first (float64, host).
        stderr: their standard errors by batch means, same shape.
        num_steps: steps averaged (after ``burn_in``).
        burn_in: steps discarded first, while ``Q`` aligns with the Oseledets directions.
    """

    exponents: torch.Tensor
    stderr: torch.Tensor
    num_steps: int
    burn_in: int


def _orthonormalise(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``V = Q R``; returns ``Q`` and ``log |diag R|`` (a norm when ``k = 1``: no QR needed)."""
    if V.shape[-1] == 1:
        norm = torch.linalg.vector_norm(V, dim=-2, keepdim=True)
        return V / norm, norm.squeeze(-2).log()
    Q, R = torch.linalg.qr(V)
    return Q, R.diagonal(dim1=-2, dim2=-1).abs().log()


def lyapunov_spectrum(
    step: Step,
    dim: int,
    k: int,
    num_steps: int,
    *,
    generator: Optional[torch.Generator] = None,
    project: Optional[Step] = None,
    project_every: int = 10,
    burn_in: Optional[int] = None,
    num_blocks: int = 20,
    batch_shape: tuple[int, ...] = (),
    init: Optional[torch.Tensor] = None,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float64,
) -> LyapunovSpectrum:
    """Top-``k`` Lyapunov exponents of the random product ``V ↦ step(V)``.

    Args:
        step: applies one random map to ``V`` of shape ``batch_shape + (dim, k)``, drawing its own
            randomness (a closure over a private generator). A leading ``batch_shape`` runs several
            independent systems at once — e.g. one per learning rate, sharing the same batches.
        dim: dimension ``d`` of the space.
        k: number of exponents (``1 ≤ k ≤ dim``).
        num_steps: steps averaged after the burn-in; at least ``num_blocks``.
        generator: private generator for the random start (default: a fresh one, seed 0).
        project: re-projection onto an invariant subspace, applied every ``project_every`` steps
            (and to the start vectors).
        project_every: steps between projections.
        burn_in: steps discarded first (default ``min(100, num_steps // 10)``).
        num_blocks: blocks for the batch-means standard error.
        batch_shape: leading batch dimensions of ``V``.
        init: start vectors ``batch_shape + (dim, k)`` instead of random ones.
        device, dtype: where and in what precision ``V`` lives (default: host, float64).

    Returns:
        :class:`LyapunovSpectrum`. A map that sends a vector to zero gives ``-inf``; one that
        overflows gives ``inf`` or ``nan`` — check ``torch.isfinite``.

    Reference: Benettin, Galgani, Giorgilli & Strelcyn, *Meccanica* 15 (1980).
    """
    for name, value in (("dim", dim), ("k", k), ("num_steps", num_steps), ("project_every", project_every),
                        ("num_blocks", num_blocks)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if k > dim:
        raise ValueError(f"k ({k}) must not exceed dim ({dim})")
    if num_steps < num_blocks:
        raise ValueError(f"num_steps ({num_steps}) must be at least num_blocks ({num_blocks})")
    burn_in = min(100, num_steps // 10) if burn_in is None else burn_in
    if burn_in < 0:
        raise ValueError(f"burn_in must be >= 0, got {burn_in}")
    shape = (*batch_shape, dim, k)
    if init is None:
        V = random_vectors(shape, device=device or torch.device("cpu"), dtype=dtype,
                           generator=private_generator(generator))
    else:
        if tuple(init.shape) != shape:
            raise ValueError(f"init must have shape {shape}, got {tuple(init.shape)}")
        V = init.to(device=device or init.device, dtype=dtype)
    if project is not None:
        V = project(V)
    Q, _ = _orthonormalise(V)
    block = num_steps // num_blocks
    sums = torch.zeros((num_blocks, *batch_shape, k), dtype=dtype, device=Q.device)
    for t in range(burn_in + num_steps):
        V = step(Q)
        if project is not None and (t + 1) % project_every == 0:
            V = project(V)
        Q, log_r = _orthonormalise(V)
        s = t - burn_in
        if s >= 0:
            sums[min(s // block, num_blocks - 1)] += log_r
    counts = torch.full((num_blocks,), float(block), dtype=dtype)
    counts[-1] += num_steps - block * num_blocks
    sums = sums.cpu()
    exponents = sums.sum(0) / num_steps
    means = sums / counts.view(-1, *([1] * (sums.dim() - 1)))
    stderr = means.std(dim=0, unbiased=True) / num_blocks ** 0.5
    return LyapunovSpectrum(exponents=exponents, stderr=stderr, num_steps=num_steps, burn_in=burn_in)
