"""Stochastic trace estimation: Hutchinson and Hutch++.

Hutchinson (1989): ``tr(A) = E[vᵀAv]`` for ``E[vvᵀ] = I`` (Rademacher or Gaussian ``v``); with
``m`` samples the standard error is ``std(vᵢᵀAvᵢ)/√m``.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021, arXiv:2010.09649): spend ``m/3`` products on a
sketch ``Q = orth(AS)`` of the top of the spectrum, ``m/3`` on its exact trace ``tr(QᵀAQ)``, and
the remaining on Hutchinson for the deflated rest ``(I − QQᵀ)A(I − QQᵀ)``:
``tr(A) ≈ tr(QᵀAQ) + (1/s) Σ gᵢᵀ(I−QQᵀ)A(I−QQᵀ)gᵢ``. The variance falls as ``1/m²`` instead of
``1/m`` for matrices with decaying spectra (Hessians of trained networks). The standard error
is that of the Hutchinson part, the sketch part being exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..sampling import Distribution, private_generator
from .operator import CurvatureOperator


@dataclass
class TraceEstimate:
    """``value ± stderr`` after ``num_matvecs`` products."""

    value: float
    stderr: float
    num_matvecs: int


def _quadratic_forms(op: CurvatureOperator, G: torch.Tensor) -> torch.Tensor:
    """``[gᵀAg for the columns g of G]`` (float64)."""
    return op.space.dots([(G[:, j], op.matvec(G[:, j])) for j in range(G.shape[1])]).double()


def trace(
    op: CurvatureOperator,
    num_matvecs: int = 30,
    *,
    method: Literal["hutch++", "hutchinson"] = "hutch++",
    distribution: Distribution = "rademacher",
    generator: Optional[torch.Generator] = None,
) -> TraceEstimate:
    """Estimate ``tr(A)`` with ``num_matvecs`` products.

    Args:
        op: a symmetric :class:`CurvatureOperator`.
        num_matvecs: products to spend (Hutch++ needs at least 3, Hutchinson at least 2 for an
            error estimate).
        method: ``"hutch++"`` (default) or ``"hutchinson"``.
        distribution: probe vectors, ``"rademacher"`` (default, lower variance) or ``"gaussian"``.
        generator: private generator (default: a fresh one, seed 0).
    """
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson', got {method!r}")
    minimum = 3 if method == "hutch++" else 2
    if num_matvecs < minimum:
        raise ValueError(f"{method} needs num_matvecs >= {minimum}, got {num_matvecs}")
    generator = private_generator(generator)
    draw = lambda m: op.space.random((op.size, m), device=op.device, dtype=op.dtype,  # noqa: E731
                                     generator=generator, distribution=distribution)
    start = op.num_matvecs
    if method == "hutchinson":
        samples = _quadratic_forms(op, draw(num_matvecs))
        exact_part = 0.0
    else:
        sketch = min(num_matvecs // 3, op.dimension)
        Q = op.space.orthonormal_basis(op.matmat(draw(sketch)))
        exact_part = float(_quadratic_forms(op, Q).sum())
        G = draw(num_matvecs - 2 * sketch)
        G = G - Q @ op.space.gram(Q, G)
        samples = _quadratic_forms(op, G)
    n = samples.numel()
    stderr = float(samples.std(unbiased=True) / n**0.5) if n > 1 else float("nan")
    return TraceEstimate(exact_part + float(samples.mean()), stderr, op.num_matvecs - start)
