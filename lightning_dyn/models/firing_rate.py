"""Firing-rate networks on graphs: ``du_i/dt = −u_i + (1/N) Σ_j W_ij σ(u_j) + I_i``.

On a digraph measure the sum is ``Σ_j C_ij σ(u_j)`` with ``C`` normalised for the limit
(:meth:`FiringRateNetwork.on_digraph_measure`); the quiescent state ``u = 0`` of ``σ = tanh`` loses
stability in a pitchfork at the gain ``1/μ_max`` of the limit's kernel operator.

The same mean-field form as the Kuramoto network — unit ``i`` receives the graph average of a
function of its neighbours' states — on the same coupling machinery (``GraphCoupling``); large
graphs converge to the continuum neural field on the graphon (Kuehn & Xu, digraph measures).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..ensembles.digraph_measures import DigraphMeasure
from .coupling import GraphCoupling, Normalization


class FiringRateNetwork(nn.Module):
    """The vector field ``(t, u) ↦ −u + (1/N) W σ(u) + I``.

    Args:
        num_nodes: ``N``.
        adjacency: ``None`` (all-to-all) or an ``(N, N)`` dense/sparse weight matrix ``W``.
        activation: ``σ`` (default ``tanh``).
        external_input: ``I``, a scalar or ``(N,)`` tensor.
        gain: a scalar multiplying the coupling (the analogue of Kuramoto's ``K``), or a tensor
            broadcasting against the state — e.g. shape ``(G, 1)`` for a batch of ``G`` networks
            ``(G, N)``, one gain each (a sweep in one integration).
        normalization: ``"mean"`` (``W/N``) or ``"sum"`` (``W`` already normalised, a digraph-measure sample).
    """

    def __init__(self, num_nodes: int, adjacency: Optional[torch.Tensor] = None, *,
                 activation: Callable[[torch.Tensor], torch.Tensor] = torch.tanh,
                 external_input: float | torch.Tensor = 0.0, gain: float | torch.Tensor = 1.0,
                 normalization: Normalization = "mean") -> None:
        super().__init__()
        self.coupling_operator = GraphCoupling(num_nodes, adjacency, normalization=normalization)
        self.activation = activation
        self.register_buffer("external_input", torch.as_tensor(external_input, dtype=torch.float64))
        self.gain = gain

    @classmethod
    def on_digraph_measure(cls, num_nodes: int, measure: DigraphMeasure, *,
                           activation: Callable[[torch.Tensor], torch.Tensor] = torch.tanh,
                           external_input: float | torch.Tensor = 0.0, gain: float | torch.Tensor = 1.0,
                           **sample_kwargs) -> "FiringRateNetwork":
        """A network on ``N`` nodes sampled from ``measure`` (keywords of
        :meth:`~lightning_dyn.ensembles.DigraphMeasure.sample`), normalised for its limit."""
        network = measure.sample(num_nodes, **sample_kwargs)
        return cls(num_nodes, network.coupling, activation=activation, external_input=external_input, gain=gain,
                   normalization="sum")

    def forward(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        drive = self.gain * self.coupling_operator(self.activation(u))
        return -u + drive + self.external_input.to(u.dtype)
