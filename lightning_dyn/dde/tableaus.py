"""Explicit Runge–Kutta methods for the method of steps: a name → Butcher tableau table.

A tableau ``(c, a, b)`` defines the stages ``k_j = f(t_n + c_j h, y_n + h Σ_{l<j} a_jl k_l)`` and
the step ``y_{n+1} = y_n + h Σ_j b_j k_j`` (Hairer, Nørsett & Wanner, *Solving Ordinary
Differential Equations I*, §II.1). ``order`` is the classical order; the DDE mesh adds the
breakpoints up to that order so a step never straddles a jump in a derivative the method needs.
"""

from __future__ import annotations

from typing import NamedTuple


class ButcherTableau(NamedTuple):
    """Nodes ``c``, the strictly lower-triangular ``a`` (row ``j`` has ``j`` entries), weights ``b``."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int


#: the explicit Runge–Kutta methods offered by ``ddeint`` and ``NeuralDDE``
TABLEAUS: dict[str, ButcherTableau] = {
    "euler": ButcherTableau((0.0,), ((),), (1.0,), 1),
    "midpoint": ButcherTableau((0.0, 0.5), ((), (0.5,)), (0.0, 1.0), 2),
    "rk4": ButcherTableau((0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                          (1 / 6, 1 / 3, 1 / 3, 1 / 6), 4),
}


def tableau(solver: str) -> ButcherTableau:
    """The tableau named ``solver``, or a ``ValueError`` listing the names."""
    if solver not in TABLEAUS:
        raise ValueError(f"solver must be one of {tuple(TABLEAUS)}, got {solver!r}")
    return TABLEAUS[solver]
