"""The Vlasov (Fokker–Planck) limit of noisy Kuramoto networks on a digraph measure.

As ``N → ∞`` the phases at position ``x`` have a density ``f(t, x, θ)`` obeying (Kuehn & Xu,
*Vlasov equations on digraph measures*, JDE 339 (2022); with noise, the Fokker–Planck equation of
Sakaguchi 1988 and Strogatz & Mirollo 1991 on a graph limit)

    ∂_t f + ∂_θ[(ω(x) + K Im(Z(t, x) e^{−iθ})) f] = D ∂²_θ f,   Z(t, x) = ∫ z₁(t, y) dη_x(y),

with the circular moments ``z_k(t, x) = ∫ e^{ikθ} f(t, x, θ) dθ`` (``z₀ = 1``, ``z_{−k} = z̄_k``;
``|∫ z₁ dx|`` is the order parameter ``r``). Fourier in ``θ`` turns it into the moment hierarchy

    ż_k = (ikω − Dk²) z_k + (kK/2)(Z z_{k−1} − Z̄ z_{k+1}),   k = 1, …, M,  z_{M+1} = 0,

solved here on the Nyström nodes of :meth:`~lightning_dyn.ensembles.DigraphMeasure.discretize`
(``Z = T z₁`` by the discretised kernel operator, atoms included) by the integrating-factor
(Lawson) fourth-order Runge–Kutta scheme, exact for the stiff diagonal ``−Dk²``. Hubs of unbounded
kernels see strong local fields ``K|Z(x)|``, which are stiff too: the step is cut to keep RK4 stable
there (the graded mesh's first node sits at ``x₁ ≈ (2n)^{−1/(1−2α)}``, so the cost grows like
``x₁^{−α}`` as ``α → ½``). Noise damps mode ``k`` at rate ``Dk²``, so ``M`` of a few tens
suffices unless ``D`` is small against ``K``.
Linearised about incoherence (``z_k = 0``), ``ż₁ = (iω − D) z₁ + (K/2) T z₁``: identical
oscillators' incoherence loses stability when ``K μ_max/2 = D``, i.e. ``K_c = 2D/μ_max``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from ..ensembles.digraph_measures import DigraphMeasure

Profile = Union[float, complex, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class VlasovSolution:
    """``times`` ``(T,)``; ``moments`` ``(T, ..., n, M)`` complex (``z_1 … z_M`` at the nodes)."""

    times: torch.Tensor
    moments: torch.Tensor


class VlasovKuramoto:
    """Noisy Kuramoto's mean-field limit ``f(t, x, θ)`` on a digraph measure, by circular moments.

    Args:
        measure: the digraph measure ``x ↦ η_x``.
        coupling: ``K``, a number or a 1-D tensor (a sweep: the state gets a leading dimension).
        noise: ``D ≥ 0``.
        frequency: ``ω``, a number or a function of ``x`` (frequencies varying across the graph).
        num_points: Nyström nodes in ``x`` (graded towards a kernel singularity at 0).
        num_modes: ``M``, circular moments kept.
    """

    def __init__(self, measure: DigraphMeasure, coupling: Union[float, torch.Tensor], noise: float, *,
                 frequency: Union[float, Callable[[torch.Tensor], torch.Tensor]] = 0.0, num_points: int = 256,
                 num_modes: int = 32, grading: Optional[float] = None) -> None:
        if not noise >= 0:
            raise ValueError(f"noise must be a non-negative intensity D, got {noise!r}")
        if not isinstance(num_modes, int) or num_modes < 1:
            raise ValueError(f"num_modes must be a positive integer, got {num_modes!r}")
        self.measure = measure
        self.noise = float(noise)
        self.num_modes = num_modes
        d = measure.discretize(num_points, grading=grading)
        self.nodes, self.weights = d.nodes, d.weights
        self.operator = d.matrix.to(torch.complex128)
        self.coupling = torch.as_tensor(coupling, dtype=torch.float64)
        if self.coupling.dim() > 1:
            raise ValueError("coupling must be a number or a 1-D tensor of couplings")
        omega = frequency(self.nodes) if callable(frequency) else torch.full_like(self.nodes, float(frequency))
        k = torch.arange(1, num_modes + 1, dtype=torch.float64)
        self._k = k
        self._linear = 1j * k[None, :] * omega.to(torch.float64)[:, None] - self.noise * k[None, :] ** 2  # (n, M)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.coupling.shape)

    def linear_growth_rate(self) -> float:
        """``K μ_max/2 − D`` of the discretised operator for identical oscillators (a number for
        a scalar coupling): the rate at which ``z₁`` leaves (``> 0``) or returns to incoherence."""
        mu = _top_real_eigenvalue(self.operator)
        return (self.coupling * mu / 2 - self.noise).tolist()

    def ott_antonsen(self, z1: Profile) -> torch.Tensor:
        """Moments ``z_k = z₁^k`` (the Ott–Antonsen manifold; wrapped Cauchy densities) from the local
        order parameter ``z₁(x)``: a number, a tensor on the nodes, or a function of ``x``."""
        values = z1(self.nodes) if callable(z1) else torch.as_tensor(z1)
        values = torch.broadcast_to(values.to(torch.complex128), self.nodes.shape)
        if not bool((values.abs() < 1).all()):
            raise ValueError("a density's first circular moment has |z₁| < 1")
        z = values[:, None] ** self._k.to(torch.complex128)[None, :]
        return torch.broadcast_to(z, self.batch_shape + z.shape).clone()

    def field(self, moments: torch.Tensor) -> torch.Tensor:
        """``Z(x) = ∫ z₁ dη_x`` at the nodes."""
        return moments[..., 0] @ self.operator.T

    def order_parameter(self, moments: torch.Tensor, profile: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``r = |∫ ψ(x) z₁(x) dx|`` (``ψ = 1``: the Kuramoto order parameter; a left eigenfunction
        of the kernel: the amplitude of that mode)."""
        w = self.weights if profile is None else self.weights * profile
        return (moments[..., 0] @ w.to(torch.complex128)).abs()

    def density(self, moments: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``f(x, θ) = (1/2π)(1 + 2 Σ_k Re(z̄_k e^{ikθ}))`` at the nodes, shape ``(..., n, len(θ))``."""
        phase = torch.exp(1j * self._k[:, None] * theta.to(torch.float64)[None, :])  # (M, P)
        return (1 + 2 * (moments.conj() @ phase).real) / (2 * math.pi)

    def _nonlinear(self, z: torch.Tensor) -> torch.Tensor:
        Z = self.field(z)[..., None]
        one = torch.ones_like(z[..., :1])
        lower = torch.cat((one, z[..., :-1]), dim=-1)
        upper = torch.cat((z[..., 1:], torch.zeros_like(one)), dim=-1)
        K = self.coupling.reshape(self.batch_shape + (1, 1)).to(torch.complex128)
        return (K * self._k / 2) * (Z * lower - Z.conj() * upper)

    def simulate(self, initial: torch.Tensor, t_span: Sequence[float] = (0.0, 50.0), *, step_size: float = 0.02,
                 num_saves: int = 201) -> VlasovSolution:
        """Integrate the moment hierarchy from ``initial`` (``(..., n, M)`` moments, e.g.
        :meth:`ott_antonsen`) by Lawson's RK4 at ``step_size`` or less: between saves the step is cut
        to ``2/(K·max|Z|·M)`` where local fields are strong (hubs of unbounded kernels).
        Saves ``num_saves`` times."""
        t0, t1 = float(t_span[0]), float(t_span[-1])
        if not t1 > t0:
            raise ValueError(f"t_span must increase, got {tuple(t_span)}")
        expected = self.batch_shape + (self.nodes.numel(), self.num_modes)
        if tuple(initial.shape) != expected:
            raise ValueError(f"initial moments must have shape {expected}, got {tuple(initial.shape)}")
        times = torch.linspace(t0, t1, num_saves, dtype=torch.float64)
        z = initial.to(torch.complex128)
        out = [z]
        K_max = float(self.coupling.abs().max())
        for a, b in zip(times[:-1].tolist(), times[1:].tolist()):
            # the nonlinear part's Jacobian has spectral radius ≈ K·max|Z|·M: keep RK4 inside its
            # stability region (strong local fields at hubs of unbounded kernels are stiff)
            stiffness = K_max * float(self.field(z).abs().max()) * self.num_modes
            h_max = min(step_size, 2.0 / stiffness) if stiffness > 0 else step_size
            n = max(1, math.ceil((b - a) / h_max - 1e-9))
            h = (b - a) / n
            half, full = torch.exp(self._linear * h / 2), torch.exp(self._linear * h)
            for _ in range(n):
                k1 = self._nonlinear(z)
                k2 = self._nonlinear(half * (z + h / 2 * k1))
                k3 = self._nonlinear(half * z + h / 2 * k2)
                k4 = self._nonlinear(full * z + h * half * k3)
                z = full * z + h / 6 * (full * k1 + 2 * half * (k2 + k3) + k4)
            out.append(z)
        return VlasovSolution(times, torch.stack(out))


def _top_real_eigenvalue(matrix: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(matrix).real.max())


def wrapped_cauchy_phases(z1: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One phase per entry of ``z1``, drawn from the wrapped Cauchy law with first moment ``z1``
    (all its moments are ``z1^k``: the finite-network sample of an Ott–Antonsen initial state):
    ``θ = arg z₁ + 2 arctan(((1 − ρ)/(1 + ρ)) tan(π(U − ½)))``, ``ρ = |z₁|``."""
    z1 = z1.to(torch.complex128)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    u = torch.rand(z1.shape, generator=g, dtype=torch.float64)
    rho = z1.abs()
    return torch.angle(z1) + 2 * torch.atan((1 - rho) / (1 + rho) * torch.tan(math.pi * (u - 0.5)))


__all__ = ["VlasovKuramoto", "VlasovSolution", "wrapped_cauchy_phases"]
