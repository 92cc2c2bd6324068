"""Lanczos with full reorthogonalisation, run on the operator's device.

For a symmetric ``A`` and a unit start vector ``q₁``, Lanczos builds an orthonormal basis
``Q_m = [q₁ … q_m]`` of the Krylov space ``K_m(A, q₁)`` with ``Q_mᵀ A Q_m = T_m`` tridiagonal
(diagonal ``α``, off-diagonal ``β``). The eigenpairs ``(θ_i, s_i)`` of ``T_m`` give Ritz pairs
``(θ_i, Q_m s_i)`` whose residual is ``‖A y_i − θ_i y_i‖ = β_m |s_i[m]|`` — known without an
extra product (Golub & Van Loan, *Matrix Computations*, §10.1; Parlett, *The Symmetric Eigenvalue
Problem*, §13). The basis lives on the device; only ``α_j, β_j`` (two scalars a step) come to the
host, where scipy solves the tiny tridiagonal eigenproblem.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import scipy.linalg
import torch

from .space import WHOLE, VectorSpace


class LanczosIteration:
    """Incremental Lanczos: call :meth:`step` until satisfied, read :meth:`ritz`.

    Every step costs one product. Full reorthogonalisation (classical Gram–Schmidt applied
    twice) keeps the basis orthonormal to working precision, so no spurious copies of converged
    eigenvalues appear. On breakdown (``β ≈ 0``: the Krylov space is invariant) the iteration
    continues, when ``restart`` is set, from a random vector orthogonal to the basis, so repeated
    eigenvalues and start vectors that miss part of the spectrum are still handled.

    Memory: the basis is a list of the ``m`` vectors built so far, nothing preallocated, and the
    orthogonalisation works in place (``addcmul_`` with on-device coefficients: no temporaries of
    the vector's size, no host sync); one host sync a step fetches ``α`` and ``β``.
    """

    def __init__(
        self,
        matvec: Callable[[torch.Tensor], torch.Tensor],
        start: torch.Tensor,
        *,
        max_steps: int,
        generator: torch.Generator,
        restart: bool = True,
        space: VectorSpace = WHOLE,
        dimension: Optional[int] = None,
    ) -> None:
        self.matvec = matvec
        self.space = space
        self.size = start.numel()  # entries held here
        self.dimension = self.size if dimension is None else dimension
        self.max_steps = min(max_steps, self.dimension)
        self.generator = generator
        self.restart = restart
        norm = space.norm(start)
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError("the Lanczos start vector must be finite and non-zero")
        self._basis: list[torch.Tensor] = [start / norm]
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples q_j and q_{j+1}; beta[-1] is the current residual norm
        self.exhausted = False  # the whole space has been spanned (or breakdown without restart)
        self.restarted = False  # the last step broke down and a fresh block began

    @property
    def num_steps(self) -> int:
        return len(self.alpha)

    def _orthogonalise(self, w: torch.Tensor) -> torch.Tensor:
        """Remove from ``w`` (in place) its components along the basis: CGS2, twice is enough
        (Giraud, Langou & Rozložník 2005)."""
        for _ in range(2):
            coefficients = self.space.dots([(q, w) for q in self._basis])
            for q, c in zip(self._basis, coefficients):
                w.addcmul_(q, c, value=-1)
        return w

    def step(self) -> None:
        """One product ``A q_m``, one new column of ``T``."""
        if self.exhausted or self.num_steps >= self.max_steps:
            raise RuntimeError("Lanczos cannot take more steps")
        j = self.num_steps
        self.restarted = False
        q = self._basis[j]
        w = self.matvec(q)  # a fresh tensor (operators return new tensors); modified in place below
        alpha = self.space.dot(q, w)
        w = self._orthogonalise(w)
        beta = self.space.norm(w)
        a, b = torch.stack((alpha, beta)).tolist()  # the one host sync of the step
        if not (np.isfinite(a) and np.isfinite(b)):
            raise FloatingPointError(
                f"the operator returned a non-finite product at Lanczos step {j + 1} (alpha={a}, beta={b}); "
                "the model or the loss produces NaN/Inf at these parameters"
            )
        self.alpha.append(a)
        scale = max(abs(x) for x in self.alpha) + max(self.beta, default=0.0)
        if j + 1 >= self.dimension:
            self.exhausted = True
            self.beta.append(0.0)
            return
        if b > torch.finfo(w.dtype).eps ** (2 / 3) * scale:
            self.beta.append(b)
            self._basis.append(w.div_(beta))
            return
        # breakdown: K_m is invariant
        self.beta.append(0.0)
        if not self.restart:
            self.exhausted = True
            return
        self.restarted = True
        fresh = self.space.random((self.size,), device=w.device, dtype=w.dtype, generator=self.generator)
        fresh = self._orthogonalise(fresh)
        self._basis.append(fresh.div_(self.space.norm(fresh)))

    def tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.num_steps
        return np.asarray(self.alpha, dtype=np.float64), np.asarray(self.beta[: m - 1], dtype=np.float64)

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), eigenvectors ``S`` of ``T_m`` and residual norms ``β_m |S[m−1, i]|``."""
        d, e = self.tridiagonal()
        if len(d) == 1:
            theta, S = d.copy(), np.ones((1, 1))
        else:
            theta, S = scipy.linalg.eigh_tridiagonal(d, e)
        residuals = abs(self.beta[-1]) * np.abs(S[-1, :])
        return theta, S, residuals

    def ritz_vectors(self, S: np.ndarray) -> torch.Tensor:
        """``Q_m S`` for selected columns ``S`` (shape ``(m, j)``): the Ritz vectors, shape ``(size, j)``,
        accumulated by rank-one updates (no copy of the basis)."""
        q0 = self._basis[0]
        S_t = torch.as_tensor(S, device=q0.device, dtype=q0.dtype)
        Y = torch.zeros((self.size, S_t.shape[1]), device=q0.device, dtype=q0.dtype)
        for q, row in zip(self._basis, S_t):
            Y.addr_(q, row)
        return Y
