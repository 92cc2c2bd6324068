"""The complementarity problem that fixes the central flow's oscillation covariance.

When ``k`` Hessian eigenvalues of gradient descent's loss sit at the stability threshold ``2/η``,
the central flow (:mod:`lightning_dyn.dynamics.central_flow`) needs the covariance ``X`` (``k × k``,
in the basis ``U`` of those eigenvectors) of the oscillation along them. With ``G_ij = ∇_w(u_iᵀ
H(w) u_j)`` and the flow ``dw/dt = −η[∇L + ½ Σ_ij X_ij G_ij]``, the matrix ``M = UᵀHU`` moves as
``dM/dt = −η Y(X)``, ``Y(X) = A + 𝒦(X)``, with ``A_ij = ⟨G_ij, ∇L⟩`` and ``𝒦(X)_ij = ½ Σ_kl
⟨G_ij, G_kl⟩ X_kl``. The curvature may not rise above the threshold (``Y ⪰ 0``), the
covariance is a covariance (``X ⪰ 0``), and a direction oscillates only while it is held at the
threshold (``⟨X, Y⟩ = 0``)::

    X ⪰ 0,   Y = A + 𝒦(X) ⪰ 0,   ⟨X, Y⟩ = 0          (a semidefinite complementarity problem)

(Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding optimization in deep learning with
central flows", arXiv:2410.24206, 2024). ``𝒦`` is a Gram operator (positive semidefinite), so the
problem is the optimality condition of the convex program ``min_{X ⪰ 0} ⟨A, X⟩ + ½⟨X, 𝒦(X)⟩``,
solved here by accelerated projected gradient (FISTA; projection onto the cone by clipping
eigenvalues). ``cone="orthant"`` restricts ``X`` to a diagonal ``x ≥ 0`` — the linear
complementarity problem ``x ≥ 0, a + Mx ≥ 0, xᵀ(a + Mx) = 0`` of directions that do not interact.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Cone = Literal["psd", "orthant"]


def _project(X: np.ndarray, cone: Cone) -> np.ndarray:
    if cone == "orthant":
        return np.maximum(X, 0.0)
    values, vectors = np.linalg.eigh((X + X.T) / 2)
    return (vectors * np.maximum(values, 0.0)) @ vectors.T


def solve_complementarity(A: np.ndarray, K: np.ndarray, *, cone: Cone = "psd", tol: float = 1e-10,
                          max_iter: int = 20000) -> np.ndarray:
    """Solve ``X ∈ cone, Y = A + 𝒦(X) ∈ cone*, ⟨X, Y⟩ = 0`` (module docstring).

    Args:
        A: ``(k, k)`` symmetric for ``cone="psd"``; ``(k,)`` for ``"orthant"``.
        K: the operator ``𝒦`` as a positive semidefinite array: ``(k, k, k, k)`` with
            ``𝒦(X)_ij = Σ_kl K[i, j, k, l] X_kl`` for ``"psd"``; ``(k, k)`` for ``"orthant"``.
        cone: ``"psd"`` (symmetric positive semidefinite ``X``) or ``"orthant"`` (``x ≥ 0``).
        tol: stop when the projected-gradient step moves ``X`` by less than ``tol`` relative.
        max_iter: cap on iterations.

    Returns:
        ``X`` (``(k, k)`` or ``(k,)``, float64).
    """
    if cone not in ("psd", "orthant"):
        raise ValueError(f"cone must be 'psd' or 'orthant', got {cone!r}")
    A = np.asarray(A, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    k = A.shape[0]
    flat = K.reshape(A.size, A.size)
    flat = (flat + flat.T) / 2
    lipschitz = float(np.linalg.eigvalsh(flat).max()) if flat.size else 0.0
    if lipschitz <= 0.0:  # no curvature response: X = 0 unless A points out of the dual cone
        return np.zeros_like(A)

    def gradient(X: np.ndarray) -> np.ndarray:
        return A + (flat @ X.reshape(-1)).reshape(A.shape)

    # start from the one-direction answers (exact when the directions do not interact)
    own_a = np.diag(A) if cone == "psd" else A  # each direction's A, and its 𝒦 on itself
    own_k = np.diag(flat)[:: k + 1] if cone == "psd" else np.diag(flat)
    start = np.maximum(-own_a, 0.0) / np.maximum(own_k, 1e-300)
    X = np.diag(start) if cone == "psd" else start
    Z, t = X.copy(), 1.0
    step = 1.0 / lipschitz
    for _ in range(max_iter):
        X_next = _project(Z - step * gradient(Z), cone)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        Z = X_next + ((t - 1) / t_next) * (X_next - X)
        moved = np.linalg.norm(X_next - X)
        X, t = X_next, t_next
        if moved <= tol * max(np.linalg.norm(X), 1e-300):
            break
    return (X + X.T) / 2 if cone == "psd" else X


def complementarity_residual(A: np.ndarray, K: np.ndarray, X: np.ndarray, *, cone: Cone = "psd") -> float:
    """How far ``X`` is from solving the problem: the largest of ``X``'s and ``Y``'s distance to
    their cone and ``|⟨X, Y⟩|``, relative to ``‖A‖``."""
    A, X = np.asarray(A, float), np.asarray(X, float)
    Y = A + (np.asarray(K, float).reshape(A.size, A.size) @ X.reshape(-1)).reshape(A.shape)
    if cone == "orthant":
        worst = max(-X.min(initial=0.0), -Y.min(initial=0.0), abs(float(X @ Y)))
    else:
        worst = max(-np.linalg.eigvalsh(X).min(initial=0.0), -np.linalg.eigvalsh((Y + Y.T) / 2).min(initial=0.0),
                    abs(float(np.sum(X * Y))))
    return worst / max(float(np.linalg.norm(A)), 1e-300)
