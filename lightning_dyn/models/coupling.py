"""Mean-field coupling on a graph: ``x ↦ (1/N) A x``, all-to-all in O(N).

Kuramoto-type and firing-rate networks share one interaction: unit ``i`` receives
``(1/N) Σ_j A_ij x_j`` — the graphon normalisation — or, with ``normalization="sum"``,
``Σ_j C_ij x_j`` for a coupling matrix already normalised for its limit (a network sampled from a
digraph measure, whose degrees may stay bounded as ``N`` grows). For all-to-all coupling (``A`` the all-ones matrix) that is the mean
``(1/N) Σ_j x_j`` — computed in O(N), never as an N×N matrix; a dense ``A`` is a matrix
product, a ``torch.sparse`` ``A`` a sparse product with memory O(edges).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn


Normalization = Literal["mean", "sum"]


class GraphCoupling(nn.Module):
    """``x ↦ (1/N) A x`` (or ``A x``) along the last dimension of ``x`` (shape ``(..., N)``).

    Args:
        num_nodes: ``N``.
        adjacency: ``None`` for all-to-all, or an ``(N, N)`` dense or sparse (COO/CSR) tensor with
            ``A_ij`` the weight of the edge j → i.
        learnable: make a dense ``A`` an ``nn.Parameter``.
        normalization: ``"mean"`` divides by ``N`` (graphs and graphons); ``"sum"`` uses ``A`` as
            given (digraph measures: :meth:`lightning_dyn.ensembles.DigraphMeasure.sample`).
    """

    def __init__(self, num_nodes: int, adjacency: Optional[torch.Tensor] = None, *, learnable: bool = False,
                 normalization: Normalization = "mean") -> None:
        super().__init__()
        if not isinstance(num_nodes, int) or num_nodes < 2:
            raise ValueError(f"num_nodes must be an integer >= 2, got {num_nodes!r}")
        if normalization not in ("mean", "sum"):
            raise ValueError(f"normalization must be 'mean' or 'sum', got {normalization!r}")
        if normalization == "sum" and adjacency is None:
            raise ValueError("normalization='sum' needs an adjacency (all-to-all coupling is the mean)")
        self.num_nodes = num_nodes
        self.normalization = normalization
        if adjacency is not None:
            if adjacency.dim() != 2 or adjacency.shape[0] != adjacency.shape[1]:
                raise ValueError(f"adjacency must be a square (N, N) matrix, got shape {tuple(adjacency.shape)}")
            if adjacency.shape[0] != num_nodes:
                raise ValueError(f"adjacency is {adjacency.shape[0]}×{adjacency.shape[0]} but there are {num_nodes} nodes")
            if learnable and adjacency.is_sparse:
                raise ValueError("a learnable adjacency must be dense")
        self.sparse = adjacency is not None and (adjacency.is_sparse or adjacency.layout != torch.strided)
        if adjacency is None:
            self.adjacency = None
        elif learnable:
            self.adjacency = nn.Parameter(adjacency)
        else:
            self.register_buffer("adjacency", adjacency)

    @property
    def all_to_all(self) -> bool:
        return self.adjacency is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.num_nodes:
            raise ValueError(f"expected {self.num_nodes} nodes in the last dimension, got {x.shape[-1]}")
        if self.adjacency is None:
            return x.mean(dim=-1, keepdim=True).expand_as(x)
        flat = x.reshape(-1, self.num_nodes).T  # (N, batch)
        if self.sparse:
            out = torch.sparse.mm(self.adjacency, flat)
        else:
            out = self.adjacency @ flat
        out = out.T if self.normalization == "sum" else out.T / self.num_nodes
        return out.reshape(x.shape)
