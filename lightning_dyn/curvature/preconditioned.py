"""Diagonally preconditioned curvature: ``v ↦ D A D v``.

Adaptive optimizers take steps ``Δx = −P⁻¹ m``; on a quadratic with Hessian ``H`` their stability
is governed by the *preconditioned sharpness* ``λ_max(P^{-1/2} H P^{-1/2})`` (Cohen et al. 2022,
"Adaptive gradient methods at the edge of stability", arXiv:2207.14484). Several parameter groups
with different learning rates ``η_i`` are the same construction with ``D = diag(η_i^{1/2})``:
``λ_max(η^{1/2} H η^{1/2})`` is compared against the plain-SGD threshold 2.
"""

from __future__ import annotations

import torch

from .operator import CurvatureOperator


class PreconditionedOperator(CurvatureOperator):
    """``v ↦ D A D v`` with ``D = diag(d)``, ``d`` a positive flat vector.

    Args:
        op: the symmetric operator ``A`` (usually a :class:`HessianOperator`).
        diag: the diagonal ``d`` of ``D`` (length ``op.size``). Use :meth:`from_preconditioner` to
            pass the preconditioner ``P`` itself (then ``d = P^{-1/2}``).

    The eigenvalues of ``D A D`` are those of ``P^{-1} A`` when ``D = P^{-1/2}``: the product is
    symmetric, so Lanczos applies unchanged. Each product costs one product of ``op``.
    """

    def __init__(self, op: CurvatureOperator, diag: torch.Tensor) -> None:
        super().__init__()
        if diag.shape != (op.size,):
            raise ValueError(f"diag must have shape ({op.size},), got {tuple(diag.shape)}")
        if not torch.isfinite(diag).all() or (diag < 0).any():
            raise ValueError("diag must be finite and non-negative")
        self.op = op
        self.size, self.device, self.dtype, self.space = op.size, op.device, op.dtype, op.space
        self.diag = diag.to(device=op.device, dtype=op.dtype)

    @classmethod
    def from_preconditioner(cls, op: CurvatureOperator, preconditioner: torch.Tensor) -> "PreconditionedOperator":
        """Build ``P^{-1/2} A P^{-1/2}`` from the diagonal ``P`` of a preconditioner (all entries > 0)."""
        if (preconditioner <= 0).any():
            raise ValueError("a preconditioner must be positive; add the optimizer's eps before passing it")
        return cls(op, preconditioner.rsqrt())

    @property
    def dimension(self) -> int:
        return self.op.dimension

    @property
    def relative_error(self) -> float:
        """The inner operator's relative accuracy (a diagonal scaling keeps it, to first order)."""
        return self.op.relative_error

    @property
    def parameters(self):
        """The inner operator's parameters (the scaling is coordinate-wise)."""
        return self.op.parameters

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.diag * self.op.matvec(self.diag * v)
