"""A block-started subspace method for warm starts: Rayleigh–Ritz, expanded by residuals.

A warm start knows several directions — the previous solve's top Ritz vectors and a guard — and
at the edge of stability the top eigenvalues lie within 1% and exchange places between
measurements: the new top eigenvector is then mostly the *previous second* one. A single Lanczos
vector built from them (their sum) must first separate the two inside its Krylov space, which is
slow exactly when they are close. Starting from the *block* of them instead, the first
Rayleigh–Ritz step already resolves the pair, and each further step adds the residual
``r = A y − θ y`` of the Ritz pair least converged (Davidson's method without a preconditioner,
Davidson 1975; Saad, *Numerical Methods for Large Eigenvalue Problems*, §11.2): a block start,
then one product per step.

The basis ``Q`` is orthonormal (classical Gram–Schmidt twice, Giraud et al. 2005) and kept with
its images ``AQ`` (two vectors per product; a warm solve takes a handful), so Ritz values come from
the small matrix ``QᵀAQ`` (float64, on the host) and residuals without extra products.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ._random import random_vectors


class DavidsonIteration:
    """Call :meth:`expand` until satisfied; :meth:`ritz` gives the current Ritz pairs.

    Args:
        matvec: the symmetric operator's product.
        block: the start directions, shape ``(size, b)``; columns that are zero, non-finite or
            dependent on the others are dropped (random ones replace them, so the block keeps ``b``).
        generator: for those replacements and for a restart when the residual lies in the basis.
    """

    def __init__(self, matvec: Callable[[torch.Tensor], torch.Tensor], block: torch.Tensor, *,
                 generator: torch.Generator) -> None:
        self.matvec = matvec
        self.size = block.shape[0]
        self.generator = generator
        self._Q: list[torch.Tensor] = []
        self._AQ: list[torch.Tensor] = []
        self.exhausted = False
        for column in block.T:
            self._add(column.clone())
        while len(self._Q) < min(block.shape[1], self.size):
            self._add(self._random(block))

    @property
    def num_matvecs(self) -> int:
        return len(self._AQ)

    def _random(self, like: torch.Tensor) -> torch.Tensor:
        return random_vectors((self.size,), device=like.device, dtype=like.dtype, generator=self.generator)

    def _add(self, w: torch.Tensor) -> bool:
        """Orthonormalise ``w`` against the basis and take its product; False if nothing was left."""
        if not torch.isfinite(w).all():
            return False
        norm = torch.linalg.vector_norm(w)
        for _ in range(2):
            for q in self._Q:
                w.sub_(q * torch.dot(q, w))
        left = torch.linalg.vector_norm(w)
        if not float(left) > 1e-3 * float(norm) or float(norm) == 0.0:
            return False
        w.div_(left)
        image = self.matvec(w)
        if not torch.isfinite(image).all():
            raise FloatingPointError(f"the operator returned a non-finite product (step {len(self._AQ) + 1} of a "
                                     "warm solve); the model or the loss produces NaN/Inf at these parameters")
        self._Q.append(w)
        self._AQ.append(image)
        self.exhausted = len(self._Q) >= self.size
        return True

    def ritz(self, keep: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray, torch.Tensor]:
        """Ritz values (descending), the first ``keep`` Ritz vectors, every residual norm, and the
        first ``keep`` residual vectors."""
        Q, AQ = torch.stack(self._Q, 1), torch.stack(self._AQ, 1)
        T = (Q.T @ AQ).double().cpu().numpy()
        theta, S = np.linalg.eigh((T + T.T) / 2)
        theta, S = theta[::-1].copy(), S[:, ::-1].copy()
        S_keep = torch.as_tensor(S[:, :keep], device=Q.device, dtype=Q.dtype)
        Y = Q @ S_keep
        R = AQ @ S_keep - Y * torch.as_tensor(theta[:keep], device=Q.device, dtype=Q.dtype)
        residuals = np.empty(len(theta))
        residuals[:keep] = torch.linalg.vector_norm(R, dim=0).double().cpu().numpy()
        if keep < len(theta):  # the rest only widen gaps: ‖AQs‖² − θ² is accurate enough there
            G = (AQ.T @ AQ).double().cpu().numpy()
            rest = S[:, keep:]
            residuals[keep:] = np.sqrt(np.maximum(np.einsum("ij,ik,kj->j", rest, G, rest) - theta[keep:] ** 2, 0.0))
        return theta, Y, residuals, R

    def expand(self, residual: torch.Tensor) -> None:
        """Add ``residual`` to the basis (one product); a random direction if it lies in the basis."""
        if self.exhausted:
            return
        if not self._add(residual.clone()):
            while not self.exhausted and not self._add(self._random(residual)):
                pass
