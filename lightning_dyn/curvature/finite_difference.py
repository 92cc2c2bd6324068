"""Hessian-vector products from gradients alone: central differences.

With ``u = v/‖v‖`` and a step ``ε``,

* order 2: ``H v ≈ ‖v‖ (∇L(θ+εu) − ∇L(θ−εu)) / 2ε`` — two gradients, truncation error
  ``(ε²/6) ∇³L[u, u, ·]``;
* order 4: ``H v ≈ ‖v‖ (−∇L(θ+2εu) + 8∇L(θ+εu) − 8∇L(θ−εu) + ∇L(θ−2εu)) / 12ε`` — four gradients,
  truncation ``O(ε⁴)``.

Only first-order backward is taken, so the product goes through what double backward cannot:
fused attention kernels, compiled modules, operations whose backward is not differentiable. The
parameters are never moved: the shifted points are *substituted* into the model for each gradient
(``HessianOperator.gradient_at``), so θ is bitwise what it was (``θ + εu − εu`` would not be).

Step. Rounding the shifted point ``θ ± εu`` to the working precision moves it by ``ε_mach |θ_i|``
per coordinate, an error ``~ ε_mach ‖θ‖/ε`` relative to the step; truncation grows like
``(ε/ℓ)²`` on the length ``ℓ`` over which the curvature changes, of the order of the parameters'
size. Balancing the two gives ``ε ∝ ε_mach^{1/3}`` for order 2 (``ε_mach^{1/5}`` for order 4)
times the parameters' root-mean-square size: ``difference_step``. In float32 (ε_mach = 1.2e-7)
that is ``ε ≈ 4.9e-3 · RMS(θ)`` for order 2 and ``0.041 · RMS(θ)`` for order 4. Measured against
float64 double backward (top eigenvalue, relative): on the digits MLP along the demo 4e-6–1e-5
(order 2) and ~1e-6 (order 4); on a GPT-2 from a config 1e-5 (both orders).
Rounding components are nearly random directions, which carry the average curvature rather
than the top one, so the top eigenvalue is more accurate than the product as a whole.

Error estimate. The first product of an operator is also taken at ``2ε``; the two differ by
about ``(2^p − 1)`` times the truncation error (``p`` the order) plus the rounding error, which
gives :attr:`HessianOperator.relative_error`, the accuracy that eigenvalue solvers do not promise
to beat.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import torch

from .space import WHOLE, VectorSpace

#: (multiple of ε, weight) of each gradient in the stencil, the sum divided by ε
STENCILS: dict[int, tuple[tuple[int, float], ...]] = {
    2: ((1, 0.5), (-1, -0.5)),
    4: ((2, -1 / 12), (1, 8 / 12), (-1, -8 / 12), (-2, 1 / 12)),
}
Order = Literal[2, 4]


#: the constant in front of the balanced step. The two models we measured pull opposite ways: on
#: the digits MLP the error is rounding-bound (4× the balance halves it), on a GPT-2 at
#: initialisation truncation-bound (4× the balance multiplies it by 30); 1 serves both
#: (``tests/curvature/test_finite_difference.py``)
STEP_FACTOR = 1.0


def difference_step(parameters: torch.Tensor, order: Order = 2, space: VectorSpace = WHOLE,
                    dimension: Optional[int] = None) -> float:
    """``ε = ε_mach^{1/(order+1)} · max(RMS(θ), 1e-3)`` for a unit direction (module docstring);
    ``parameters`` is this rank's shard of θ when ``space`` is sharded (``dimension``: all of θ)."""
    eps = torch.finfo(parameters.dtype).eps
    square = space.total(float(torch.linalg.vector_norm(parameters.double())) ** 2)
    rms = (square / max(parameters.numel() if dimension is None else dimension, 1)) ** 0.5
    return STEP_FACTOR * eps ** (1.0 / (order + 1)) * max(rms, 1e-3)


def central_difference(gradient_at: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, step: float,
                       order: Order = 2, space: VectorSpace = WHOLE) -> torch.Tensor:
    """``H v`` by the central-difference stencil of ``order`` with step ``step`` along ``v/‖v‖``;
    ``gradient_at(shift)`` returns the flat gradient at ``θ + shift`` (any function of the shift:
    the stencil differentiates it along ``v``)."""
    if order not in STENCILS:
        raise ValueError(f"order must be 2 or 4, got {order!r}")
    norm = space.norm(v)
    if float(norm) == 0.0:
        return torch.zeros_like(gradient_at(torch.zeros_like(v)))
    direction = v / norm
    total = None
    for multiple, weight in STENCILS[order]:
        value = gradient_at(direction * (multiple * step))
        total = value * weight if total is None else total.add_(value, alpha=weight)
    return total.mul_(norm / step)


def estimated_error(fine: torch.Tensor, coarse: torch.Tensor, order: Order = 2, space: VectorSpace = WHOLE) -> float:
    """Relative error of ``fine`` (step ε) from ``coarse`` (step 2ε): ``‖coarse − fine‖ / ((2^p − 1)‖fine‖)``
    — Richardson's estimate of the truncation error, which here also bounds the rounding error."""
    scale, difference = space.column_norms(torch.stack([fine, coarse - fine], dim=1)).tolist()
    if scale == 0.0:
        return 0.0
    return difference / ((2**order - 1) * scale)
