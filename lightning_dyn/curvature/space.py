"""The space flat parameter vectors live in: inner products, norms and random draws.

A solver never calls ``torch.dot`` itself; it asks the operator's :class:`VectorSpace`. Two kinds:

* :class:`VectorSpace` — every process holds whole vectors (one process, or DDP, where parameters
  and so products are replicated on every rank): ``⟨x, y⟩ = Σ_i x_i y_i`` locally;
* :class:`ShardedSpace` — each rank holds a *shard* of every vector, the entries of its own
  parameter shards (FSDP2's ``fully_shard``: DTensor parameters ``Shard(0)`` over the ranks).
  Then ``⟨x, y⟩ = Σ_ranks Σ_{i ∈ shard} x_i y_i``, one all-reduce for any number of inner products
  taken together (:meth:`VectorSpace.dots`); random vectors are drawn independently on each rank
  (a generator per rank, seeded by one draw of the shared one, so the shared generator advances
  alike everywhere and the global vector has independent entries — a Hutchinson probe whose
  shards repeated each other would be biased).

Every scalar a solver decides on comes out of an all-reduce, so every rank takes the same
decisions and the same number of products — which a sharded product, itself collective, needs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist

from ..sampling import Distribution, random_vectors


class VectorSpace:
    """Flat vectors held whole by this process: the Euclidean inner product, computed locally."""

    sharded = False

    def dots(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``[⟨x, y⟩ for x, y in pairs]`` as one tensor (one reduction across ranks when sharded)."""
        return self._reduce(torch.stack([torch.dot(x, y) for x, y in pairs]))

    def dot(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.dots([(x, y)])[0]

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """``‖x‖``, a 0-dim tensor."""
        return self.column_norms(x[:, None])[0]

    def column_norms(self, X: torch.Tensor) -> torch.Tensor:
        """The norm of each column of ``X`` (shape ``(size, m)``)."""
        return torch.linalg.vector_norm(X, dim=0)

    def gram(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """``XᵀY`` for column blocks ``X`` and ``Y``."""
        return self._reduce(X.T @ Y)

    def orthonormal_basis(self, X: torch.Tensor) -> torch.Tensor:
        """An orthonormal basis of the columns of ``X`` (QR, or CholeskyQR2 when sharded)."""
        return torch.linalg.qr(X)[0]

    def total(self, value: float) -> float:
        """``value`` summed over the ranks that share the vectors (itself when whole)."""
        return value

    def all_finite(self, x: torch.Tensor) -> bool:
        """Whether every entry of ``x`` is finite, on every rank."""
        return self.total(0.0 if bool(torch.isfinite(x).all()) else 1.0) == 0.0

    def random(self, shape: tuple[int, ...], *, device: torch.device, dtype: torch.dtype,
               generator: torch.Generator, distribution: Distribution = "gaussian") -> torch.Tensor:
        """Random vectors (``shape[0]`` entries each, on this rank) with independent entries."""
        return random_vectors(shape, device=device, dtype=dtype, generator=generator, distribution=distribution)

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        return t


#: the space of every operator on whole vectors
WHOLE = VectorSpace()


class ShardedSpace(VectorSpace):
    """Vectors sharded over the ranks of ``group``: each rank holds disjoint entries (module docstring).

    Args:
        group: the process group the shards are spread over (default: the default group).
    """

    sharded = True

    def __init__(self, group: Optional[dist.ProcessGroup] = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        t = t.contiguous()
        dist.all_reduce(t, group=self.group)
        return t

    def total(self, value: float) -> float:
        return float(self._reduce(torch.tensor([value], dtype=torch.float64)))

    def column_norms(self, X: torch.Tensor) -> torch.Tensor:
        return self._reduce(X.square().sum(dim=0)).sqrt()

    def orthonormal_basis(self, X: torch.Tensor) -> torch.Tensor:
        """CholeskyQR2 (Fukaya et al. 2014): ``R = chol(XᵀX)``, ``Q = XR⁻¹``, twice — one all-reduce
        each, and orthonormal to working precision for the well-conditioned sketches it serves."""
        for _ in range(2):
            G = self.gram(X, X).double()
            R = torch.linalg.cholesky(G + torch.finfo(X.dtype).eps * G.diagonal().max() * torch.eye(len(G), dtype=G.dtype,
                                                                                               device=G.device)).T
            X = torch.linalg.solve_triangular(R.to(X.dtype), X, upper=True, left=False)
        return X

    def random(self, shape: tuple[int, ...], *, device: torch.device, dtype: torch.dtype,
               generator: torch.Generator, distribution: Distribution = "gaussian") -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))  # the shared stream advances alike
        own = torch.Generator().manual_seed((seed + 0x9E3779B97F4A7C15 * (self.rank + 1)) % 2**62)
        return random_vectors(shape, device=device, dtype=dtype, generator=own, distribution=distribution)
