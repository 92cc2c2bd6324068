"""Signal propagation through depth: mean-field theory and the Lyapunov exponent of backpropagation.

A deep network multiplies the backpropagated signal ``δ_l = ∂L/∂h_l`` by one random matrix per
layer, ``δ_{l−1} = D_l W_lᵀ δ_l``; its norm grows or decays geometrically, at a per-layer rate that
is a Lyapunov exponent of backpropagation (Poole et al. 2016; Schoenholz et al. 2017):

    λ_bp = −slope of log‖∂L/∂h_l‖ against l      (positive: the gradient explodes toward the input).

Mean field (Poole et al. 2016, arXiv:1606.05340; Schoenholz et al. 2017, arXiv:1611.01232): for
weights of variance ``σ_w²/N`` and biases of variance ``σ_b²``, the pre-activation variance obeys
``q^l = σ_w² ∫Dz φ(√q^{l−1} z)² + σ_b²`` with fixed point ``q*``, and at ``q*`` the squared norm of
``δ`` is multiplied per layer by ``χ1 = σ_w² ∫Dz φ′(√q* z)²``. Hence ``λ_bp = ½ log χ1`` in the
wide limit: ``χ1 < 1`` ordered (vanishing gradients), ``χ1 > 1`` chaotic (exploding), ``χ1 = 1``
the edge of chaos. For tanh at ``σ_b² = 0.05`` the critical point is ``σ_w² = 1.760955``
(``q* = 0.570048``); for ReLU without bias ``χ1 = σ_w²/2``, critical at ``σ_w² = 2`` (He init).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy.optimize import brentq

Activation = Literal["tanh", "relu", "linear"]
ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "linear")

#: Gauss–Hermite nodes for ∫Dz g(z) = π^{-1/2} Σ wᵢ g(√2 xᵢ): exact for polynomials of degree < 400
_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(200)
_Z, _W = np.sqrt(2.0) * _NODES, _WEIGHTS / np.sqrt(np.pi)


@dataclass
class MeanFieldPoint:
    """The mean-field fixed point of a deep network and its backprop growth.

    Attributes:
        q_star: fixed point of the pre-activation variance (``inf`` when it diverges).
        chi1: ``σ_w² ∫Dz φ′(√q* z)²``, the per-layer factor of ``‖∂L/∂h‖²``.
        backprop_lyapunov: ``½ log χ1``, the per-layer exponent of backpropagation.
    """

    q_star: float
    chi1: float
    backprop_lyapunov: float


def _check(activation: str, sigma_w2: float, sigma_b2: float) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not sigma_w2 > 0 or not sigma_b2 >= 0:
        raise ValueError(f"need sigma_w2 > 0 and sigma_b2 >= 0, got {sigma_w2}, {sigma_b2}")


def _tanh_fixed_point(sigma_w2: float, sigma_b2: float, tol: float = 1e-14, max_iter: int = 100_000) -> float:
    q = 1.0
    for _ in range(max_iter):
        q_next = sigma_w2 * float(_W @ np.tanh(np.sqrt(q) * _Z) ** 2) + sigma_b2
        if abs(q_next - q) <= tol * max(q, 1e-300):
            return q_next
        q = q_next
    return q  # pragma: no cover - the map is a contraction for every σ_w², σ_b² > 0 used in practice


def mean_field(sigma_w2: float, sigma_b2: float = 0.0, activation: Activation = "tanh") -> MeanFieldPoint:
    """``q*``, ``χ1`` and ``½ log χ1`` for a deep network with ``activation`` (module docstring).

    tanh by fixed-point iteration with 200-node Gauss–Hermite quadrature; ReLU and linear in
    closed form (``q* = σ_b²/(1 − σ_w²/2)`` resp. ``σ_b²/(1 − σ_w²)``, ``χ1 = σ_w²/2`` resp. ``σ_w²``).
    """
    _check(activation, sigma_w2, sigma_b2)
    if activation == "tanh":
        q = _tanh_fixed_point(sigma_w2, sigma_b2)
        chi1 = sigma_w2 * float(_W @ (1.0 - np.tanh(np.sqrt(q) * _Z) ** 2) ** 2)
    else:
        gain = sigma_w2 / 2 if activation == "relu" else sigma_w2
        q = sigma_b2 / (1.0 - gain) if gain < 1 else (float("inf") if sigma_b2 > 0 or gain > 1 else 0.0)
        chi1 = gain
    return MeanFieldPoint(q, chi1, 0.5 * float(np.log(chi1)))


def critical_weight_variance(sigma_b2: float, activation: Activation = "tanh") -> float:
    """The ``σ_w²`` on the edge of chaos (``χ1 = 1``) for bias variance ``σ_b²``."""
    _check(activation, 1.0, sigma_b2)
    if activation != "tanh":
        return 2.0 if activation == "relu" else 1.0
    return float(brentq(lambda s: mean_field(s, sigma_b2).chi1 - 1.0, 1.0 + 1e-9, 50.0, xtol=1e-13, rtol=1e-14))


def backprop_lyapunov(signal_norms: Sequence[float]) -> float:
    """``−`` the least-squares slope of ``log‖∂L/∂h_l‖`` against the block index ``l``.

    ``signal_norms[l]`` is the norm at the output of block ``l`` in forward order; blocks with a
    zero or non-finite norm are left out. Positive: the backpropagated signal grows toward the
    input (exploding gradients); ``nan`` with fewer than two usable blocks.
    """
    values = np.asarray(signal_norms, dtype=float)
    depth = np.arange(len(values), dtype=float)
    keep = np.isfinite(values) & (values > 0)
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(depth[keep], np.log(values[keep]), 1)[0]
    return float(-slope)


def local_growth(signal_norms: Sequence[float]) -> np.ndarray:
    """Per-block rates ``log(‖∂L/∂h_{l−1}‖ / ‖∂L/∂h_l‖)`` for ``l = 1 … L−1`` (``nan`` where undefined)."""
    values = np.asarray(signal_norms, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log(values), np.nan)
    return logs[:-1] - logs[1:]
