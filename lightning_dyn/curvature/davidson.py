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
its images ``AQ`` (two vectors per product; a warm solve takes a handful). The small matrices
``QᵀAQ`` and ``(AQ)ᵀAQ`` grow by one row per product (``3m`` dot products, one host sync), so Ritz
values and every residual norm come without extra products, and the kept Ritz vectors and their
residuals are accumulated column by column — the basis is never stacked into a matrix.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from .space import WHOLE, VectorSpace


class DavidsonIteration:
    """Call :meth:`expand` until satisfied; :meth:`ritz` gives the current Ritz pairs.

    Args:
        matvec: the symmetric operator's product.
        block: the start directions, shape ``(size, b)``; columns that are zero, non-finite or
            dependent on the others are dropped (random ones replace them, so the block keeps ``b``).
        generator: for those replacements and for a restart when the residual lies in the basis.
    """

    def __init__(self, matvec: Callable[[torch.Tensor], torch.Tensor], block: torch.Tensor, *,
                 generator: torch.Generator, space: VectorSpace = WHOLE, dimension: Optional[int] = None) -> None:
        self.matvec = matvec
        self.space = space
        self.size = block.shape[0]  # entries held here
        self.dimension = self.size if dimension is None else dimension
        self.generator = generator
        self._Q: list[torch.Tensor] = []
        self._AQ: list[torch.Tensor] = []
        self._T = np.zeros((0, 0))  # QᵀAQ
        self._G = np.zeros((0, 0))  # (AQ)ᵀAQ
        self._S = np.zeros((0, 0))  # the eigenvectors of QᵀAQ at the last Rayleigh–Ritz step
        self.exhausted = False
        for column in block.T:
            self._add(column.clone())
        while len(self._Q) < min(block.shape[1], self.dimension):
            self._add(self._random(block))

    @property
    def num_matvecs(self) -> int:
        return len(self._AQ)

    def _random(self, like: torch.Tensor) -> torch.Tensor:
        return self.space.random((self.size,), device=like.device, dtype=like.dtype, generator=self.generator)

    def _add(self, w: torch.Tensor) -> bool:
        """Orthonormalise ``w`` against the basis and take its product; False if nothing was left."""
        if not self.space.all_finite(w):
            return False
        norm = self.space.norm(w)
        for _ in range(2):  # classical Gram–Schmidt, twice: one reduction a pass
            for q, c in zip(self._Q, self.space.dots([(q, w) for q in self._Q]) if self._Q else []):
                w.sub_(q * c)
        left = self.space.norm(w)
        if not float(left) > 1e-3 * float(norm) or float(norm) == 0.0:
            return False
        w.div_(left)
        image = self.matvec(w)
        if not self.space.all_finite(image):
            raise FloatingPointError(f"the operator returned a non-finite product (step {len(self._AQ) + 1} of a "
                                     "warm solve); the model or the loss produces NaN/Inf at these parameters")
        self._Q.append(w)
        self._AQ.append(image)
        self._grow(w, image)
        self.exhausted = len(self._Q) >= self.dimension
        return True

    def _grow(self, q: torch.Tensor, image: torch.Tensor) -> None:
        """Add the new row and column of ``QᵀAQ`` (symmetrised) and ``(AQ)ᵀAQ``."""
        dots = self.space.dots([(a, image) for a in self._Q] + [(q, a) for a in self._AQ] + [(a, image) for a in self._AQ])
        m = len(self._Q)
        values = dots.double().cpu().numpy()
        t = (values[:m] + values[m:2 * m]) / 2
        T, G = np.zeros((m, m)), np.zeros((m, m))
        T[: m - 1, : m - 1], G[: m - 1, : m - 1] = self._T, self._G
        T[m - 1, :], T[:, m - 1] = t, t
        G[m - 1, :], G[:, m - 1] = values[2 * m:], values[2 * m:]
        self._T, self._G = T, G

    def ritz(self, keep: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Ritz values (descending), every residual norm, and the first ``keep`` residual vectors
        ``AQs − θQs`` (columns; the Ritz vectors themselves: :meth:`ritz_vectors`)."""
        theta, S = np.linalg.eigh(self._T)
        theta, S = theta[::-1].copy(), S[:, ::-1].copy()
        self._S = S
        q0 = self._Q[0]
        # built row-major, one contiguous pass a basis vector and a column, returned transposed
        R = torch.empty((keep, self.size), device=q0.device, dtype=q0.dtype)
        for j in range(keep):
            for i, (q, image) in enumerate(zip(self._Q, self._AQ)):
                if i == 0:
                    torch.add(image, q, alpha=-float(theta[j]), out=R[j]).mul_(float(S[i, j]))
                else:
                    R[j].add_(image, alpha=float(S[i, j])).add_(q, alpha=-float(S[i, j] * theta[j]))
        R = R.T
        residuals = np.empty(len(theta))
        residuals[:keep] = self.space.column_norms(R).double().cpu().numpy()
        if keep < len(theta):  # the rest only widen gaps: ‖AQs‖² − θ² is accurate enough there
            rest = S[:, keep:]
            residuals[keep:] = np.sqrt(np.maximum(np.einsum("ij,ik,kj->j", rest, self._G, rest) - theta[keep:] ** 2,
                                                  0.0))
        return theta, residuals, R

    def ritz_vectors(self, n: int) -> torch.Tensor:
        """The first ``n`` Ritz vectors of the last :meth:`ritz` call, as columns ``Qs``."""
        q0 = self._Q[0]
        Y = torch.zeros((n, self.size), device=q0.device, dtype=q0.dtype)
        for j in range(n):
            for i, q in enumerate(self._Q):
                Y[j].add_(q, alpha=float(self._S[i, j]))
        return Y.T

    def expand(self, residual: torch.Tensor) -> None:
        """Add ``residual`` to the basis (one product); a random direction if it lies in the basis."""
        if self.exhausted:
            return
        if not self._add(residual.clone()):
            while not self.exhausted and not self._add(self._random(residual)):
                pass
