"""Kuramoto networks on graphs.

``dθ_i/dt = ω_i + (K/N) Σ_j A_ij sin(θ_j − θ_i)`` (Kuramoto 1975; on graphs and graphons:
Chiba & Medvedev 2019; Kuehn & Xu, digraph measures). With ``sin(θ_j − θ_i) =
sin θ_j cos θ_i − cos θ_j sin θ_i`` the interaction is two mean-field couplings,
``cos θ_i · (A sin θ)_i − sin θ_i · (A cos θ)_i`` (``GraphCoupling``): O(N) all-to-all — there
it is ``K·Im(Z e^{−iθ_i})`` with the complex order parameter ``Z = (1/N)Σ_j e^{iθ_j}`` — and
O(edges) on a sparse graph. The order parameter ``r = |Z|`` measures synchrony.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn
from torchdiffeq import odeint

from ..ensembles.graphs import sample_graphon
from .coupling import GraphCoupling


def order_parameter(theta: torch.Tensor) -> torch.Tensor:
    """``r = |(1/N) Σ_j e^{iθ_j}|`` over the last dimension."""
    return torch.sqrt(torch.cos(theta).mean(-1) ** 2 + torch.sin(theta).mean(-1) ** 2)


def time_averaged_order_parameter(trajectory: torch.Tensor, burn_in: float = 0.5) -> torch.Tensor:
    """``⟨r⟩``: the order parameter averaged over the saved times after the first ``burn_in``
    fraction of a trajectory of shape ``(T, ..., N)`` (transients discarded)."""
    if not 0 <= burn_in < 1:
        raise ValueError(f"burn_in must be a fraction in [0, 1), got {burn_in!r}")
    start = int(trajectory.shape[0] * burn_in)
    return order_parameter(trajectory[start:]).mean(0)


class KuramotoNetwork(nn.Module):
    """The Kuramoto vector field on a graph, an ``nn.Module`` taking ``(t, θ)``.

    Args:
        frequencies: natural frequencies ``ω``, shape ``(N,)`` (shared by a batch) or ``(B, N)``.
        coupling: ``K``.
        adjacency: ``None`` (all-to-all, O(N) per evaluation), or an ``(N, N)`` dense or
            ``torch.sparse`` matrix (e.g. from :func:`lightning_dyn.ensembles.sample_graphon`).
        learn_coupling: make ``K`` a trainable parameter.
        learn_frequencies: make ``ω`` a trainable parameter.
        learn_adjacency: make a dense ``A`` a trainable parameter.

    ``θ`` has shape ``(N,)`` or ``(B, N)`` (independent systems sharing the graph). Use it as the
    vector field of an ODE solver (``torchdiffeq.odeint(net, θ0, t)``), or :meth:`simulate`.
    """

    def __init__(
        self,
        frequencies: torch.Tensor,
        coupling: float,
        adjacency: Optional[torch.Tensor] = None,
        *,
        learn_coupling: bool = False,
        learn_frequencies: bool = False,
        learn_adjacency: bool = False,
    ) -> None:
        super().__init__()
        if frequencies.dim() not in (1, 2):
            raise ValueError(f"frequencies must have shape (N,) or (B, N), got {tuple(frequencies.shape)}")
        n = frequencies.shape[-1]
        self.coupling_operator = GraphCoupling(n, adjacency, learnable=learn_adjacency)
        dtype = frequencies.dtype
        omega = frequencies.clone()
        k = torch.as_tensor(float(coupling), dtype=dtype, device=frequencies.device)
        if learn_frequencies:
            self.frequencies = nn.Parameter(omega)
        else:
            self.register_buffer("frequencies", omega)
        if learn_coupling:
            self.coupling = nn.Parameter(k)
        else:
            self.register_buffer("coupling", k)

    @classmethod
    def on_graphon(cls, frequencies: torch.Tensor, coupling: float, graphon, *,
                   sampling: str = "random", sparse: bool = False, generator: Optional[torch.Generator] = None,
                   **kwargs) -> "KuramotoNetwork":
        """A network on an ``N``-node graph sampled from ``graphon`` (see :func:`~lightning_dyn.ensembles.sample_graphon`)."""
        A = sample_graphon(graphon, frequencies.shape[-1], sampling=sampling, sparse=sparse, generator=generator,
                           dtype=frequencies.dtype)
        return cls(frequencies, coupling, A, **kwargs)

    @property
    def num_nodes(self) -> int:
        return self.coupling_operator.num_nodes

    def forward(self, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        s, c = torch.sin(theta), torch.cos(theta)
        if self.coupling_operator.all_to_all:  # K·Im(Z e^{−iθ_i}), Z = mean e^{iθ}: O(N)
            mean_s, mean_c = s.mean(-1, keepdim=True), c.mean(-1, keepdim=True)
        else:
            mean_s, mean_c = self.coupling_operator(torch.stack((s, c)))  # one pass over A for both
        interaction = c * mean_s - s * mean_c
        return self.frequencies + self.coupling * interaction

    def simulate(
        self,
        theta0: torch.Tensor,
        t_span: Union[Sequence[float], torch.Tensor] = (0.0, 100.0),
        *,
        step_size: float = 0.05,
        method: str = "rk4",
        num_saves: int = 201,
        **odeint_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate from ``θ0`` over ``t_span`` with torchdiffeq (fixed-step RK4 by default).

        Returns the save times ``(T,)`` and the phases ``(T, *θ0.shape)``; the solver steps at
        ``step_size`` regardless of how many times are saved.
        """
        t0, t1 = float(t_span[0]), float(t_span[-1])
        if not t1 > t0:
            raise ValueError(f"t_span must increase, got {tuple(t_span)}")
        t = torch.linspace(t0, t1, num_saves, dtype=theta0.dtype, device=theta0.device)
        options = {"step_size": step_size} if method in ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams") else {}
        options.update(odeint_kwargs.pop("options", {}))
        return t, odeint(self, theta0, t, method=method, options=options, **odeint_kwargs)
