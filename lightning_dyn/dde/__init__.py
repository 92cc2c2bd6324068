"""Delay differential equations: the method of steps as functions (``ddeint``, ``solve_dde``).

``NeuralDDE`` (in ``models``) is the layer that calls this solver; use the functions directly to
solve a DDE whose field is any callable.
"""

from .interpolation import History, SampledHistory, hermite
from .mesh import breakpoint_mesh
from .solver import DDESolution, ddeint, solve_dde
from .tableaus import TABLEAUS, ButcherTableau

__all__ = ["TABLEAUS", "ButcherTableau", "DDESolution", "History", "SampledHistory", "breakpoint_mesh", "ddeint",
           "hermite", "solve_dde"]
