"""Graphs from graph limits (graphons): sampling N-node graphs and the graphon's top eigenvalue.

A graphon ``W: [0,1]² → [0,1]`` is the limit of dense graph sequences; node ``i`` sits at
``x_i`` and ``A_ij`` is ``W(x_i, x_j)`` (*deterministic*, a weighted graph) or
``Bernoulli(W(x_i, x_j))`` (*random*). Kuramoto networks on such graphs converge to the
mean-field equation on the graphon (Medvedev 2014; Chiba & Medvedev 2019), whose
synchronisation threshold involves ``λ_max`` of the integral operator
``(Tf)(x) = ∫₀¹ W(x, y) f(y) dy`` (``graphon_top_eigenvalue``).
``W`` is a Python function of two broadcastable tensors.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import torch

from .digraph_measures import DigraphMeasure

Graphon = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def erdos_renyi(p: float) -> Graphon:
    """``W ≡ p`` (Erdős–Rényi)."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    return lambda x, y: torch.full(torch.broadcast_shapes(x.shape, y.shape), p, dtype=x.dtype)


def small_world(p: float, q: float, radius: float) -> Graphon:
    """``W = p`` within circular distance ``radius``, ``q`` beyond (Medvedev's small-world graphon)."""
    if not (0 <= q <= p <= 1 and 0 < radius <= 0.5):
        raise ValueError("small_world needs 0 <= q <= p <= 1 and 0 < radius <= 0.5")

    def W(x, y):
        d = torch.abs(x - y)
        d = torch.minimum(d, 1 - d)
        return torch.where(d <= radius, torch.as_tensor(p, dtype=x.dtype), torch.as_tensor(q, dtype=x.dtype))

    return W


def _positions(n: int, placement: str, generator: torch.Generator) -> torch.Tensor:
    if placement == "grid":
        return (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.rand(n, generator=generator, dtype=torch.float64)


def sample_graphon(
    W: Graphon,
    num_nodes: int,
    *,
    sampling: Literal["deterministic", "random"] = "random",
    directed: bool = False,
    positions: Literal["grid", "uniform"] = "grid",
    sparse: bool = False,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """An ``(N, N)`` adjacency matrix from the graphon ``W`` (no self-loops).

    Args:
        W: the graphon.
        num_nodes: ``N`` (≥ 2).
        sampling: ``"deterministic"`` (weights ``W(x_i, x_j)``) or ``"random"`` (``Bernoulli``).
        directed: sample ``A_ij`` and ``A_ji`` independently (``sampling="random"``).
        positions: ``x_i`` on the midpoint grid or uniform at random.
        sparse: return a ``torch.sparse_csr`` matrix (memory O(edges) once built).
        generator: private generator (default: seed 0).
    """
    if not isinstance(num_nodes, int) or num_nodes < 2:
        raise ValueError(f"num_nodes must be an integer >= 2, got {num_nodes!r}")
    if sampling not in ("deterministic", "random"):
        raise ValueError(f"sampling must be 'deterministic' or 'random', got {sampling!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x = _positions(num_nodes, positions, g)
    weights = W(x[:, None], x[None, :]).to(torch.float64)
    if weights.shape != (num_nodes, num_nodes):
        raise ValueError(f"the graphon must broadcast to (N, N), got shape {tuple(weights.shape)}")
    if sampling == "random":
        if weights.min() < 0 or weights.max() > 1 or not torch.isfinite(weights).all():
            raise ValueError("a graphon sampled as Bernoulli probabilities must take values in [0, 1]")
        A = (torch.rand(weights.shape, generator=g, dtype=torch.float64) < weights).to(torch.float64)
        if not directed:
            A = torch.triu(A, diagonal=1)
            A = A + A.T
    else:
        A = weights.clone()
    A.fill_diagonal_(0)
    A = A.to(dtype)
    return A.to_sparse_csr() if sparse else A


def erdos_renyi_sparse(num_nodes: int, mean_degree: float, *, generator: Optional[torch.Generator] = None,
                       dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A large undirected Erdős–Rényi graph as a sparse CSR matrix, built in O(edges) memory:
    ``M ≈ N·d/2`` uniformly random pairs (duplicates and self-loops dropped)."""
    if not isinstance(num_nodes, int) or num_nodes < 2:
        raise ValueError(f"num_nodes must be an integer >= 2, got {num_nodes!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    m = int(round(num_nodes * mean_degree / 2))
    pairs = torch.randint(0, num_nodes, (2, m), generator=g)
    pairs = pairs[:, pairs[0] != pairs[1]]
    both = torch.cat([pairs, pairs.flip(0)], dim=1)
    A = torch.sparse_coo_tensor(both, torch.ones(both.shape[1], dtype=dtype), (num_nodes, num_nodes),
                                check_invariants=True).coalesce()
    A = torch.sparse_coo_tensor(A.indices(), torch.ones_like(A.values()), A.shape, check_invariants=True)  # duplicates → weight 1
    return A.to_sparse_csr()


def graphon_top_eigenvalue(W: Graphon, num_points: int = 2000) -> float:
    """``λ_max`` of ``(Tf)(x) = ∫₀¹ W(x, y) f(y) dy`` by the midpoint (Nyström) rule on ``num_points``
    nodes: the eigenvalues of ``[W(x_i, x_j)/n]``; the largest real part for a directed graphon
    (:meth:`DigraphMeasure.top_eigenvalue <lightning_dyn.ensembles.DigraphMeasure.top_eigenvalue>` of
    the measure ``W(x, y) dy``)."""
    return DigraphMeasure.kernel(W).top_eigenvalue(num_points)


__all__ = ["Graphon", "erdos_renyi", "erdos_renyi_sparse", "graphon_top_eigenvalue", "sample_graphon", "small_world"]
