"""The small base class every curvature operator derives from.

A curvature operator is a symmetric linear map ``v ↦ A v`` on flat parameter vectors of length
``size``. Solvers (:func:`~lightning_dyn.curvature.top_eigenpairs`, :func:`~lightning_dyn.curvature.trace`, :func:`~lightning_dyn.curvature.spectral_density`) only use
``matvec`` and the attributes declared below (``size``, ``device``, ``dtype``, ``space``,
``dimension``, ``relative_error``; ``parameters`` for callers that scale by the optimizer's state),
so any operator — a Hessian, a preconditioned Hessian, a dense
matrix in a test — plugs into all of them. Inner products go through the operator's ``space``
(:mod:`lightning_dyn.curvature.space`): whole vectors, or shards of them spread over the ranks of
sharded training, where ``size`` is this rank's share and ``dimension`` the whole.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .space import WHOLE, VectorSpace


class CurvatureOperator:
    """Symmetric linear operator on flat vectors.

    Subclasses implement ``_matvec``; this class counts products (``num_matvecs``), checks
    shapes, and offers ``op @ v`` and :meth:`matmat`.
    """

    size: int
    device: torch.device
    dtype: torch.dtype
    #: where the vectors live — whole on this process (default) or sharded over ranks
    space: VectorSpace = WHOLE
    #: relative accuracy of a product, ``‖Av − (Av)_computed‖ ≲ relative_error · ‖Av‖``: 0 for exact
    #: products (a dense matrix, double backward), the estimated truncation error for central
    #: differences. Solvers never promise an eigenvalue more accurate than this (Weyl: ``|Δλ| ≤ ‖E‖``).
    relative_error: float = 0.0

    @property
    def parameters(self) -> Sequence[nn.Parameter]:
        """The model parameters whose flat concatenation is the operator's space, in order (empty
        for an operator that is not about a model, e.g. a dense matrix)."""
        return ()

    @property
    def dimension(self) -> int:
        """The dimension of the space (``size`` unless the vectors are sharded)."""
        return self.size

    def __init__(self) -> None:
        self.num_matvecs = 0

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return ``A v`` for a flat vector ``v`` of length :attr:`size`."""
        if v.shape != (self.size,):
            raise ValueError(f"matvec expects a flat vector of shape ({self.size},), got {tuple(v.shape)}")
        out = self._matvec(v.to(device=self.device, dtype=self.dtype))
        self.num_matvecs += 1
        return out

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``A V`` column by column for ``V`` of shape ``(size, m)``."""
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matvec(v) if v.dim() == 1 else self.matmat(v)


class DenseOperator(CurvatureOperator):
    """A dense symmetric matrix as an operator (for tests and small problems)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"DenseOperator needs a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.size = matrix.shape[0]
        self.device = matrix.device
        self.dtype = matrix.dtype

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v


class MatrixFreeOperator(CurvatureOperator):
    """A symmetric operator given by its product ``v ↦ matvec(v)`` (small derived operators)."""

    def __init__(self, matvec: Callable[[torch.Tensor], torch.Tensor], size: int, *,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self._product = matvec
        self.size, self.device, self.dtype = size, torch.device(device), dtype

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._product(v)
