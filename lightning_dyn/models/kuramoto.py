"""Kuramoto networks on graphs, graphons and digraph measures, with or without noise.

``dθ_i = (ω_i + (K/N) Σ_j A_ij sin(θ_j − θ_i)) dt + √(2D) dW_i`` (Kuramoto 1975; on graphs and
graphons: Chiba & Medvedev 2019; on digraph measures, where the sum is ``Σ_j C_ij sin(θ_j − θ_i)``
with a coupling ``C`` normalised for its limit: Kuehn & Xu 2022). With noise ``D > 0`` the network
is integrated by Euler–Maruyama or stochastic Heun (:func:`~lightning_dyn.models.sdeint_additive`). With ``sin(θ_j − θ_i) =
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

from ..ensembles.digraph_measures import DigraphMeasure
from ..ensembles.graphs import sample_graphon
from .coupling import GraphCoupling, Normalization
from .stochastic import SDE_METHODS, sdeint_additive


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
        coupling: ``K``, a number or a tensor broadcasting against the state (shape ``(B, 1)``:
            one coupling per system of a batch, a sweep in one integration).
        adjacency: ``None`` (all-to-all, O(N) per evaluation), or an ``(N, N)`` dense or
            ``torch.sparse`` matrix (e.g. from :func:`lightning_dyn.ensembles.sample_graphon`).
        normalization: ``"mean"`` (``K/N``, graphs and graphons) or ``"sum"`` (the matrix is already
            normalised, as a sample of a digraph measure; see :meth:`on_digraph_measure`).
        noise: ``D ≥ 0``, the noise intensity: each phase gets ``√(2D) dW_i``.
        learn_coupling: make ``K`` a trainable parameter.
        learn_frequencies: make ``ω`` a trainable parameter.
        learn_adjacency: make a dense ``A`` a trainable parameter.

    ``θ`` has shape ``(N,)`` or ``(B, N)`` (independent systems sharing the graph). ``forward`` is
    the drift: use it as the vector field of an ODE solver (``torchdiffeq.odeint(net, θ0, t)``), or
    :meth:`simulate`, which adds the noise.
    """

    def __init__(
        self,
        frequencies: torch.Tensor,
        coupling: Union[float, torch.Tensor],
        adjacency: Optional[torch.Tensor] = None,
        *,
        normalization: Normalization = "mean",
        noise: float = 0.0,
        learn_coupling: bool = False,
        learn_frequencies: bool = False,
        learn_adjacency: bool = False,
    ) -> None:
        super().__init__()
        if frequencies.dim() not in (1, 2):
            raise ValueError(f"frequencies must have shape (N,) or (B, N), got {tuple(frequencies.shape)}")
        if not float(noise) >= 0:
            raise ValueError(f"noise must be a non-negative intensity D, got {noise!r}")
        n = frequencies.shape[-1]
        self.coupling_operator = GraphCoupling(n, adjacency, learnable=learn_adjacency, normalization=normalization)
        self.noise = float(noise)
        dtype = frequencies.dtype
        omega = frequencies.clone()
        k = torch.as_tensor(coupling, dtype=dtype, device=frequencies.device).clone()
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

    @classmethod
    def on_digraph_measure(cls, frequencies: torch.Tensor, coupling: Union[float, torch.Tensor], measure: DigraphMeasure,
                           *, noise: float = 0.0, learn_coupling: bool = False, learn_frequencies: bool = False,
                           **sample_kwargs) -> "KuramotoNetwork":
        """A network on ``N`` nodes sampled from a digraph measure
        (:meth:`~lightning_dyn.ensembles.DigraphMeasure.sample`, whose keywords ``sample_kwargs``
        takes), coupled with the normalisation its limit needs. All-to-all ``dη_x = dy`` uses the
        O(N) mean and no matrix."""
        options = dict(noise=noise, learn_coupling=learn_coupling, learn_frequencies=learn_frequencies)
        if measure.all_to_all_weight == 1.0 and sample_kwargs.get("sampling", "deterministic") == "deterministic":
            return cls(frequencies, coupling, None, **options)
        sample_kwargs.setdefault("dtype", frequencies.dtype)
        network = measure.sample(frequencies.shape[-1], **sample_kwargs)
        return cls(frequencies, coupling, network.coupling, normalization="sum", **options)

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
        method: Optional[str] = None,
        num_saves: int = 201,
        generator: Optional[torch.Generator] = None,
        **odeint_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate from ``θ0`` over ``t_span``: without noise by torchdiffeq (fixed-step ``"rk4"``
        by default, any torchdiffeq ``method``), with noise ``D > 0`` by ``"euler_maruyama"``
        (default) or ``"heun"`` on Brownian increments from ``generator`` (default seed 0; each
        system of a batch gets its own path).

        Returns the save times ``(T,)`` and the phases ``(T, *θ0.shape)``; the solver steps at
        ``step_size`` regardless of how many times are saved.
        """
        t0, t1 = float(t_span[0]), float(t_span[-1])
        if not t1 > t0:
            raise ValueError(f"t_span must increase, got {tuple(t_span)}")
        t = torch.linspace(t0, t1, num_saves, dtype=theta0.dtype, device=theta0.device)
        if self.noise > 0:
            method = method or "euler_maruyama"
            if method not in SDE_METHODS or odeint_kwargs:
                raise ValueError(f"with noise the method must be one of {SDE_METHODS} (no odeint options), got {method!r}")
            return t, sdeint_additive(self, theta0, t, (2.0 * self.noise) ** 0.5, step_size=step_size, method=method,
                                      generator=generator)
        method = method or "rk4"
        if method in SDE_METHODS:
            raise ValueError(f"{method!r} integrates noise; this network has noise=0 (use an ODE method such as 'rk4')")
        options = {"step_size": step_size} if method in ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams") else {}
        options.update(odeint_kwargs.pop("options", {}))
        return t, odeint(self, theta0, t, method=method, options=options, **odeint_kwargs)
